#include "holdfast/health.hpp"

#include <algorithm>

namespace holdfast {

namespace {
std::int64_t ns(HealthClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
}  // namespace

HealthTable::HealthTable(std::size_t slots) : rows_(new Row[slots]), slots_(slots) {}

bool HealthTable::ejected(std::size_t slot, HealthClock::time_point now) const noexcept {
  auto until = rows_[slot].ejected_until.load(std::memory_order_relaxed);
  return until != 0 && ns(now) < until;
}

bool HealthTable::available(std::size_t slot, HealthClock::time_point now) const noexcept {
  return !checked_down(slot) && !ejected(slot, now);
}

HealthChange HealthTable::note_failure(std::size_t slot, const PassivePolicy& policy, HealthClock::time_point now,
                                       Millis* ejected_for) noexcept {
  if (policy.max_fails == 0) return HealthChange::none;
  auto& row = rows_[slot];
  auto until = row.ejected_until.load(std::memory_order_relaxed);
  const auto t = ns(now);
  if (until != 0 && t < until) return HealthChange::none;
  // On probation (ejected before, not yet recovered) one failure suffices.
  const bool probation = until != 0;
  auto fails = row.fails.fetch_add(1, std::memory_order_relaxed) + 1;
  if (!probation && fails < policy.max_fails) return HealthChange::none;
  auto streak = row.streak.load(std::memory_order_relaxed);
  Millis timeout = policy.fail_timeout;
  for (std::uint32_t i = 0; i < streak && timeout < policy.fail_timeout_max; ++i) timeout *= 2;
  timeout = std::min(timeout, policy.fail_timeout_max);
  const auto deadline = t + std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
  if (!row.ejected_until.compare_exchange_strong(until, deadline, std::memory_order_relaxed)) return HealthChange::none;
  row.streak.store(streak + 1, std::memory_order_relaxed);
  row.fails.store(0, std::memory_order_relaxed);
  if (ejected_for) *ejected_for = timeout;
  return HealthChange::ejected;
}

HealthChange HealthTable::note_success(std::size_t slot, HealthClock::time_point now) noexcept {
  auto& row = rows_[slot];
  row.fails.store(0, std::memory_order_relaxed);
  auto until = row.ejected_until.load(std::memory_order_relaxed);
  // Still ejected: the answer belongs to a request sent before the ejection.
  if (until == 0 || ns(now) < until) return HealthChange::none;
  if (!row.ejected_until.compare_exchange_strong(until, 0, std::memory_order_relaxed)) return HealthChange::none;
  row.streak.store(0, std::memory_order_relaxed);
  return HealthChange::recovered;
}

bool HealthTable::set_checked_down(std::size_t slot, bool down) noexcept {
  return rows_[slot].checked_down.exchange(down, std::memory_order_relaxed) != down;
}

}  // namespace holdfast
