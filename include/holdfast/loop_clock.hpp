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
#pragma once

#include <sys/time.h>

#include <chrono>

namespace holdfast {

class LoopClock {
 public:
  using clock = std::chrono::steady_clock;

  static clock::time_point now() noexcept { return depth_ > 0 ? at_ : clock::now(); }

  // Opened at the top of an event callback; nested Turns (a callback that
  // runs another's code directly) keep the outermost time.
  class Turn {
   public:
    Turn() noexcept {
      if (depth_++ == 0) at_ = clock::now();
    }
    ~Turn() { --depth_; }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;
  };

 private:
  static inline thread_local clock::time_point at_{};
  static inline thread_local int depth_ = 0;
};

// A delay as libevent's timers take it; one already past is 0 (at once).
inline timeval to_timeval(std::chrono::steady_clock::duration d) noexcept {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  if (us < 0) us = 0;
  return timeval{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
}

}  // namespace holdfast
