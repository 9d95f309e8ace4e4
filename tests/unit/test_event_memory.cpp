#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "holdfast/event_memory.hpp"
#include "holdfast/spare_stack.hpp"

using namespace holdfast;
namespace em = holdfast::event_memory;

namespace {
// Runs `f` on a new thread: its cache starts empty.
template <typename F>
void on_fresh_thread(F&& f) {
  std::thread t(std::forward<F>(f));
  t.join();
}
}  // namespace

TEST_CASE("event memory: blocks hold what was asked, aligned, and survive realloc") {
  for (std::size_t size : {1u, 24u, 1000u, 1023u, 1024u, 1025u, 4096u, 65536u + 80u, 131072u, 131073u, 1000000u}) {
    auto* p = static_cast<unsigned char*>(em::allocate(size));
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % 16 == 0);
    std::memset(p, 0xab, size);
    auto* q = static_cast<unsigned char*>(em::reallocate(p, size * 3));
    REQUIRE(q != nullptr);
    for (std::size_t i = 0; i < size; ++i)
      if (q[i] != 0xab) FAIL("byte ", i, " of ", size, " lost in realloc");
    em::release(q);
  }
  em::release(nullptr);
  void* fresh = em::reallocate(nullptr, 100);
  CHECK(fresh != nullptr);
  em::release(fresh);
}

TEST_CASE("event memory: a freed chain is the next one of its size, and the spares are bounded") {
  on_fresh_thread([] {
    if (!kKeepSpares) {
      // Sanitized build: nothing is kept, every block goes back to malloc.
      em::release(em::allocate(4096));
      CHECK(em::spare_blocks() == 0);
      return;
    }
    CHECK(em::spare_blocks() == 0);
    void* a = em::allocate(128 * 1024);
    em::release(a);
    CHECK(em::spare_blocks() == 1);
    CHECK(em::spare_bytes() == 128 * 1024);
    void* b = em::allocate(100 * 1024);  // same class (128 KiB)
    CHECK(b == a);
    CHECK(em::spare_blocks() == 0);
    em::release(b);

    // Blocks well above the largest class, and below the smallest, are never kept.
    em::release(em::allocate(2 * em::kLargestClass));
    em::release(em::allocate(24));
    em::release(em::allocate(em::kSmallestClass - 100));
    CHECK(em::spare_blocks() == 1);
    // A block grown by realloc is still a block of the class it can hold.
    void* c = em::allocate(3000);
    void* d = em::reallocate(c, 5000);
    REQUIRE(d != nullptr);
    em::release(d);
    CHECK(em::spare_blocks() == 2);
    CHECK(em::spare_bytes() >= 128 * 1024 + 4096);

    // A burst of every class leaves kSparesPerClass blocks of each.
    std::vector<void*> burst;
    std::size_t classes = 0;
    for (std::size_t size = em::kSmallestClass; size <= em::kLargestClass; size <<= 1, ++classes)
      for (int i = 0; i < 300; ++i) burst.push_back(em::allocate(size));
    for (void* p : burst) em::release(p);
    CHECK(em::spare_blocks() == classes * em::kSparesPerClass);
    CHECK(em::spare_bytes() == em::kSparesPerClass * (2 * em::kLargestClass - em::kSmallestClass));
  });
}

TEST_CASE("event memory: a block freed on another thread, and a thread's spares freed at its end") {
  void* p = em::allocate(2048);
  REQUIRE(p != nullptr);
  std::size_t seen = 0;
  std::thread t([&] {
    em::release(p);  // kept by that thread, freed when it ends (LeakSanitizer checks the rest)
    seen = em::spare_blocks();
  });
  t.join();
  CHECK(seen == (kKeepSpares ? 1u : 0u));
}
