// The phases of one exchange, and which moves between them are allowed. The
// Exchange changes phase only through Exchange::enter(), which checks
// phase_transition_allowed(); the table lives here so that it is unit-tested
// on its own.
//
//   buffering      the request head is parsed; no upstream connection yet
//   connecting     a new upstream connection is being opened
//   sending        connected; the request is still being written upstream
//   awaiting_head  the whole request is written; no final response head yet
//   streaming      the final response head went to the client; body follows
//   done           finished (once): logged, upstream released, client told
//
// A retry moves back to connecting (or sending, when the new connection is
// already open) from any phase before streaming.
#pragma once

#include <string_view>

namespace holdfast {

enum class Phase { buffering, connecting, sending, awaiting_head, streaming, done };

constexpr bool phase_transition_allowed(Phase from, Phase to) noexcept {
  switch (from) {
    case Phase::buffering:
      // awaiting_head: a bodiless request leased a pooled connection.
      return to == Phase::connecting || to == Phase::sending || to == Phase::awaiting_head || to == Phase::done;
    case Phase::connecting:
    case Phase::sending:
    case Phase::awaiting_head:
      // Forward, or back to a new connection (retry); never to buffering.
      return to != Phase::buffering && to != from;
    case Phase::streaming:
      return to == Phase::done;
    case Phase::done:
      return false;
  }
  return false;
}

std::string_view phase_name(Phase p) noexcept;

}  // namespace holdfast
