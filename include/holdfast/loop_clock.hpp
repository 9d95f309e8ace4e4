// The steady clock as the data path reads it: once per event callback.
//
// A request touches a dozen deadlines and timestamps (stream timeouts, pool
// idle times, the exchange's start, the idle list); reading the clock for
// each cost more than any other single step of a small request, because in a
// virtual machine every read is a trip through the vDSO's TSC arithmetic.
// nginx (ngx_current_msec) and HAProxy (now_ms) read the time once per loop
// turn for the same reason; here it is once per callback, which libevent 2.1
// lets a program mark without hooks into its loop.
//
// An event callback that leads into the data path opens a LoopClock::Turn
// (Stream's I/O and timer callbacks, the worker's deferred resumes). Inside
// it, now() is the time the callback began: at most one callback's run
// behind the real clock, microseconds, against timeouts and margins of
// milliseconds or more. Outside any Turn (start-up, control and admin paths,
// tests) now() reads the clock itself, so a forgotten Turn costs speed, never
// a stale time. Per thread: each worker is one thread with its own loop.
//
// The outermost Turn's end is also the one point where a callback's stack
// has unwound while the loop has not yet gone on: the thread's owner (the
// worker) registers there the work its callbacks deferred (the next
// pipelined request, deleting finished objects), which then costs no event
// of its own per request. That work runs with the Turn's time: a request it
// starts is stamped when the callback began, microseconds early.
#pragma once

#include <sys/time.h>

#include <chrono>

namespace holdfast {

class LoopClock {
 public:
  using clock = std::chrono::steady_clock;

  static clock::time_point now() noexcept { return depth_ > 0 ? at_ : clock::now(); }

  // Opened at the top of an event callback; nested Turns (a callback that
  // runs another's code directly) keep the outermost time. The outermost
  // one, as it closes, runs the thread's turn-end work; that work runs
  // inside it, so Turns it opens are nested and it does not run again.
  // Nothing may touch the callback's objects after its Turn has closed.
  class Turn {
   public:
    Turn() noexcept {
      if (depth_++ == 0) at_ = clock::now();
    }
    ~Turn() {
      if (depth_ == 1 && end_work_) end_work_(end_arg_);
      --depth_;
    }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;
  };

  // Set by the thread's owner when its loop starts, cleared when it ends.
  using EndWork = void (*)(void*) noexcept;
  static void set_turn_end_work(EndWork work, void* arg) noexcept {
    end_work_ = work;
    end_arg_ = arg;
  }
  // Whether work left now runs when the current Turn ends.
  static bool turn_end_pending() noexcept { return depth_ > 0 && end_work_ != nullptr; }

 private:
  static inline thread_local clock::time_point at_{};
  static inline thread_local int depth_ = 0;
  static inline thread_local EndWork end_work_ = nullptr;
  static inline thread_local void* end_arg_ = nullptr;
};

// A delay as libevent's timers take it; one already past is 0 (at once).
inline timeval to_timeval(std::chrono::steady_clock::duration d) noexcept {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  if (us < 0) us = 0;
  return timeval{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
}

}  // namespace holdfast
