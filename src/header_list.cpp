#include "holdfast/header_list.hpp"

#include <algorithm>
#include <cstring>

namespace holdfast {

namespace {
// Storage of a usual size outlives its list in a per-thread stash (workers
// share nothing), so that the next head on this thread takes it instead of
// calling malloc. Under AddressSanitizer nothing is kept, so that a use after
// free is still caught.
#if defined(__SANITIZE_ADDRESS__)
constexpr std::size_t kKeepSpares = 0;
#else
constexpr std::size_t kKeepSpares = 32;
#endif
constexpr std::size_t kFirstBytes = 512;
constexpr std::size_t kKeptBytes = 16 * 1024;
constexpr std::size_t kFirstFields = 16;
constexpr std::size_t kKeptFields = 256;

struct Spares {
  std::vector<std::vector<char>> bytes;
  std::vector<std::vector<HeaderField>> fields;
  bool closed = false;  // the thread is ending: nothing more is kept
  ~Spares() { closed = true; }
};

Spares& spares() noexcept {
  thread_local Spares s;
  return s;
}

template <typename V>
void take_spare(std::vector<V>& into, std::vector<std::vector<V>>& from, std::size_t first) {
  if (!from.empty()) {
    into.swap(from.back());
    from.pop_back();
  } else {
    into.reserve(first);
  }
}

template <typename V>
void give_spare(std::vector<V>& v, std::vector<std::vector<V>>& to, std::size_t kept) noexcept {
  if (spares().closed || v.capacity() == 0 || v.capacity() > kept || to.size() >= kKeepSpares) return;
  if (to.capacity() == to.size()) return;  // never allocate while giving back
  v.clear();
  to.emplace_back(std::move(v));
}

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}
}  // namespace

HeaderList::HeaderList(std::initializer_list<HeaderField> fields) {
  for (const auto& f : fields) add(f.name, f.value);
}

HeaderList::HeaderList(const HeaderList& other) { *this = other; }

HeaderList& HeaderList::operator=(const HeaderList& other) {
  if (this == &other) return *this;
  bytes_.clear();
  fields_.clear();
  reserve_bytes(other.bytes_.size());
  bytes_.insert(bytes_.end(), other.bytes_.begin(), other.bytes_.end());
  fields_.reserve(other.fields_.size());
  const char* from = other.bytes_.data();
  auto rebase = [&](std::string_view v) {
    return v.empty() ? std::string_view() : std::string_view(bytes_.data() + (v.data() - from), v.size());
  };
  for (const auto& f : other.fields_) fields_.push_back({rebase(f.name), rebase(f.value)});
  return *this;
}

HeaderList& HeaderList::operator=(HeaderList&& other) noexcept {
  if (this == &other) return *this;
  release_storage();
  bytes_ = std::move(other.bytes_);
  fields_ = std::move(other.fields_);
  other.bytes_.clear();
  other.fields_.clear();
  return *this;
}

HeaderList::~HeaderList() { release_storage(); }

void HeaderList::release_storage() noexcept {
  auto& s = spares();
  if (!s.closed && kKeepSpares > 0 && s.bytes.capacity() == 0) {
    // The stash's own arrays are made once per thread.
    try {
      s.bytes.reserve(kKeepSpares);
      s.fields.reserve(kKeepSpares);
    } catch (...) {
    }
  }
  give_spare(bytes_, s.bytes, kKeptBytes);
  give_spare(fields_, s.fields, kKeptFields);
  std::vector<char>().swap(bytes_);
  std::vector<HeaderField>().swap(fields_);
}

void HeaderList::clear() noexcept {
  if (bytes_.capacity() > kKeptBytes || fields_.capacity() > kKeptFields) {
    release_storage();
    return;
  }
  bytes_.clear();
  fields_.clear();
}

void HeaderList::reserve_bytes(std::size_t n) {
  // With no store yet no view points anywhere: a spare store may be taken.
  if (bytes_.capacity() == 0) take_spare(bytes_, spares().bytes, kFirstBytes);
  if (bytes_.size() + n <= bytes_.capacity()) return;
  std::vector<char> grown;
  grown.reserve(std::max({bytes_.capacity() * 2, bytes_.size() + n, kFirstBytes}));
  grown.insert(grown.end(), bytes_.begin(), bytes_.end());
  const char* from = bytes_.data();
  auto rebase = [&](std::string_view& v) {
    if (!v.empty()) v = std::string_view(grown.data() + (v.data() - from), v.size());
  };
  for (auto& f : fields_) {
    rebase(f.name);
    rebase(f.value);
  }
  bytes_.swap(grown);
}

std::string_view HeaderList::append_bytes(std::string_view piece) {
  // The caller reserved the room: the store does not move here.
  std::size_t at = bytes_.size();
  bytes_.insert(bytes_.end(), piece.begin(), piece.end());
  return std::string_view(bytes_.data() + at, piece.size());
}

void HeaderList::add(std::string_view name, std::string_view value) {
  reserve_bytes(name.size() + value.size());
  if (fields_.capacity() == 0) take_spare(fields_, spares().fields, kFirstFields);
  HeaderField f;
  f.name = append_bytes(name);
  f.value = append_bytes(value);
  fields_.push_back(f);
}

void HeaderList::insert_front(std::string_view name, std::string_view value) {
  add(name, value);
  std::rotate(fields_.begin(), fields_.end() - 1, fields_.end());
}

void HeaderList::set_value(std::size_t i, std::string_view value) {
  reserve_bytes(value.size());
  fields_[i].value = append_bytes(value);
}

void HeaderList::append_name(std::string_view piece, bool new_field) {
  reserve_bytes(piece.size());
  if (new_field || fields_.empty()) {
    if (fields_.capacity() == 0) take_spare(fields_, spares().fields, kFirstFields);
    fields_.push_back({});
  }
  auto& name = fields_.back().name;
  auto added = append_bytes(piece);
  // Pieces of one name are appended one after the other: they join.
  name = name.empty() ? added : std::string_view(name.data(), name.size() + added.size());
}

void HeaderList::append_value(std::string_view piece) {
  reserve_bytes(piece.size());
  auto& value = fields_.back().value;
  auto added = append_bytes(piece);
  value = value.empty() ? added : std::string_view(value.data(), value.size() + added.size());
}

void HeaderList::trim_last_value() noexcept {
  if (!fields_.empty()) fields_.back().value = trim_ows(fields_.back().value);
}

}  // namespace holdfast
