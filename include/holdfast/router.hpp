// Chooses the upstream group for a request: routes are tried in config order,
// the first whose host (if any) and path prefix match wins. Paths are compared
// normalised (normalized_path), so that "/v1/../admin" is matched as the
// "/admin" a backend resolves it to. Immutable after construction, shared by
// all workers.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "holdfast/config.hpp"

namespace holdfast {

class Router {
 public:
  explicit Router(const std::vector<RouteConfig>& routes);
  // `host` is the Host field as received (a port, if any, is ignored);
  // `target` as received ("*" is routed as "/").
  std::optional<std::size_t> route(std::string_view host, std::string_view target) const;

 private:
  std::vector<RouteConfig> routes_;
};

}  // namespace holdfast
