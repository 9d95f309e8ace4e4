// When a worker gives the heap it freed after a burst back to the system.
//
// A burst of concurrent requests allocates per-request state (exchanges,
// header storage, buffer chains, the events of connections not yet parked)
// between the objects that outlive it (idle client connections, pooled
// upstream connections). Once freed, that memory stays resident: glibc
// returns only the top of a heap by itself, never whole free pages in its
// middle. malloc_trim() returns those too (madvise), as HAProxy does from its
// pool garbage collection. It walks and locks every arena, so a worker calls
// it only once it has gone quiet after a burst: at least kBurst client
// connections were active at once, then at most kQuietAtMost were for kQuiet
// (tunnels do not count: they stay open whatever the traffic); and at most
// once per kMinInterval. Never on the request path; pages it returned are
// faulted in again by the next burst.
//
// Pure decision logic with the clock passed in (the Worker owns the timer).
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>

namespace holdfast {

class HeapTrimPolicy {
 public:
  using Millis = std::chrono::milliseconds;
  using TimePoint = std::chrono::steady_clock::time_point;

  // Active connections at once that make a trim worth its walk: below it,
  // what a burst leaves behind is a few pages.
  static constexpr std::size_t kBurst = 64;
  // Quiet: this few active or fewer (light traffic goes on after a burst).
  static constexpr std::size_t kQuietAtMost = 4;
  static constexpr Millis kQuiet{250};
  static constexpr Millis kMinInterval{10'000};

  // The worker's count of active client connections is now `active`; cheap,
  // called on every change. True when the worker has just gone quiet after a
  // burst: the caller runs check() kQuiet from now, instead of when it
  // asked before (busy again since then, it was not quiet for kQuiet).
  bool note_active(std::size_t active) noexcept {
    if (active > peak_) peak_ = active;
    if (active > kQuietAtMost) {
      busy_since_armed_ = armed_;
      return false;
    }
    if (peak_ < kBurst || (armed_ && !busy_since_armed_)) return false;
    armed_ = true;
    busy_since_armed_ = false;
    return true;
  }

  // The check asked for by note_active() (or by a wait from check()): zero
  // when a trim is due now; a wait (run check() again then) when the last
  // trim is too recent; nullopt when none is due: busy now (the next quiet
  // asks again), or no burst since the last trim.
  std::optional<Millis> check(std::size_t active, TimePoint now) noexcept {
    armed_ = false;
    if (peak_ < kBurst || active > kQuietAtMost) return std::nullopt;
    if (last_ && now - *last_ < kMinInterval) {
      armed_ = true;
      busy_since_armed_ = false;
      return std::chrono::duration_cast<Millis>(kMinInterval - (now - *last_));
    }
    return Millis{0};
  }

  // A trim ran at `now`: the next one waits for another burst.
  void trimmed(TimePoint now) noexcept {
    peak_ = 0;
    last_ = now;
  }

  std::size_t peak() const noexcept { return peak_; }

 private:
  std::size_t peak_ = 0;  // most active at once since the last trim
  bool armed_ = false;             // a check is due (the caller's timer runs)
  bool busy_since_armed_ = false;  // more than kQuietAtMost active since it was armed
  std::optional<TimePoint> last_;
};

// Returns the free pages of every malloc arena to the system (malloc_trim).
// A no-op under AddressSanitizer, whose allocator is not glibc's.
void trim_heap() noexcept;

}  // namespace holdfast
