#include <doctest/doctest.h>

#include "holdfast/idle_estimate.hpp"

using namespace holdfast;
using namespace std::chrono_literals;

namespace {
// A fake clock: any fixed origin will do, the estimate only compares times.
const IdleCloseEstimate::TimePoint t0{std::chrono::hours(1)};
constexpr Millis kCeiling{50'000};
}  // namespace

TEST_CASE("an observed idle close is rounded down to the backend's whole-second timeout") {
  // Immediate FIN, FIN 250 ms late, FIN 900 ms late: all say 1 s.
  CHECK(IdleCloseEstimate::round_down(1001ms) == 1000ms);
  CHECK(IdleCloseEstimate::round_down(1250ms) == 1000ms);
  CHECK(IdleCloseEstimate::round_down(1900ms) == 1000ms);
  CHECK(IdleCloseEstimate::round_down(5003ms) == 5000ms);
  // A timer that fires a few milliseconds early still counts as its second.
  CHECK(IdleCloseEstimate::round_down(1990ms) == 2000ms);
  // Below a second, 100 ms steps.
  CHECK(IdleCloseEstimate::round_down(550ms) == 500ms);
  CHECK(IdleCloseEstimate::round_down(10ms) == 0ms);
}

TEST_CASE("nothing observed means nothing known") {
  IdleCloseEstimate e;
  CHECK_FALSE(e.value(t0, kCeiling).has_value());
}

TEST_CASE("a close within the first second is not taken for an idle timeout") {
  IdleCloseEstimate e;
  CHECK_FALSE(e.observe(300ms, t0));
  CHECK_FALSE(e.observe(970ms, t0));
  CHECK_FALSE(e.value(t0, kCeiling).has_value());
  CHECK(e.observe(985ms, t0));  // a 1 s timer that fired a little early
  CHECK(e.value(t0, kCeiling) == 1000ms);
}

TEST_CASE("the shortest recent close wins, longer ones change nothing") {
  IdleCloseEstimate e;
  CHECK(e.observe(2250ms, t0));
  CHECK(e.value(t0, kCeiling) == 2000ms);
  CHECK_FALSE(e.observe(5100ms, t0 + 1s));
  CHECK(e.value(t0 + 1s, kCeiling) == 2000ms);
  // The same value again confirms it without counting as news.
  CHECK_FALSE(e.observe(2010ms, t0 + 2s));
  CHECK(e.observe(1020ms, t0 + 3s));
  CHECK(e.value(t0 + 3s, kCeiling) == 1000ms);
}

TEST_CASE("the estimate grows back slowly without new closes, then is forgotten") {
  IdleCloseEstimate e;
  e.observe(4100ms, t0);
  const auto step = IdleCloseEstimate::kGrowthInterval;
  CHECK(e.value(t0 + step - 1ms, kCeiling) == 4000ms);
  CHECK(e.value(t0 + step, kCeiling) == 5000ms);
  CHECK(e.value(t0 + 2 * step, kCeiling) == 6250ms);
  // An early close (a restart) after 1.5 s: pooled normally again within
  // about half an hour, not never.
  IdleCloseEstimate r;
  r.observe(1500ms, t0);
  CHECK(r.value(t0, kCeiling) == 1000ms);
  CHECK(r.value(t0 + step, kCeiling) == 2000ms);
  CHECK(r.value(t0 + 14 * step, kCeiling).has_value());
  CHECK_FALSE(r.value(t0 + 15 * step, kCeiling).has_value());
  // Never above the ceiling: at or past it the estimate no longer applies.
  CHECK_FALSE(e.value(t0, 4000ms).has_value());
  CHECK(e.value(t0, 4001ms) == 4000ms);
}

TEST_CASE("a close confirming the estimate restarts its growth clock") {
  IdleCloseEstimate e;
  const auto step = IdleCloseEstimate::kGrowthInterval;
  e.observe(2100ms, t0);
  // Grown to 3 s by now; the backend shows 2 s again.
  CHECK(e.value(t0 + step, kCeiling) == 3000ms);
  CHECK(e.observe(2200ms, t0 + step));
  CHECK(e.value(t0 + step + step / 2, kCeiling) == 2000ms);
}

TEST_CASE("growth is bounded however long nothing happens") {
  IdleCloseEstimate e;
  e.observe(1000ms, t0);
  auto v = e.value(t0 + std::chrono::hours(24 * 365), Millis::max());
  REQUIRE(v.has_value());
  CHECK(*v > 1000ms);
}
