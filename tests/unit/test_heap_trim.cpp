#include <doctest/doctest.h>

#include "holdfast/heap_trim.hpp"

using namespace holdfast;
using namespace std::chrono_literals;

namespace {
// A fake clock: the policy only compares times.
const HeapTrimPolicy::TimePoint t0{std::chrono::hours(1)};
using P = HeapTrimPolicy;

// Active connections climb to `peak`, then fall back to `to`; true when the
// fall asked for a check.
bool burst(P& p, std::size_t peak, std::size_t to) {
  bool asked = false;
  for (std::size_t n = 1; n <= peak; ++n) asked |= p.note_active(n);
  for (std::size_t n = peak; n-- > to;) asked |= p.note_active(n);
  return asked;
}
}  // namespace

TEST_CASE("quiet after a burst asks for one check, and the check trims") {
  P p;
  for (std::size_t n = 1; n < P::kBurst; ++n) CHECK_FALSE(p.note_active(n));
  CHECK_FALSE(p.note_active(P::kBurst));
  CHECK_FALSE(p.note_active(P::kQuietAtMost + 1));  // busy still
  CHECK(p.note_active(P::kQuietAtMost));
  // Light traffic meanwhile: no second check asked for.
  CHECK_FALSE(p.note_active(0));
  CHECK_FALSE(p.note_active(1));
  CHECK(p.check(1, t0 + P::kQuiet) == 0ms);
  p.trimmed(t0 + P::kQuiet);
  CHECK(p.peak() == 0);
  // Quiet again with no burst since: nothing to give back.
  CHECK_FALSE(p.note_active(0));
  CHECK_FALSE(p.check(0, t0 + 1h).has_value());
}

TEST_CASE("light traffic never trims") {
  P p;
  for (int i = 0; i < 1000; ++i) CHECK_FALSE(burst(p, P::kBurst - 1, 0));
  CHECK_FALSE(p.check(0, t0).has_value());
}

TEST_CASE("busy again before the check: the wait starts again at the next quiet") {
  P p;
  CHECK(burst(p, 4 * P::kBurst, 0));
  // The burst goes on: the quiet it comes back to asks for the check anew.
  CHECK(burst(p, 4 * P::kBurst, 0));
  CHECK(p.check(0, t0) == 0ms);
}

TEST_CASE("busy when the check comes: no trim until the next quiet") {
  P p;
  CHECK(burst(p, P::kBurst, 0));
  CHECK_FALSE(p.note_active(P::kQuietAtMost + 1));
  CHECK_FALSE(p.check(P::kQuietAtMost + 1, t0).has_value());
  CHECK(p.note_active(0));
  CHECK(p.check(0, t0) == 0ms);
}

TEST_CASE("trims are at least kMinInterval apart") {
  P p;
  CHECK(burst(p, P::kBurst, 0));
  CHECK(p.check(0, t0) == 0ms);
  p.trimmed(t0);
  CHECK(burst(p, P::kBurst, 0));
  CHECK(p.check(0, t0 + 1s) == P::kMinInterval - 1s);
  // Waiting for that: no new check is asked for meanwhile.
  CHECK_FALSE(p.note_active(1));
  CHECK(p.check(0, t0 + P::kMinInterval) == 0ms);
}
