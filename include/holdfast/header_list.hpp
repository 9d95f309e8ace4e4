// The fields of one head (or trailer section), in order, as views into one
// byte store that the list owns: a head costs one block of bytes and one
// array of views instead of two strings per field, and both are taken from,
// and given back to, a small per-thread stash of spare storage.
#pragma once

#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string_view>
#include <vector>

namespace holdfast {

// `s` without the optional whitespace (spaces and horizontal tabs, RFC 9110
// 5.6.3 OWS) at either end; inner whitespace is kept. Lives here, the lowest
// header of the field code, so the parser's list and the field rules share it.
inline std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

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
  HeaderList(HeaderList&& other) noexcept { take(other); }
  HeaderList& operator=(const HeaderList& other);
  HeaderList& operator=(HeaderList&& other) noexcept;
  ~HeaderList() {
    if (capacity_ != 0 || fields_.capacity() != 0) release_storage();
  }

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
  // value in zero or more; `new_field` starts the next field. Inline: they
  // run for every field of every head.
  void append_name(std::string_view piece, bool new_field) { adopt_name(append_bytes(piece), new_field); }
  void append_value(std::string_view piece) { adopt_value(append_bytes(piece)); }
  // A head parsed in place: its bytes are copied into the store as they
  // arrive (stage), the parser runs over that copy, and the fields become
  // views of it (adopt_*), so that a field line keeps its own bytes, name,
  // colon and value in one range. `unstage` gives back bytes staged past the
  // head's end. The store must not be changed otherwise while a head is staged.
  char* stage(std::size_t n) {
    if (n > capacity_ - size_) grow(n);
    char* at = data_.get() + size_;
    size_ += n;
    return at;
  }
  void unstage(std::size_t n) noexcept { size_ -= n; }
  // Pieces that already lie in the store (staged, or just appended), in order.
  void adopt_name(std::string_view piece, bool new_field) {
    if (new_field || fields_.empty()) start_field();
    auto& name = fields_.back().name;
    name = join(name, piece);
  }
  void adopt_value(std::string_view piece) {
    auto& value = fields_.back().value;
    value = join(value, piece);
  }
  // Empties the list of fields, keeping the staged bytes.
  void clear_fields() noexcept { fields_.clear(); }
  // Removes the whitespace around every field's value (RFC 9110 5.5).
  void trim_values() noexcept {
    for (auto& f : fields_) f.value = trim_ows(f.value);
  }

 private:
  // Copies `piece` to the end of the store. When the store must grow, every
  // view is moved to the new one before the old one is freed.
  std::string_view append_bytes(std::string_view piece) {
    if (piece.size() > capacity_ - size_) grow(piece.size());
    char* at = data_.get() + size_;
    if (!piece.empty()) std::memcpy(at, piece.data(), piece.size());
    size_ += piece.size();
    return std::string_view(at, piece.size());
  }
  // Pieces of one name or value are appended one right after the other.
  static std::string_view join(std::string_view so_far, std::string_view added) noexcept {
    return so_far.empty() ? added : std::string_view(so_far.data(), so_far.size() + added.size());
  }
  void start_field() {
    if (fields_.capacity() == 0) take_spare_fields();
    fields_.emplace_back();
  }
  void grow(std::size_t n);
  void take_spare_fields();
  void take(HeaderList& other) noexcept;
  void release_storage() noexcept;

  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  std::vector<HeaderField> fields_;
};

}  // namespace holdfast
