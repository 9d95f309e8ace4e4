// Consistent hashing (a ring of virtual nodes, as in ketama): a key maps to
// the first point at or after its hash, so adding or removing one of n
// servers moves only about 1/n of the keys. The ring is built once from the
// server count and weights; which servers are eligible is asked per pick,
// and a key whose server is out goes to the next eligible one on the ring.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "holdfast/balancer.hpp"

namespace holdfast {

std::uint64_t hash64(std::string_view data) noexcept;

class HashRing {
 public:
  // `ids` name the servers on the ring (their addresses): a server keeps its
  // points whatever the others are, which is what keeps keys in place.
  HashRing(const std::vector<std::string_view>& ids, const std::vector<unsigned>& weights);
  // The owner of `key` among the servers for which `eligible(i)` holds.
  template <typename Eligible>
  std::optional<std::size_t> owner(std::string_view key, Eligible eligible) const;
  std::size_t points() const noexcept { return ring_.size(); }

 private:
  struct Point {
    std::uint64_t hash;
    std::uint32_t server;
  };
  std::size_t first_at_or_after(std::uint64_t h) const noexcept;
  std::vector<Point> ring_;
  std::size_t servers_;
};

template <typename Eligible>
std::optional<std::size_t> HashRing::owner(std::string_view key, Eligible eligible) const {
  if (ring_.empty()) return std::nullopt;
  std::size_t i = first_at_or_after(hash64(key));
  std::vector<bool> seen(servers_, false);
  std::size_t distinct = 0;
  // Bounded: one lap of the ring at most.
  for (std::size_t n = 0; n < ring_.size() && distinct < servers_; ++n) {
    const auto& p = ring_[(i + n) % ring_.size()];
    if (seen[p.server]) continue;
    seen[p.server] = true;
    ++distinct;
    if (eligible(p.server)) return p.server;
  }
  return std::nullopt;
}

// balance: hash. Requests without a key go round robin.
class HashPolicy final : public Balancer {
 public:
  HashPolicy(const std::vector<std::string_view>& ids, const std::vector<unsigned>& weights, unsigned start);
  std::optional<std::size_t> pick(const PickContext& ctx) override;

 private:
  HashRing ring_;
  RoundRobin fallback_;
};

}  // namespace holdfast
