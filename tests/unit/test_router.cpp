#include <doctest/doctest.h>

#include "holdfast/router.hpp"

using namespace holdfast;

TEST_CASE("routes match host and path prefix in order") {
  std::vector<RouteConfig> routes(3);
  routes[0].host = "api.example.com";
  routes[0].path_prefix = "/v1/";
  routes[0].upstream_index = 0;
  routes[1].path_prefix = "/static/";
  routes[1].upstream_index = 1;
  routes[2].path_prefix = "/";
  routes[2].upstream_index = 2;
  Router r(routes);
  CHECK(r.route("api.example.com", "/v1/users") == 0u);
  CHECK(r.route("API.example.com:8080", "/v1/users") == 0u);
  CHECK(r.route("other.example.com", "/v1/users") == 2u);
  CHECK(r.route("x", "/static/a.css") == 1u);
  CHECK(r.route("api.example.com", "http://api.example.com/v1/x") == 0u);
  CHECK(r.route("", "/") == 2u);
}

TEST_CASE("no route when nothing matches") {
  std::vector<RouteConfig> routes(1);
  routes[0].path_prefix = "/only/";
  Router r(routes);
  CHECK_FALSE(r.route("h", "/other").has_value());
}

namespace {
// Host-less routes, upstream index = position.
Router prefix_router(std::initializer_list<const char*> prefixes) {
  std::vector<RouteConfig> routes;
  for (const char* p : prefixes) {
    routes.emplace_back();
    routes.back().path_prefix = p;
    routes.back().upstream_index = routes.size() - 1;
  }
  return Router(routes);
}
}  // namespace

TEST_CASE("routes match the normalised path, not the raw one") {
  Router r = prefix_router({"/v1/", "/admin"});
  CHECK(r.route("h", "/v1/users") == 0u);
  CHECK(r.route("h", "/v1/../admin") == 1u);
  CHECK(r.route("h", "/v1/%2e%2E/admin") == 1u);
  CHECK(r.route("h", "/v1/./../admin/x?y=/v1/") == 1u);
  CHECK(r.route("h", "/%61dmin") == 1u);
  CHECK(r.route("h", "/v1/a/../b") == 0u);
  CHECK_FALSE(r.route("h", "/v1/../other").has_value());
  CHECK_FALSE(r.route("h", "/v1/..").has_value());
  CHECK_FALSE(r.route("h", "/x?/v1/").has_value());
}

TEST_CASE("route prefixes are compared in normalised form") {
  Router r = prefix_router({"/%7euser/"});
  CHECK(r.route("h", "/~user/a") == 0u);
  CHECK(r.route("h", "/%7Euser/a") == 0u);
}

TEST_CASE("OPTIONS * is routed like /") {
  Router r = prefix_router({"/v1/", "/"});
  CHECK(r.route("h", "*") == 1u);
}
