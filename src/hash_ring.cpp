#include "holdfast/hash_ring.hpp"

#include <algorithm>
#include <string>

namespace holdfast {

namespace {
// Points per unit of weight: enough that each server's share of the ring is
// within a few percent of its weight's share.
constexpr unsigned kPointsPerWeight = 160;
}  // namespace

std::uint64_t hash64(std::string_view data) noexcept {
  // FNV-1a, then a splitmix64 finaliser so that nearby keys spread over the ring.
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

HashRing::HashRing(const std::vector<std::string_view>& ids, const std::vector<unsigned>& weights)
    : servers_(ids.size()) {
  for (std::size_t s = 0; s < ids.size(); ++s) {
    unsigned points = kPointsPerWeight * (s < weights.size() ? weights[s] : 1);
    for (unsigned p = 0; p < points; ++p)
      ring_.push_back({hash64(std::string(ids[s]) + "#" + std::to_string(p)), static_cast<std::uint32_t>(s)});
  }
  std::sort(ring_.begin(), ring_.end(), [](const Point& a, const Point& b) { return a.hash < b.hash; });
}

std::size_t HashRing::first_at_or_after(std::uint64_t h) const noexcept {
  auto it = std::lower_bound(ring_.begin(), ring_.end(), h, [](const Point& p, std::uint64_t v) { return p.hash < v; });
  return it == ring_.end() ? 0 : static_cast<std::size_t>(it - ring_.begin());
}

HashPolicy::HashPolicy(const std::vector<std::string_view>& ids, const std::vector<unsigned>& weights, unsigned start)
    : ring_(ids, weights), fallback_(ids.size(), start) {}

std::optional<std::size_t> HashPolicy::pick(const PickContext& ctx) {
  if (ctx.key.empty()) return fallback_.pick(ctx);
  return ring_.owner(ctx.key, [&](std::size_t i) { return ctx.servers[i].eligible; });
}

}  // namespace holdfast
