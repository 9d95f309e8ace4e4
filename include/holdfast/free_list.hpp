// Per-thread recycling of the objects made and destroyed once per request
// (an Exchange, a client connection's parser): a class routes its operator
// new/delete here, and a worker then reuses the memory of the last ones it
// freed instead of calling malloc and free for each request.
//
// Each worker thread has its own list, so nothing is shared or locked; an
// object freed on another thread (at shutdown) goes to that thread's list.
// The list holds at most kKeep blocks, freed when the thread ends. Under
// AddressSanitizer nothing is kept, so that a use after free is still caught.
#pragma once

#include <cstddef>
#include <new>

namespace holdfast {

template <typename T>
class FreeList {
 public:
#if defined(__SANITIZE_ADDRESS__)
  static constexpr std::size_t kKeep = 0;
#else
  static constexpr std::size_t kKeep = 64;
#endif

  static void* allocate(std::size_t n) {
    List& l = list();
    if (n == sizeof(T) && l.head) {
      Node* node = l.head;
      l.head = node->next;
      --l.count;
      return node;
    }
    return ::operator new(n);
  }

  static void release(void* p, std::size_t n) noexcept {
    List& l = list();
    if (n == sizeof(T) && l.count < kKeep) {
      auto* node = static_cast<Node*>(p);
      node->next = l.head;
      l.head = node;
      ++l.count;
      return;
    }
    ::operator delete(p);
  }

 private:
  struct Node {
    Node* next;
  };
  static_assert(sizeof(T) >= sizeof(Node));
  struct List {
    Node* head = nullptr;
    std::size_t count = 0;
    ~List() {
      while (head) {
        Node* next = head->next;
        ::operator delete(head);
        head = next;
      }
      count = kKeep;  // whatever is freed later on this thread goes straight back
    }
  };
  static List& list() noexcept {
    thread_local List l;
    return l;
  }
};

}  // namespace holdfast
