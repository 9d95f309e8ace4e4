// Picks the server of a group for the next attempt. Each policy is a small
// class behind one interface; health and limits are data the caller puts in
// the context (which servers are eligible right now), not logic inside the
// policies, so each policy is a pure function of its own state and the
// context, and is unit-tested as such.
//
// Ownership: one Balancer per worker per group (Worker::balancer), used by
// that worker's thread only, so a policy's own state needs no locks. The
// counts it reads (active connections) are process-wide, from HealthTable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string_view>
#include <vector>

#include "holdfast/config.hpp"

namespace holdfast {

struct MessageHead;

// One server as a policy sees it at the moment of a pick.
struct Candidate {
  bool eligible = true;        // up, not ejected, under max_conns, not the server that just failed
  unsigned weight = 1;
  std::int64_t active = 0;     // active connections over all workers
};

struct PickContext {
  std::span<const Candidate> servers;
  std::string_view key;        // hash policies: the request's key (empty: none)
};

enum class PickOutcome { success, failure };

class Balancer {
 public:
  virtual ~Balancer() = default;
  // An eligible server, or nullopt when none is.
  virtual std::optional<std::size_t> pick(const PickContext& ctx) = 0;
  // What became of an attempt on `server` (policies that learn from it).
  virtual void report(std::size_t /*server*/, PickOutcome /*outcome*/) {}
};

// The policy `upstream` names, over its servers and weights; `seed` differs
// per worker so that workers do not all start at the same server.
std::unique_ptr<Balancer> make_balancer(const UpstreamConfig& upstream, unsigned seed);

// The request's hash key under `key` (header value, cookie value, client
// address); empty when the request has none.
std::string_view request_hash_key(const HashKey& key, const MessageHead& head, std::string_view client_ip);

// Smooth weighted round robin (nginx): each pick adds every eligible server's
// weight to its score, takes the highest score and subtracts the total.
// Equal weights give plain rotation.
class RoundRobin final : public Balancer {
 public:
  RoundRobin(std::size_t servers, unsigned start);
  std::optional<std::size_t> pick(const PickContext& ctx) override;

 private:
  std::vector<std::int64_t> score_;
  std::size_t start_;          // ties go to the first from here, which rotates
};

// Fewest active connections relative to weight; ties rotate.
class LeastConn final : public Balancer {
 public:
  explicit LeastConn(unsigned start) : next_(start) {}
  std::optional<std::size_t> pick(const PickContext& ctx) override;

 private:
  std::size_t next_;
};

// Power of two choices: two distinct eligible servers at random, the one with
// fewer active connections (relative to weight) wins.
class RandomTwo final : public Balancer {
 public:
  explicit RandomTwo(unsigned seed) : rng_(seed) {}
  std::optional<std::size_t> pick(const PickContext& ctx) override;

 private:
  std::minstd_rand rng_;
};

}  // namespace holdfast
