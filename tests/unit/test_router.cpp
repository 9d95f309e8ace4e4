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
