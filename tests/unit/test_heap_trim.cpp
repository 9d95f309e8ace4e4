#include <doctest/doctest.h>

#include "holdfast/heap_trim.hpp"

using namespace holdfast;
using namespace std::chrono_literals;

namespace {
// A fake clock: the policy only compares times.
const HeapTrimPolicy::TimePoint t0{std::chrono::hours(1)};
using P = HeapTrimPolicy;
}  // namespace

TEST_CASE("quiet after a burst asks for a check, and the check trims") {
  P p;
  for (std::size_t n = 1; n <= P::kBurst; ++n) CHECK_FALSE(p.note_active(n));
  CHECK_FALSE(p.note_active(3));  // busy still
  CHECK(p.note_active(0));
  CHECK(p.check(0, t0 + P::kQuiet) == 0ms);
  p.trimmed(t0 + P::kQuiet);
  CHECK(p.peak() == 0);
  // Quiet again with no burst since: nothing to give back.
  CHECK_FALSE(p.note_active(0));
  CHECK_FALSE(p.check(0, t0 + 1h).has_value());
}

TEST_CASE("light traffic never trims") {
  P p;
  for (int i = 0; i < 1000; ++i) {
    CHECK_FALSE(p.note_active(P::kBurst - 1));
    CHECK_FALSE(p.note_active(0));
  }
  CHECK_FALSE(p.check(0, t0).has_value());
}

TEST_CASE("a worker busy again when the check comes does not trim") {
  P p;
  p.note_active(P::kBurst * 4);
  CHECK(p.note_active(0));
  p.note_active(1);
  CHECK_FALSE(p.check(1, t0).has_value());
  // The next return to quiet asks again; the burst is still owed its trim.
  CHECK(p.note_active(0));
  CHECK(p.check(0, t0) == 0ms);
}

TEST_CASE("trims are at least kMinInterval apart") {
  P p;
  p.note_active(P::kBurst);
  p.note_active(0);
  p.trimmed(t0);
  p.note_active(P::kBurst);
  CHECK(p.note_active(0));
  CHECK(p.check(0, t0 + 1s) == P::kMinInterval - 1s);
  CHECK(p.check(0, t0 + P::kMinInterval) == 0ms);
}
