#include "holdfast/stats.hpp"

#include <algorithm>

namespace holdfast {

namespace {
constexpr CounterInfo kCounterInfo[] = {
#define HOLDFAST_INFO(id, scope, family, labels, help) {#id, Scope::scope, family, labels, help},
    HOLDFAST_COUNTERS(HOLDFAST_INFO)
#undef HOLDFAST_INFO
};
constexpr GaugeInfo kGaugeInfo[] = {
#define HOLDFAST_INFO(id, scope, family, labels, aggregate, scale, help) \
  {#id, Scope::scope, family, labels, Aggregate::aggregate, scale, help},
    HOLDFAST_GAUGES(HOLDFAST_INFO)
#undef HOLDFAST_INFO
};
constexpr HistogramInfo kHistogramInfo[] = {
#define HOLDFAST_INFO(id, family, help) {#id, family, help},
    HOLDFAST_HISTOGRAMS(HOLDFAST_INFO)
#undef HOLDFAST_INFO
};
}  // namespace

const CounterInfo& info(Counter c) { return kCounterInfo[static_cast<std::size_t>(c)]; }
const GaugeInfo& info(Gauge g) { return kGaugeInfo[static_cast<std::size_t>(g)]; }
const HistogramInfo& info(Histogram h) { return kHistogramInfo[static_cast<std::size_t>(h)]; }

Snapshot::Snapshot(std::size_t n)
    : slots(n), counters(n * kCounters), gauges(n * kGauges), histograms(n * kHistograms * kHistogramCells) {}

std::uint64_t Snapshot::total(Counter c) const {
  std::uint64_t sum = 0;
  for (std::size_t s = 0; s < slots; ++s) sum += get(s, c);
  return sum;
}

Snapshot& Snapshot::operator+=(const Snapshot& other) {
  // A worker may have been read before the newest reload's slots existed:
  // what it lacks counts as zero.
  const auto n = std::min(counters.size(), other.counters.size());
  for (std::size_t i = 0; i < n; ++i) counters[i] += other.counters[i];
  const auto nh = std::min(histograms.size(), other.histograms.size());
  for (std::size_t i = 0; i < nh; ++i) histograms[i] += other.histograms[i];
  const auto ng = std::min(gauges.size(), other.gauges.size());
  for (std::size_t i = 0; i < ng; ++i) {
    if (kGaugeInfo[i % kGauges].aggregate == Aggregate::max) gauges[i] = std::max(gauges[i], other.gauges[i]);
    else gauges[i] += other.gauges[i];
  }
  return *this;
}

std::string Snapshot::format() const {
  std::string out;
  for (std::size_t i = 0; i < kCounters; ++i) {
    if (i) out += ' ';
    out += kCounterInfo[i].id;
    out += '=';
    out += std::to_string(total(static_cast<Counter>(i)));
  }
  return out;
}

Stats::Stats(std::size_t slots)
    : slots_(slots),
      counters_(std::make_unique<Cell[]>(slots * kCounters)),
      gauges_(std::make_unique<Cell[]>(slots * kGauges)),
      histograms_(std::make_unique<Cell[]>(slots * kHistograms * kHistogramCells)) {}

void Stats::observe(std::size_t slot, Histogram h, double seconds) noexcept {
  if (seconds < 0) seconds = 0;
  Cell* cells = &histograms_[(slot * kHistograms + static_cast<std::size_t>(h)) * kHistogramCells];
  std::size_t b = 0;
  while (b < kBuckets && seconds > kBucketBounds[b]) ++b;
  bump(cells[b], 1);
  bump(cells[kBuckets + 1], static_cast<std::uint64_t>(seconds * 1e9));
}

Snapshot Stats::read() const { return read(slots_); }

void Stats::clear_slot(std::size_t slot) noexcept {
  if (slot >= slots_) return;
  for (std::size_t i = 0; i < kCounters; ++i) counters_[slot * kCounters + i].store(0, std::memory_order_relaxed);
  for (std::size_t i = 0; i < kGauges; ++i) gauges_[slot * kGauges + i].store(0, std::memory_order_relaxed);
  const std::size_t cells = kHistograms * kHistogramCells;
  for (std::size_t i = 0; i < cells; ++i) histograms_[slot * cells + i].store(0, std::memory_order_relaxed);
}

void Snapshot::clear_slot(std::size_t slot) {
  if (slot >= slots) return;
  std::fill_n(counters.begin() + static_cast<std::ptrdiff_t>(slot * kCounters), kCounters, 0);
  std::fill_n(gauges.begin() + static_cast<std::ptrdiff_t>(slot * kGauges), kGauges, 0);
  const std::size_t cells = kHistograms * kHistogramCells;
  std::fill_n(histograms.begin() + static_cast<std::ptrdiff_t>(slot * cells), cells, 0);
}

Snapshot Stats::read(std::size_t slots) const {
  Snapshot s(std::min(slots, slots_));
  for (std::size_t i = 0; i < s.counters.size(); ++i) s.counters[i] = counters_[i].load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < s.gauges.size(); ++i)
    s.gauges[i] = static_cast<std::int64_t>(gauges_[i].load(std::memory_order_relaxed));
  for (std::size_t i = 0; i < s.histograms.size(); ++i) s.histograms[i] = histograms_[i].load(std::memory_order_relaxed);
  return s;
}

}  // namespace holdfast
