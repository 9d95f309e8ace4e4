#include "holdfast/dns.hpp"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>

namespace holdfast {

bool resolve_names(const Config& config, NameTable& out, std::string& error, Millis) {
  for (const auto& u : config.upstreams)
    for (const auto& s : u.servers) {
      if (is_ip_literal(s.host) || out.count(s.host)) continue;
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      int rc = getaddrinfo(s.host.c_str(), nullptr, &hints, &res);
      if (rc != 0 || !res) {
        error = s.host + ": " + gai_strerror(rc);
        return false;
      }
      std::vector<std::string> list;
      for (auto* a = res; a; a = a->ai_next) {
        char buf[INET6_ADDRSTRLEN];
        const void* p = a->ai_family == AF_INET ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr)
                                                : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
        if (inet_ntop(a->ai_family, p, buf, sizeof buf)) list.emplace_back(buf);
      }
      freeaddrinfo(res);
      std::sort(list.begin(), list.end());
      list.erase(std::unique(list.begin(), list.end()), list.end());
      out[s.host] = std::move(list);
    }
  return true;
}

}  // namespace holdfast
