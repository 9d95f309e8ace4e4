#include "holdfast/header_list.hpp"

#include <algorithm>
#include <utility>

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

struct SpareStore {
  std::unique_ptr<char[]> data;
  std::size_t capacity = 0;
};

// Set when the thread's stash is gone (the thread is ending): lists freed
// after that free their storage. Trivially destructible, so readable then.
thread_local bool t_spares_gone = false;

struct Spares {
  std::vector<SpareStore> stores;
  std::vector<std::vector<HeaderField>> fields;
  Spares() {
    stores.reserve(kKeepSpares);  // made once per thread: giving back never allocates
    fields.reserve(kKeepSpares);
  }
  ~Spares() { t_spares_gone = true; }
};

// nullptr once the thread's stash is gone.
Spares* spares() noexcept {
  if (t_spares_gone) return nullptr;
  thread_local Spares s;
  return &s;
}
}  // namespace

HeaderList::HeaderList(std::initializer_list<HeaderField> fields) {
  for (const auto& f : fields) add(f.name, f.value);
}

HeaderList::HeaderList(const HeaderList& other) { *this = other; }

HeaderList& HeaderList::operator=(const HeaderList& other) {
  if (this == &other) return *this;
  size_ = 0;
  fields_.clear();
  if (other.size_ > capacity_) grow(other.size_);
  if (other.size_ > 0) std::memcpy(data_.get(), other.data_.get(), other.size_);
  size_ = other.size_;
  fields_.reserve(other.fields_.size());
  const char* from = other.data_.get();
  auto rebase = [&](std::string_view v) {
    return v.empty() ? std::string_view() : std::string_view(data_.get() + (v.data() - from), v.size());
  };
  for (const auto& f : other.fields_) fields_.push_back({rebase(f.name), rebase(f.value)});
  return *this;
}

HeaderList& HeaderList::operator=(HeaderList&& other) noexcept {
  if (this == &other) return *this;
  release_storage();
  take(other);
  return *this;
}

void HeaderList::take(HeaderList& other) noexcept {
  data_ = std::move(other.data_);
  size_ = std::exchange(other.size_, 0);
  capacity_ = std::exchange(other.capacity_, 0);
  fields_ = std::move(other.fields_);
  other.fields_.clear();
}

void HeaderList::release_storage() noexcept {
  if (Spares* s = spares()) {
    if (capacity_ > 0 && capacity_ <= kKeptBytes && s->stores.size() < kKeepSpares)
      s->stores.push_back({std::move(data_), capacity_});
    if (fields_.capacity() > 0 && fields_.capacity() <= kKeptFields && s->fields.size() < kKeepSpares) {
      fields_.clear();
      s->fields.push_back(std::move(fields_));
    }
  }
  data_.reset();
  size_ = capacity_ = 0;
  std::vector<HeaderField>().swap(fields_);
}

void HeaderList::clear() noexcept {
  if (capacity_ > kKeptBytes || fields_.capacity() > kKeptFields) {
    release_storage();
    return;
  }
  size_ = 0;
  fields_.clear();
}

void HeaderList::grow(std::size_t n) {
  // With no store yet no view points anywhere: a spare store may be taken.
  if (capacity_ == 0) {
    Spares* s = spares();
    if (s && !s->stores.empty()) {
      data_ = std::move(s->stores.back().data);
      capacity_ = s->stores.back().capacity;
      s->stores.pop_back();
      if (n <= capacity_) return;
    }
  }
  std::size_t capacity = std::max({capacity_ * 2, size_ + n, kFirstBytes});
  auto grown = std::make_unique_for_overwrite<char[]>(capacity);
  if (size_ > 0) std::memcpy(grown.get(), data_.get(), size_);
  const char* from = data_.get();
  auto rebase = [&](std::string_view& v) {
    if (!v.empty()) v = std::string_view(grown.get() + (v.data() - from), v.size());
  };
  for (auto& f : fields_) {
    rebase(f.name);
    rebase(f.value);
  }
  data_ = std::move(grown);
  capacity_ = capacity;
}

void HeaderList::take_spare_fields() {
  Spares* s = spares();
  if (s && !s->fields.empty()) {
    fields_.swap(s->fields.back());
    s->fields.pop_back();
  } else {
    fields_.reserve(kFirstFields);
  }
}

void HeaderList::add(std::string_view name, std::string_view value) {
  // Room for both first, so that the name's view cannot move under the value.
  if (name.size() + value.size() > capacity_ - size_) grow(name.size() + value.size());
  if (fields_.capacity() == 0) take_spare_fields();
  HeaderField f;
  f.name = append_bytes(name);
  f.value = append_bytes(value);
  fields_.push_back(f);
}

void HeaderList::insert_front(std::string_view name, std::string_view value) {
  add(name, value);
  std::rotate(fields_.begin(), fields_.end() - 1, fields_.end());
}

void HeaderList::set_value(std::size_t i, std::string_view value) { fields_[i].value = append_bytes(value); }

}  // namespace holdfast
