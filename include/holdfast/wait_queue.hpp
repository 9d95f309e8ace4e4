// Requests waiting for a connection slot of one upstream group on one worker,
// when every eligible server of the group is at `max_conns` (Envoy's
// connection pool keeps its pending requests the same way). First come,
// first served: only the oldest waiter is offered a freed slot, and a
// newcomer joins behind those already waiting.
//
// All waiters of a queue share one timeout, so the order of arrival is also
// the order of deadlines: one timer serves them all (as the worker's idle
// client list does). A slot freed on this worker wakes the queue on the next
// loop turn (notify(), never on the stack that freed it); a slot freed on
// another worker is noticed by a recheck every `recheck` while anyone waits,
// as workers share no event loop.
//
// Ownership: owned by the UpstreamPool of its group. It does not own its
// waiters: a waiter removes itself (remove() is idempotent) before it goes
// away, and the queue calls a waiter only while it is linked.
#pragma once

#include <event2/event.h>

#include <chrono>
#include <optional>

#include "holdfast/duration.hpp"
#include "holdfast/intrusive_list.hpp"

namespace holdfast {

// How often a non-empty queue looks for slots freed by other workers.
inline constexpr Millis kQueueRecheck{5};

class SlotWaiter {
 public:
  virtual ~SlotWaiter() = default;
  // A slot may be free: try to take one. A waiter that took one (or ended)
  // has removed itself; one still linked keeps its place at the head.
  virtual void on_slot_free() = 0;
  // Waited `timeout`; already unlinked when called.
  virtual void on_queue_timeout() = 0;

  ListLink<SlotWaiter> queue_link;
  std::chrono::steady_clock::time_point queued_at{};
};

class WaitQueue {
 public:
  // `capacity` 0: nobody waits (push always refuses). `recheck`: how often a
  // non-empty queue looks for slots freed elsewhere; nullopt when nothing
  // else frees them (one worker).
  WaitQueue(event_base* base, std::size_t capacity, Millis timeout, std::optional<Millis> recheck);
  ~WaitQueue();
  WaitQueue(const WaitQueue&) = delete;
  WaitQueue& operator=(const WaitQueue&) = delete;

  // Links `w` at the tail. false when the queue is full (the caller answers 503).
  bool push(SlotWaiter* w);
  void remove(SlotWaiter* w) noexcept { waiters_.remove(w); }
  bool contains(const SlotWaiter* w) const noexcept { return waiters_.contains(w); }
  bool empty() const noexcept { return waiters_.empty(); }
  std::size_t size() const noexcept { return waiters_.size(); }
  // A slot of the group was freed: offer it to the head on the next loop turn.
  void notify();

 private:
  static void on_wake(evutil_socket_t, short, void* arg);
  static void on_timer(evutil_socket_t, short, void* arg);
  // Offers slots to waiters from the head while they take them.
  void offer();
  void expire(std::chrono::steady_clock::time_point now);
  void arm_timer();

  IntrusiveList<SlotWaiter, &SlotWaiter::queue_link> waiters_;
  std::size_t capacity_;
  Millis timeout_;
  std::optional<Millis> recheck_;
  event* wake_ = nullptr;
  event* timer_ = nullptr;
};

}  // namespace holdfast
