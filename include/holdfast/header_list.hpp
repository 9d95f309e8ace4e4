// The fields of one head (or trailer section), in order, as views into one
// byte store that the list owns: a head costs one block of bytes and one
// array of views instead of two strings per field, and both are taken from,
// and given back to, a small per-thread stash of spare storage.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <string_view>
#include <vector>

namespace holdfast {

struct HeaderField {
  std::string_view name;   // as received (case kept), so end-to-end fields pass unchanged
  std::string_view value;  // leading/trailing whitespace already removed by the parser
};

// Order and repeats are kept: they are part of what an end-to-end field means.
// The views of a field stay valid until the list is changed, copied over,
// cleared or destroyed (moving the list keeps them valid).
class HeaderList {
 public:
  using const_iterator = std::vector<HeaderField>::const_iterator;

  HeaderList() = default;
  HeaderList(std::initializer_list<HeaderField> fields);
  HeaderList(const HeaderList& other);
  HeaderList(HeaderList&& other) noexcept = default;
  HeaderList& operator=(const HeaderList& other);
  HeaderList& operator=(HeaderList&& other) noexcept;
  ~HeaderList();

  const_iterator begin() const noexcept { return fields_.begin(); }
  const_iterator end() const noexcept { return fields_.end(); }
  std::size_t size() const noexcept { return fields_.size(); }
  bool empty() const noexcept { return fields_.empty(); }
  const HeaderField& operator[](std::size_t i) const noexcept { return fields_[i]; }
  const HeaderField& front() const noexcept { return fields_.front(); }
  const HeaderField& back() const noexcept { return fields_.back(); }

  // `name` and `value` are copied; they must not view this list.
  void add(std::string_view name, std::string_view value);
  void insert_front(std::string_view name, std::string_view value);
  void set_value(std::size_t i, std::string_view value);
  // Empties the list; storage of a usual size is kept for the next head.
  void clear() noexcept;

  // A parser's pieces: a field name arrives in one or more pieces, then its
  // value in zero or more; `new_field` starts the next field.
  void append_name(std::string_view piece, bool new_field);
  void append_value(std::string_view piece);
  // Removes the whitespace around the last field's value (RFC 9110 5.5).
  void trim_last_value() noexcept;

 private:
  // Room for `n` more bytes without moving the store during the appends that
  // follow; when the store must grow, every view is moved to the new one.
  void reserve_bytes(std::size_t n);
  std::string_view append_bytes(std::string_view piece);
  void release_storage() noexcept;

  std::vector<char> bytes_;
  std::vector<HeaderField> fields_;
};

}  // namespace holdfast
