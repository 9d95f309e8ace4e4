#include "holdfast/idle_estimate.hpp"

#include <algorithm>

namespace holdfast {

namespace {
constexpr Millis kTolerance{20};
// Growth is bounded in steps, so that value() is a short loop whatever the age.
constexpr int kMaxGrowthSteps = 64;

Millis grow(Millis v) { return v + std::max(v / 4, Millis(1000)); }
}  // namespace

Millis IdleCloseEstimate::round_down(Millis observed) {
  auto t = observed + kTolerance;
  if (t >= Millis(1000)) return Millis(t.count() / 1000 * 1000);
  return Millis(t.count() / 100 * 100);
}

bool IdleCloseEstimate::observe(Millis idle, TimePoint now) {
  Millis sample = round_down(idle);
  if (sample < kShortest) return false;
  // No ceiling here: any current estimate, however grown, is compared.
  auto current = value(now, Millis::max());
  if (current && sample > *current) return false;  // says nothing the estimate does not
  base_ = sample;
  since_ = now;
  return !current || sample < *current;
}

std::optional<Millis> IdleCloseEstimate::value(TimePoint now, Millis ceiling) const {
  if (!base_) return std::nullopt;
  Millis v = *base_;
  auto steps = now > since_ ? (now - since_) / kGrowthInterval : 0;
  for (int i = 0; i < std::min<decltype(steps)>(steps, kMaxGrowthSteps) && v < ceiling; ++i) v = grow(v);
  if (v >= ceiling) return std::nullopt;
  return v;
}

}  // namespace holdfast
