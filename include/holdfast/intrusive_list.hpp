// A doubly linked list threaded through its elements, so that membership
// costs two pointers per element and no allocation. The list does not own
// its elements.
#pragma once

#include <cstddef>

namespace holdfast {

template <typename T>
struct ListLink {
  T* prev = nullptr;
  T* next = nullptr;
};

template <typename T, ListLink<T> T::*Link>
class IntrusiveList {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept { return size_; }
  T* front() const noexcept { return head_; }
  bool contains(const T* x) const noexcept { return (x->*Link).prev != nullptr || head_ == x; }

  void push_back(T* x) noexcept {
    auto& l = x->*Link;
    l.prev = tail_;
    l.next = nullptr;
    if (tail_) (tail_->*Link).next = x;
    else head_ = x;
    tail_ = x;
    ++size_;
  }

  void remove(T* x) noexcept {
    if (!contains(x)) return;
    auto& l = x->*Link;
    if (l.prev) (l.prev->*Link).next = l.next;
    else head_ = l.next;
    if (l.next) (l.next->*Link).prev = l.prev;
    else tail_ = l.prev;
    l.prev = l.next = nullptr;
    --size_;
  }

  // Calls f on each element; f may remove the element it is given.
  template <typename F>
  void for_each(F&& f) {
    for (T* x = head_; x;) {
      T* next = (x->*Link).next;
      f(x);
      x = next;
    }
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace holdfast
