#include "holdfast/router.hpp"

#include "holdfast/headers.hpp"
#include "holdfast/request_target.hpp"

namespace holdfast {

Router::Router(const std::vector<RouteConfig>& routes) : routes_(routes) {
  // Paths are compared normalised, so prefixes are too: "/%7euser/" must
  // match the "/~user/" it stands for.
  for (auto& r : routes_) r.path_prefix = normalize_path(r.path_prefix);
}

namespace {
std::string_view host_without_port(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  auto colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}
}  // namespace

std::optional<std::size_t> Router::route(std::string_view host, std::string_view target) const {
  auto bare = host_without_port(host);
  std::string scratch;
  auto path = normalized_path(target, scratch);
  for (const auto& r : routes_) {
    if (r.host && !iequals(*r.host, bare)) continue;
    if (path.substr(0, r.path_prefix.size()) != r.path_prefix) continue;
    return r.upstream_index;
  }
  return std::nullopt;
}

}  // namespace holdfast
