// Connection slots under max_conns: the pool's reservation against the
// process-wide count, and the wait queue that hands freed slots out in order
// of arrival, on a real event loop.
#include <doctest/doctest.h>

#include <vector>

#include "loop_helpers.hpp"

using namespace holdfast;
using namespace holdfast::test;

namespace {
// A waiter that takes a slot only while `slots` says one is free, and notes
// what happened to it.
struct TestWaiter final : SlotWaiter {
  WaitQueue* queue = nullptr;
  int* slots = nullptr;
  std::vector<int>* served = nullptr;
  int id = 0;
  bool timed_out = false;
  void on_slot_free() override {
    if (*slots == 0) return;  // keeps its place
    --*slots;
    queue->remove(this);
    served->push_back(id);
  }
  void on_queue_timeout() override { timed_out = true; }
};
}  // namespace

TEST_CASE("pool: reserve holds max_conns over leases and opens; idle connections do not count") {
  WorkerHarness h("    max_conns: 1\n");
  auto& health = h.worker().health();
  const auto slot = h.pool().slot(0);
  REQUIRE(h.pool().reserve(0));
  CHECK(health.active(slot) == 1);
  CHECK_FALSE(h.pool().reserve(0));  // the reservation alone fills the cap
  auto leg = h.open();               // uses the reservation: still one
  CHECK(health.active(slot) == 1);
  CHECK_FALSE(h.pool().reserve(0));
  h.pool().release(std::move(leg.conn), true);
  CHECK(health.active(slot) == 0);   // idle: the slot is free again
  REQUIRE(h.pool().reserve(0));
  auto again = h.pool().acquire(0, true);  // the idle one, under the same slot
  REQUIRE(again);
  CHECK(health.active(slot) == 1);
  h.pool().release(std::move(again), false);
  CHECK(health.active(slot) == 0);
}

TEST_CASE("wait queue: first come first served, bounded, and timed out in order") {
  WorkerHarness h;
  WaitQueue q(h.base(), 2, Millis(100), std::nullopt);
  int slots = 0;
  std::vector<int> served;
  TestWaiter a, b, c;
  for (auto* w : {&a, &b, &c}) {
    w->queue = &q;
    w->slots = &slots;
    w->served = &served;
  }
  a.id = 1, b.id = 2, c.id = 3;
  REQUIRE(q.push(&a));
  REQUIRE(q.push(&b));
  CHECK_FALSE(q.push(&c));  // full
  CHECK(q.push(&a));        // already waiting: keeps its place
  CHECK(q.size() == 2);

  // No slot yet: the head is offered nothing it can take and stays first.
  q.notify();
  settle(h.base());
  CHECK(served.empty());
  CHECK(q.size() == 2);

  slots = 1;
  q.notify();
  CHECK(run_until(h.base(), [&] { return !served.empty(); }));
  CHECK(served == std::vector<int>{1});
  CHECK(q.size() == 1);

  // b waited its 100 ms: timed out and unlinked.
  CHECK(run_until(h.base(), [&] { return b.timed_out; }, 1000ms));
  CHECK(q.empty());
  CHECK_FALSE(a.timed_out);
}
