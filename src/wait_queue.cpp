#include "holdfast/wait_queue.hpp"

#include <algorithm>

#include "holdfast/loop_clock.hpp"

namespace holdfast {

namespace {
using SteadyClock = std::chrono::steady_clock;
}  // namespace

WaitQueue::WaitQueue(event_base* base, std::size_t capacity, Millis timeout, std::optional<Millis> recheck)
    : capacity_(capacity), timeout_(timeout), recheck_(recheck) {
  wake_ = event_new(base, -1, 0, &WaitQueue::on_wake, this);
  timer_ = evtimer_new(base, &WaitQueue::on_timer, this);
}

WaitQueue::~WaitQueue() {
  // Waiters belong to their exchanges, which unlink themselves first; what
  // is left here is only unlinked, never called.
  while (!waiters_.empty()) waiters_.remove(waiters_.front());
  event_free(wake_);
  event_free(timer_);
}

bool WaitQueue::push(SlotWaiter* w) {
  if (waiters_.contains(w)) return true;  // keeps its place
  if (waiters_.size() >= capacity_) return false;
  w->queued_at = LoopClock::now();
  const bool was_empty = waiters_.empty();
  waiters_.push_back(w);
  if (was_empty) arm_timer();
  return true;
}

void WaitQueue::notify() {
  if (!waiters_.empty()) event_active(wake_, EV_READ, 0);
}

void WaitQueue::on_wake(evutil_socket_t, short, void* arg) { static_cast<WaitQueue*>(arg)->offer(); }

void WaitQueue::offer() {
  // Each pass either unlinks the head or stops: bounded by the queue's size.
  for (std::size_t n = waiters_.size(); n > 0 && !waiters_.empty(); --n) {
    SlotWaiter* head = waiters_.front();
    head->on_slot_free();
    if (waiters_.front() == head) break;  // still nothing free: it keeps its place
  }
  if (waiters_.empty()) evtimer_del(timer_);
}

void WaitQueue::expire(SteadyClock::time_point now) {
  for (std::size_t n = waiters_.size(); n > 0 && !waiters_.empty(); --n) {
    SlotWaiter* head = waiters_.front();
    if (head->queued_at + timeout_ > now) break;
    waiters_.remove(head);
    head->on_queue_timeout();
  }
}

void WaitQueue::on_timer(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<WaitQueue*>(arg);
  self->expire(LoopClock::now());
  if (self->recheck_) self->offer();
  self->arm_timer();
}

void WaitQueue::arm_timer() {
  if (waiters_.empty()) {
    evtimer_del(timer_);
    return;
  }
  auto wait = std::chrono::duration_cast<std::chrono::microseconds>(waiters_.front()->queued_at + timeout_ -
                                                                    LoopClock::now());
  if (recheck_) wait = std::min<std::chrono::microseconds>(wait, *recheck_);
  timeval tv = to_timeval(wait);
  evtimer_add(timer_, &tv);
}

}  // namespace holdfast
