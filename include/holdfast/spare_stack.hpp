// A bounded per-thread stack of spare objects of one kind, given back by
// their last user and taken by the next one instead of allocating. Each user
// (stream buffers, stream events) keeps one as a thread_local; the stack owns
// what it holds and frees it with Free when the thread ends. Holds nothing
// under AddressSanitizer, so that an object used after it was given up is
// still caught.
#pragma once

#include <cstddef>

namespace holdfast {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kKeepSpares = false;
#else
inline constexpr bool kKeepSpares = true;
#endif

template <typename T, std::size_t N, void (*Free)(T*)>
class SpareStack {
 public:
  static constexpr std::size_t kCapacity = kKeepSpares ? N : 0;

  SpareStack() = default;
  SpareStack(const SpareStack&) = delete;
  SpareStack& operator=(const SpareStack&) = delete;
  ~SpareStack() {
    while (count_ > 0) Free(slots_[--count_]);
    closed_ = true;
  }

  std::size_t size() const noexcept { return count_; }
  // A spare, or null when there is none.
  T* take() noexcept { return count_ > 0 ? slots_[--count_] : nullptr; }
  // Keeps `x`, or frees it when full or once the thread is ending.
  void give(T* x) noexcept {
    if (!closed_ && count_ < kCapacity) slots_[count_++] = x;
    else Free(x);
  }

 private:
  T* slots_[kCapacity > 0 ? kCapacity : 1];
  std::size_t count_ = 0;
  bool closed_ = false;
};

}  // namespace holdfast
