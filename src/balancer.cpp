#include "holdfast/balancer.hpp"

#include "holdfast/hash_ring.hpp"
#include "holdfast/headers.hpp"
#include "holdfast/http_message.hpp"

namespace holdfast {

std::unique_ptr<Balancer> make_balancer(const UpstreamConfig& u, unsigned seed) {
  const auto n = u.servers.size();
  switch (u.balancing.policy) {
    case BalancePolicy::round_robin: return std::make_unique<RoundRobin>(n, seed);
    case BalancePolicy::least_conn: return std::make_unique<LeastConn>(seed);
    case BalancePolicy::random_two: return std::make_unique<RandomTwo>(seed * 2654435761u + 1);
    case BalancePolicy::hash: {
      std::vector<std::string_view> ids;
      for (const auto& s : u.servers) ids.push_back(s.text);
      return std::make_unique<HashPolicy>(ids, u.balancing.weights, seed);
    }
  }
  return std::make_unique<RoundRobin>(n, seed);
}

std::string_view request_hash_key(const HashKey& key, const MessageHead& head, std::string_view client_ip) {
  switch (key.kind) {
    case HashKey::Kind::client_ip: return client_ip;
    case HashKey::Kind::header:
      if (const auto* v = find_header(head.headers, key.name)) return *v;
      return {};
    case HashKey::Kind::cookie:
      for (const auto& [name, value] : head.headers) {
        if (!iequals(name, "cookie")) continue;
        std::string_view rest = value;
        // "a=1; b=2": bounded by the field's length.
        while (!rest.empty()) {
          auto semi = rest.find(';');
          auto pair = rest.substr(0, semi);
          while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
          auto eq = pair.find('=');
          if (eq != std::string_view::npos && pair.substr(0, eq) == key.name) return pair.substr(eq + 1);
          if (semi == std::string_view::npos) break;
          rest.remove_prefix(semi + 1);
        }
      }
      return {};
  }
  return {};
}

RoundRobin::RoundRobin(std::size_t servers, unsigned start) : score_(servers, 0), start_(servers ? start % servers : 0) {}

std::optional<std::size_t> RoundRobin::pick(const PickContext& ctx) {
  const auto& s = ctx.servers;
  std::optional<std::size_t> best;
  std::int64_t total = 0;
  for (std::size_t k = 0; k < s.size(); ++k) {
    std::size_t i = (start_ + k) % s.size();
    if (!s[i].eligible) continue;
    score_[i] += s[i].weight;
    total += s[i].weight;
    if (!best || score_[i] > score_[*best]) best = i;
  }
  if (!best) return std::nullopt;
  score_[*best] -= total;
  return best;
}

namespace {
// a.active / a.weight < b.active / b.weight, without division.
bool less_loaded(const Candidate& a, const Candidate& b) {
  return a.active * static_cast<std::int64_t>(b.weight) < b.active * static_cast<std::int64_t>(a.weight);
}
}  // namespace

std::optional<std::size_t> LeastConn::pick(const PickContext& ctx) {
  const auto& s = ctx.servers;
  std::optional<std::size_t> best;
  for (std::size_t k = 0; k < s.size(); ++k) {
    std::size_t i = (next_ + k) % s.size();
    if (!s[i].eligible) continue;
    // Equal load: the heavier weight wins, then the first from the cursor.
    if (!best || less_loaded(s[i], s[*best]) ||
        (!less_loaded(s[*best], s[i]) && s[i].weight > s[*best].weight))
      best = i;
  }
  if (best) next_ = *best + 1;
  return best;
}

std::optional<std::size_t> RandomTwo::pick(const PickContext& ctx) {
  const auto& s = ctx.servers;
  std::vector<std::size_t> eligible;
  eligible.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i)
    if (s[i].eligible) eligible.push_back(i);
  if (eligible.empty()) return std::nullopt;
  if (eligible.size() == 1) return eligible[0];
  std::size_t a = rng_() % eligible.size();
  std::size_t b = rng_() % (eligible.size() - 1);
  if (b >= a) ++b;
  std::size_t x = eligible[a], y = eligible[b];
  return less_loaded(s[y], s[x]) ? y : x;
}

}  // namespace holdfast
