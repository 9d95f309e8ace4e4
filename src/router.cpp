#include "holdfast/router.hpp"

#include "holdfast/headers.hpp"

namespace holdfast {

Router::Router(const std::vector<RouteConfig>& routes) : routes_(routes) {}

namespace {
std::string_view host_without_port(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  auto colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

// Absolute-form targets ("http://host/path") are routed by their path.
std::string_view path_of(std::string_view target) {
  if (!target.empty() && target.front() == '/') return target;
  auto scheme = target.find("://");
  if (scheme == std::string_view::npos) return target;
  auto slash = target.find('/', scheme + 3);
  return slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
}
}  // namespace

std::optional<std::size_t> Router::route(std::string_view host, std::string_view target) const {
  auto bare = host_without_port(host);
  auto path = path_of(target);
  for (const auto& r : routes_) {
    if (r.host && !iequals(*r.host, bare)) continue;
    if (path.substr(0, r.path_prefix.size()) != r.path_prefix) continue;
    return r.upstream_index;
  }
  return std::nullopt;
}

}  // namespace holdfast
