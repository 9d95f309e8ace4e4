#include "holdfast/event_memory.hpp"

#include <event2/event.h>
#include <malloc.h>

#include <cstdint>
#include <cstdlib>

#include "holdfast/spare_stack.hpp"

namespace holdfast::event_memory {

namespace {

constexpr std::uint32_t kNoClass = UINT32_MAX;
constexpr std::uint32_t kClasses = 8;  // 1 KiB .. 128 KiB
static_assert((kSmallestClass << (kClasses - 1)) == kLargestClass);

// Blocks carry no header: a free (which libevent makes without a size) puts
// a block in the largest class it can hold, by its usable size. Requests of
// 1 KiB to 128 KiB are rounded up to their class, so their blocks come back
// to it; smaller ones (libevent's per-descriptor entries, paid by every idle
// connection) are smaller than every class and cost exactly what malloc makes
// them cost; much larger ones are never kept. A block mapped by malloc has up
// to a page of slack, hence the 8 KiB allowance above the largest class.
constexpr std::size_t kLargestKept = kLargestClass + 8192;
std::uint32_t class_for_request(std::size_t size) noexcept {
  if (size < kSmallestClass || size > kLargestClass) return kNoClass;
  std::uint32_t c = 0;
  for (std::size_t s = kSmallestClass; s < size; s <<= 1) ++c;
  return c;
}
constexpr std::size_t class_size(std::uint32_t c) noexcept { return kSmallestClass << c; }
std::uint32_t class_of_block(void* p) noexcept {
  std::size_t usable = malloc_usable_size(p);
  if (usable < kSmallestClass || usable > kLargestKept) return kNoClass;
  std::uint32_t c = 0;
  while (c + 1 < kClasses && class_size(c + 1) <= usable) ++c;
  return c;
}

// Each class's spares, per thread (the worker's loop thread): a
// SpareStack frees them when the thread ends and keeps none under
// AddressSanitizer.
void free_block(void* p) { std::free(p); }
thread_local SpareStack<void, kSparesPerClass, free_block> t_spares[kClasses];

}  // namespace

void* allocate(std::size_t size) noexcept {
  std::uint32_t c = class_for_request(size);
  if (c == kNoClass) return std::malloc(size ? size : 1);
  if (void* spare = t_spares[c].take()) return spare;
  return std::malloc(class_size(c));
}

void release(void* p) noexcept {
  if (!p) return;
  std::uint32_t c = class_of_block(p);
  if (c != kNoClass) t_spares[c].give(p);
  else std::free(p);
}

void* reallocate(void* p, std::size_t size) noexcept {
  // What libevent grows by realloc is its arrays (the per-descriptor map,
  // epoll's event list, the timer heap), which glibc grows in place or
  // remaps: rounded to classes, every size they pass through would stay
  // behind as a spare. Every block is a plain malloc block, so realloc may
  // take any of them.
  return std::realloc(p, size ? size : 1);
}

std::size_t spare_blocks() noexcept {
  std::size_t n = 0;
  for (std::uint32_t c = 0; c < kClasses; ++c) n += t_spares[c].size();
  return n;
}

std::size_t spare_bytes() noexcept {
  std::size_t n = 0;
  for (std::uint32_t c = 0; c < kClasses; ++c) n += t_spares[c].size() * class_size(c);
  return n;
}

void install() noexcept { event_set_mem_functions(allocate, reallocate, release); }

}  // namespace holdfast::event_memory
