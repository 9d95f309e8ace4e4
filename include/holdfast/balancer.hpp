// Picks the server of a group for the next request. Round robin for now; one
// Balancer per worker per group, so the cursor needs no synchronisation.
#pragma once

#include <cstddef>

namespace holdfast {

class Balancer {
 public:
  explicit Balancer(std::size_t servers, std::size_t start = 0) : servers_(servers), next_(start % (servers ? servers : 1)) {}
  std::size_t pick() noexcept {
    std::size_t chosen = next_;
    next_ = (next_ + 1) % servers_;
    return chosen;
  }
  std::size_t size() const noexcept { return servers_; }

 private:
  std::size_t servers_;
  std::size_t next_;
};

}  // namespace holdfast
