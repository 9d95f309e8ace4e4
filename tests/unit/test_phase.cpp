// phase_transition_allowed over all 36 pairs, against a table written out
// independently of the switch in phase.hpp: a changed rule shows up here as
// the exact pair that moved.
#include <doctest/doctest.h>

#include <array>
#include <string>

#include "holdfast/phase.hpp"

using namespace holdfast;

namespace {
constexpr std::array<Phase, 6> kPhases = {Phase::buffering, Phase::connecting,   Phase::sending,
                                          Phase::awaiting_head, Phase::streaming, Phase::done};

// Rows: from; columns: to; in the order of kPhases.
//   buffering      -> connecting, sending (a pooled connection), awaiting_head (a pooled
//                     connection for a bodiless request), done (local answer)
//   connecting,
//   sending,
//   awaiting_head  -> anything but buffering and itself (forward, or a retry)
//   streaming      -> done only: the client has the head, no retry is possible
//   done           -> nothing: finished exactly once
constexpr bool kAllowed[6][6] = {
    //  buf    conn   send   await  strm   done
    {false, true, true, true, false, true},    // buffering
    {false, false, true, true, true, true},    // connecting
    {false, true, false, true, true, true},    // sending
    {false, true, true, false, true, true},    // awaiting_head
    {false, false, false, false, false, true}, // streaming
    {false, false, false, false, false, false},// done
};
}  // namespace

TEST_CASE("phase: every transition matches the expected table") {
  int allowed = 0;
  for (std::size_t f = 0; f < kPhases.size(); ++f) {
    for (std::size_t t = 0; t < kPhases.size(); ++t) {
      CAPTURE(std::string(phase_name(kPhases[f])));
      CAPTURE(std::string(phase_name(kPhases[t])));
      CHECK(phase_transition_allowed(kPhases[f], kPhases[t]) == kAllowed[f][t]);
      allowed += kAllowed[f][t] ? 1 : 0;
    }
  }
  // 4 + 4 + 4 + 4 + 1 + 0: guards the table itself against a slipped cell.
  CHECK(allowed == 17);
}

TEST_CASE("phase: no phase moves to itself and nothing returns to buffering") {
  for (Phase p : kPhases) {
    CAPTURE(std::string(phase_name(p)));
    CHECK_FALSE(phase_transition_allowed(p, p));
    CHECK_FALSE(phase_transition_allowed(p, Phase::buffering));
  }
}

TEST_CASE("phase: the table is usable at compile time") {
  // Exchange::enter() may check it in a constexpr context; keep it constexpr.
  static_assert(phase_transition_allowed(Phase::buffering, Phase::connecting));
  static_assert(!phase_transition_allowed(Phase::streaming, Phase::connecting));
  CHECK(phase_name(Phase::awaiting_head) == "awaiting_head");
}
