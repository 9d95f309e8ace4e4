// What a silent backend's behaviour says about its idle timeout.
//
// Most backends never state their keep-alive timeout (gunicorn, uvicorn and
// nginx send no Keep-Alive field), but each one shows it the first time it
// closes a pooled connection that holdfast left idle: the idle time at which
// the EOF arrived is an upper bound of the backend's timeout (its FIN may
// have been in flight for a while). IdleCloseEstimate keeps, per server, the
// shortest such time seen recently and lets it grow back slowly, so that one
// early close (a backend restart, a recycled worker) does not shrink the
// pool for ever.
//
// A pure value type with the clock passed in: the pool owns one per server
// and per worker, the unit tests drive it with a fake clock.
#pragma once

#include <chrono>
#include <optional>

#include "holdfast/duration.hpp"

namespace holdfast {

class IdleCloseEstimate {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // Without a new early close for this long, the estimate grows by a quarter
  // (at least a second): a server that was restarted once is pooled normally
  // again after some minutes, and one whose estimate grew past its real
  // timeout shows that timeout again by closing a connection.
  static constexpr Millis kGrowthInterval{120'000};
  // Shorter idle closes are not taken for a timeout: no backend ships a
  // sub-second keep-alive timeout, while a restart or a crashed worker
  // closes connections at any moment.
  static constexpr Millis kShortest{1000};

  // The backend closed a pooled connection after `idle` of idleness, at
  // `now`. Returns true when the estimate went down (or was first set).
  // Samples that round below kShortest are ignored.
  bool observe(Millis idle, TimePoint now);

  // The backend's idle timeout as estimated at `now`, or nullopt when
  // nothing was observed or the estimate grew back to `ceiling` (the value
  // holdfast would use without it), after which it is forgotten.
  std::optional<Millis> value(TimePoint now, Millis ceiling) const;
  // Whether anything was ever observed (value() is nullopt at any time if not).
  bool has_observation() const noexcept { return base_.has_value(); }

  // An observed idle time turned into a timeout estimate. The FIN of a
  // backend that closed at T reaches holdfast at T + d, so the observation
  // overstates T by d; backends state their timeouts in whole seconds, so
  // rounding down to a whole second recovers T for any d below a second
  // (below one second, to 100 ms). 20 ms of tolerance cover a backend timer
  // that fires a little before its nominal time.
  static Millis round_down(Millis observed);

 private:
  std::optional<Millis> base_;  // the estimate when it was last set
  TimePoint since_{};           // when it was last set or confirmed
};

}  // namespace holdfast
