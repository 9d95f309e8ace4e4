#include "holdfast/version.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>

namespace holdfast {

std::optional<std::size_t> SlotRegistry::slot(const std::string& upstream, const std::string& server) {
  auto key = upstream + '\n' + server;
  if (auto it = slots_.find(key); it != slots_.end()) return it->second;
  if (next_ >= kMaxSlots) return std::nullopt;
  slots_.emplace(std::move(key), next_);
  return next_++;
}

bool is_ip_literal(const std::string& host) {
  in6_addr buf;
  return inet_pton(AF_INET, host.c_str(), &buf) == 1 || inet_pton(AF_INET6, host.c_str(), &buf) == 1;
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
    for (const auto& a : addresses) {
      auto slot = registry.slot(u.name, a.text);
      if (!slot)
        throw ConfigError(key + ": more than " + std::to_string(kMaxSlots - 1) +
                          " distinct servers since start; restart holdfast to reuse their metrics slots");
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
