// Process-wide health of every upstream server: one row of atomics per
// metrics slot (MetricsLayout), written by any worker (passive results, the
// connection counts of its pool) and by the health checker thread, read by
// every balancer pick. Nothing here takes a lock; where two threads race to
// the same state change, a compare-and-swap lets exactly one of them win, and
// only the winner logs and counts it, so a change is reported once.
//
// Ownership: built and owned by the Server (SharedState::health); it outlives
// the workers and the checker.
//
// Passive ejection (nginx's max_fails / fail_timeout), per server:
//
//   state       event                          next state
//   in          failure, fails < max_fails     in (fails + 1)
//   in          failure, fails = max_fails     ejected for fail_timeout * 2^streak (capped), streak + 1
//   ejected     anything before the deadline   ejected (late results of older requests are ignored)
//   probation   (deadline passed) failure      ejected again, doubled
//   probation   success                        in, streak 0            "recovered"
//   any         success                        fails 0
//
// Active checks add one flag per server (down after `fall` failed checks, up
// after `rise` passed ones); a server takes traffic only when neither says out.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

#include "holdfast/duration.hpp"

namespace holdfast {

using HealthClock = std::chrono::steady_clock;

struct PassivePolicy {
  unsigned max_fails = 1;    // 0: never eject
  Millis fail_timeout{10'000};
  Millis fail_timeout_max{300'000};
};

enum class HealthChange { none, ejected, recovered };

class HealthTable {
 public:
  explicit HealthTable(std::size_t slots);
  HealthTable(const HealthTable&) = delete;
  HealthTable& operator=(const HealthTable&) = delete;

  // May take traffic at `now`: not ejected and not down by active checks.
  bool available(std::size_t slot, HealthClock::time_point now) const noexcept;
  bool ejected(std::size_t slot, HealthClock::time_point now) const noexcept;
  bool checked_down(std::size_t slot) const noexcept { return rows_[slot].checked_down.load(std::memory_order_relaxed); }

  // A failure counted against the server (connect errors, timeouts; 5xx when
  // configured). On `ejected`, `*ejected_for` says for how long.
  HealthChange note_failure(std::size_t slot, const PassivePolicy& policy, HealthClock::time_point now,
                            Millis* ejected_for = nullptr) noexcept;
  // The server answered.
  HealthChange note_success(std::size_t slot, HealthClock::time_point now) noexcept;

  // A slot handed to another server: its failures, ejection and check
  // verdict start afresh (its active count is the pools' and stays).
  void reset(std::size_t slot) noexcept {
    auto& r = rows_[slot];
    r.fails.store(0, std::memory_order_relaxed);
    r.streak.store(0, std::memory_order_relaxed);
    r.ejected_until.store(0, std::memory_order_relaxed);
    r.checked_down.store(false, std::memory_order_relaxed);
  }

  // The health checker's verdict. Returns true when it changed the state.
  bool set_checked_down(std::size_t slot, bool down) noexcept;

  // Active (leased or connecting) upstream connections over all workers:
  // each pool adds the change of its own count.
  void add_active(std::size_t slot, std::int64_t delta) noexcept {
    rows_[slot].active.fetch_add(delta, std::memory_order_relaxed);
  }
  std::int64_t active(std::size_t slot) const noexcept { return rows_[slot].active.load(std::memory_order_relaxed); }
  // One more active connection, only while fewer than `cap` are (0: no cap).
  // A compare-and-swap, so that workers picking the same server at once
  // cannot together pass the cap; false: the server is at its cap.
  bool try_add_active(std::size_t slot, std::int64_t cap) noexcept {
    auto& a = rows_[slot].active;
    if (cap <= 0) {
      a.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    auto cur = a.load(std::memory_order_relaxed);
    while (cur < cap)
      if (a.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed)) return true;
    return false;
  }

 private:
  struct Row {
    std::atomic<std::uint32_t> fails{0};          // consecutive failures while in
    std::atomic<std::uint32_t> streak{0};         // ejections since the last recovery
    std::atomic<std::int64_t> ejected_until{0};   // steady-clock ns; 0: not ejected since recovery
    std::atomic<bool> checked_down{false};
    std::atomic<std::int64_t> active{0};
  };
  std::unique_ptr<Row[]> rows_;
  std::size_t slots_;
};

}  // namespace holdfast
