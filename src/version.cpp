#include "holdfast/version.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>

#include <algorithm>

namespace holdfast {

std::optional<std::size_t> SlotRegistry::slot(const std::string& upstream, const std::string& server,
                                              Clock::time_point now) {
  auto key = upstream + '\n' + server;
  if (auto it = slots_.find(key); it != slots_.end()) {
    // Given up by the previous version but wanted again: still its own.
    std::erase_if(released_, [&](const auto& r) { return r.first == it->second; });
    return it->second;
  }
  std::size_t slot;
  if (next_ < kMaxSlots) {
    slot = next_++;
  } else if (!released_.empty() && now - released_.front().second >= kSlotQuarantine) {
    slot = released_.front().first;
    released_.erase(released_.begin());
    std::erase_if(slots_, [&](const auto& kv) { return kv.second == slot; });
  } else {
    return std::nullopt;
  }
  slots_.emplace(std::move(key), slot);
  fresh_.push_back(slot);
  return slot;
}

std::vector<std::size_t> SlotRegistry::take_fresh() {
  std::vector<std::size_t> out;
  out.swap(fresh_);
  return out;
}

void SlotRegistry::retain_only(const std::set<std::size_t>& in_use, Clock::time_point now) {
  for (const auto& [key, slot] : slots_) {
    if (in_use.count(slot)) continue;
    if (std::none_of(released_.begin(), released_.end(), [&](const auto& r) { return r.first == slot; }))
      released_.emplace_back(slot, now);
  }
}

namespace {

bool numeric_address(const std::string& ip, std::uint16_t port, ServerAddress& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  auto service = std::to_string(port);
  if (getaddrinfo(ip.c_str(), service.c_str(), &hints, &res) != 0 || !res) return false;
  memcpy(&out.addr, res->ai_addr, res->ai_addrlen);
  out.len = static_cast<socklen_t>(res->ai_addrlen);
  freeaddrinfo(res);
  return true;
}

}  // namespace

std::shared_ptr<const ConfigVersion> build_version(std::uint64_t id, Config declared, const NameTable& names,
                                                   SlotRegistry& registry) {
  auto v = std::make_shared<ConfigVersion>();
  v->id = id;
  v->config = declared;
  v->declared = std::move(declared);
  v->names = names;
  const auto& source = v->config.source;
  for (auto& u : v->config.upstreams) {
    const std::string key = source + ": upstreams." + u.name;
    std::vector<Endpoint> expanded;
    std::vector<unsigned> weights;
    std::vector<ServerAddress> addresses;
    for (std::size_t i = 0; i < u.servers.size(); ++i) {
      const auto& ep = u.servers[i];
      const unsigned weight = i < u.balancing.weights.size() ? u.balancing.weights[i] : 1;
      std::vector<std::pair<std::string, std::string>> found;  // (IP, text)
      if (is_ip_literal(ep.host)) {
        found.emplace_back(ep.host, ep.text);
      } else {
        auto it = names.find(ep.host);
        if (it == names.end() || it->second.empty()) throw ConfigError(key + ": cannot resolve '" + ep.text + "'");
        for (const auto& ip : it->second) found.emplace_back(ip, ep.text + "=" + ip);
      }
      for (auto& [ip, text] : found) {
        ServerAddress a;
        if (!numeric_address(ip, ep.port, a)) throw ConfigError(key + ": '" + ip + "' is not an address");
        a.text = text;
        a.authority = ep.text;
        expanded.push_back(Endpoint{ip, ep.port, text});
        weights.push_back(weight);
        addresses.push_back(std::move(a));
      }
    }
    u.servers = std::move(expanded);
    u.balancing.weights = std::move(weights);
    MetricsLayout::Upstream entry{u.name, {}, {}};
    const auto now = SlotRegistry::Clock::now();
    for (const auto& a : addresses) {
      // One server, one pool, one line in /metrics: an address twice in a
      // group (written twice, or a name resolving to a listed address) would
      // share all three while counted as two.
      if (std::find(entry.servers.begin(), entry.servers.end(), a.text) != entry.servers.end())
        throw ConfigError(key + ".servers: " + a.text + " is listed twice");
      auto slot = registry.slot(u.name, a.text, now);
      if (!slot)
        throw ConfigError(key + ": more than " + std::to_string(kMaxSlots - 1) +
                          " servers in use or released within the last 15 minutes; restart holdfast");
      entry.servers.push_back(a.text);
      entry.slots.push_back(*slot);
    }
    v->layout.upstreams.push_back(std::move(entry));
    v->servers.push_back(std::move(addresses));
  }
  v->layout.slots = registry.used();
  v->router = Router(v->config.routes);
  return v;
}

}  // namespace holdfast
