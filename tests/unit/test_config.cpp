#include <doctest/doctest.h>

#include <string>

#include "holdfast/config.hpp"

using namespace holdfast;

namespace {
const char* kBase = R"(listen: ["127.0.0.1:0"]
upstreams:
  app:
    servers:
      - address: 127.0.0.1:9001
)";

std::string error_of(const std::string& text) {
  try {
    load_config_text(text, "t.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("a minimal config gets the documented defaults") {
  auto c = load_config_text(kBase, "t.yaml");
  CHECK(c.listen.size() == 1);
  CHECK(c.listen[0].port == 0);
  CHECK(c.client.keepalive_timeout.value == Millis(75000));
  CHECK(c.client.keepalive_timeout.origin == Origin::defaulted);
  CHECK(c.upstreams[0].keepalive.max_idle == 256);
  CHECK(c.upstreams[0].keepalive.max_requests >= 100000);
  REQUIRE(c.routes.size() == 1);
  CHECK(c.routes[0].upstream == "app");
}

TEST_CASE("errors name file, line, key and rule") {
  auto e = error_of(std::string(kBase) + "bogus: 1\n");
  CHECK(e.find("t.yaml:6: bogus: unknown key") == 0);
  e = error_of(std::string(kBase) + "client:\n  keepalive_timeout: 75\n");
  CHECK(e.find("t.yaml:7: client.keepalive_timeout:") == 0);
  CHECK(e.find("not a duration") != std::string::npos);
  e = error_of(std::string(kBase) + "client:\n  max_header_bytes: 16q\n");
  CHECK(e.find("t.yaml:7: client.max_header_bytes:") == 0);
  e = error_of(std::string(kBase) + "routes:\n  - upstream: nope\n");
  CHECK(e.find("t.yaml:7: routes[0].upstream: names upstream 'nope'") == 0);
  e = error_of("upstreams:\n  app:\n    servers:\n      - address: 127.0.0.1\n");
  CHECK(e.find("t.yaml:4: upstreams.app.servers[0].address:") == 0);
  e = error_of("upstreams:\n  app:\n    servers:\n      - address: 127.0.0.1:70000\n");
  CHECK(e.find("invalid port") != std::string::npos);
  e = error_of("listen: [1, 2]\nupstreams: [1]\n");
  CHECK(e.find("t.yaml:") == 0);
  e = error_of(std::string(kBase) + "workers: [1]\n");
  CHECK(e.find("t.yaml:6: workers: expected a scalar") == 0);
}

TEST_CASE("timeout order: pool idle + margin must stay under the backend's") {
  auto e = error_of(std::string(kBase) +
                    "    backend_keepalive_timeout: 5s\n    keepalive:\n      idle_timeout: 50s\n");
  CHECK(e.find("t.yaml:8: upstreams.app.keepalive.idle_timeout: timeout order broken") == 0);
  CHECK(e.find("50s") != std::string::npos);
  CHECK(e.find("5s") != std::string::npos);
  CHECK(e.find("at most 4s") != std::string::npos);
  // Not declared: derived from the backend's.
  auto c = load_config_text(std::string(kBase) + "    backend_keepalive_timeout: 5s\n", "t.yaml");
  CHECK(c.upstreams[0].keepalive.idle_timeout.value == Millis(4000));
  CHECK(c.upstreams[0].keepalive.idle_timeout.origin == Origin::derived);
}

TEST_CASE("timeout order: client keep-alive above the front's idle timeout") {
  auto e = error_of(std::string(kBase) + "client:\n  keepalive_timeout: 30s\n  front_idle_timeout: 60s\n");
  CHECK(e.find("client.keepalive_timeout: timeout order broken") != std::string::npos);
  CHECK(e.find("30s") != std::string::npos);
  CHECK(e.find("front_idle_timeout (1m)") != std::string::npos);
  auto c = load_config_text(std::string(kBase) + "client:\n  front_idle_timeout: 90s\n", "t.yaml");
  CHECK(c.client.keepalive_timeout.value == Millis(91000));
}

TEST_CASE("describe_config prints the chain with origins") {
  auto c = load_config_text(std::string(kBase) + "    backend_keepalive_timeout: 5s\n", "t.yaml");
  auto d = describe_config(c);
  CHECK(d.find("idle_timeout 4s (derived)") != std::string::npos);
  CHECK(d.find("keepalive_timeout 5s (declared)") != std::string::npos);
  CHECK(d.find("keepalive_timeout 75s (defaulted)") != std::string::npos);
  CHECK(d.find("idle unknown") != std::string::npos);
}

TEST_CASE("listen_backlog: 511 by default, declared values kept, range checked") {
  CHECK(load_config_text(kBase, "t.yaml").listen_backlog == 511);
  CHECK(load_config_text(std::string(kBase) + "listen_backlog: 4096\n", "t.yaml").listen_backlog == 4096);
  auto e = error_of(std::string(kBase) + "listen_backlog: 0\n");
  CHECK(e.find("t.yaml:6: listen_backlog: '0' is out of range (expected 1..65535)") == 0);
  e = error_of(std::string(kBase) + "listen_backlog: lots\n");
  CHECK(e.find("t.yaml:6: listen_backlog: 'lots' is not a whole number") == 0);
  CHECK(describe_config(load_config_text(kBase, "t.yaml")).find("\nlisten_backlog: 511\n") != std::string::npos);
}

TEST_CASE("client.margin is kept with its origin and printed by describe_config") {
  auto c = load_config_text(kBase, "t.yaml");
  CHECK(c.client.margin.value == Millis(1000));
  CHECK(c.client.margin.origin == Origin::defaulted);
  CHECK(describe_config(c).find("keepalive_timeout 75s (defaulted), margin 1s (defaulted)") != std::string::npos);

  c = load_config_text(std::string(kBase) + "client:\n  margin: 2500ms\n  front_idle_timeout: 60s\n", "t.yaml");
  CHECK(c.client.margin.value == Millis(2500));
  CHECK(c.client.margin.origin == Origin::declared);
  CHECK(c.client.keepalive_timeout.value == Millis(75000));
  auto d = describe_config(c);
  CHECK(d.find("client:\n") != std::string::npos);
  CHECK(d.find("  margin: 2500ms\nupstreams:") != std::string::npos);
  CHECK(d.find("keepalive_timeout 75s (defaulted), margin 2500ms (declared)") != std::string::npos);
  // The margin still drives the derived keep-alive timeout.
  c = load_config_text(std::string(kBase) + "client:\n  margin: 5s\n  front_idle_timeout: 90s\n", "t.yaml");
  CHECK(c.client.keepalive_timeout.value == Millis(95000));
}

TEST_CASE("admin listener and access log format") {
  auto off = load_config_text(kBase, "t.yaml");
  CHECK_FALSE(off.admin.listen.has_value());
  CHECK(off.log.access_format == AccessFormat::text);

  auto on = load_config_text(std::string(kBase) + "admin: {listen: \"127.0.0.1:9901\"}\nlog: {access_format: json}\n", "t.yaml");
  REQUIRE(on.admin.listen.has_value());
  CHECK(on.admin.listen->port == 9901);
  CHECK(on.log.access_format == AccessFormat::json);
  CHECK(describe_config(on).find("admin:\n  listen: 127.0.0.1:9901") != std::string::npos);

  CHECK(error_of(std::string(kBase) + "log: {access_format: xml}\n").find("log.access_format") != std::string::npos);
  CHECK(error_of(std::string(kBase) + "admin: {}\n").find("admin.listen: is required") != std::string::npos);
  const std::string shared = R"(listen: ["127.0.0.1:8080"]
upstreams:
  app:
    servers:
      - address: 127.0.0.1:9001
admin: {listen: "127.0.0.1:8080"}
)";
  CHECK(error_of(shared).find("must not share the proxy's port") != std::string::npos);
}

TEST_CASE("balancing keys: defaults, values and FILE:LINE: KEY errors") {
  auto two = std::string("upstreams:\n  app:\n    servers:\n      - address: 127.0.0.1:9001\n"
                         "      - {address: 127.0.0.1:9002, weight: 5}\n");
  auto c = load_config_text(two, "t.yaml");
  const auto& b = c.upstreams[0].balancing;
  CHECK(b.policy == BalancePolicy::round_robin);
  CHECK(b.weights == std::vector<unsigned>{1, 5});
  CHECK(b.retries == 1);
  CHECK(b.max_fails == 1);
  CHECK(!b.health_check);
  auto more = two + "    balance: hash\n    hash_key: cookie:sid\n    retries: 3\n    max_fails: 0\n"
                    "    health_check: {path: /healthz, interval: 1s, rise: 1, fall: 2, expect: \"200-299\", start: down}\n"
                    "    max_conns: 2\n    queue: {size: 4, timeout: 250ms}\n";
  c = load_config_text(more, "t.yaml");
  const auto& m = c.upstreams[0].balancing;
  CHECK(m.policy == BalancePolicy::hash);
  CHECK(m.hash_key.kind == HashKey::Kind::cookie);
  CHECK(m.hash_key.name == "sid");
  CHECK(m.retries == 3);
  CHECK(m.max_fails == 0);
  REQUIRE(m.health_check);
  CHECK(m.health_check->path == "/healthz");
  CHECK(m.health_check->expect_max == 299);
  CHECK(m.health_check->start_down);
  CHECK(m.max_conns == 2);
  CHECK(m.queue.size == 4);
  CHECK(m.queue.timeout == Millis(250));
  auto text = describe_config(c);
  CHECK(text.find("balance: hash") != std::string::npos);
  CHECK(text.find("max_conns: 2") != std::string::npos);

  CHECK(error_of(two + "    balance: fastest\n").find("t.yaml:6: upstreams.app.balance: 'fastest' is not a policy") == 0);
  CHECK(error_of(two + "    hash_key: header:X\n").find("t.yaml:6: upstreams.app.hash_key: applies only with balance: hash") == 0);
  CHECK(error_of(two + "    health_check: {expect: \"300-200\"}\n").find("t.yaml:6: upstreams.app.health_check.expect:") == 0);
  CHECK(error_of(two + "    health_check: {interval: 1s, timeout: 2s}\n").find("upstreams.app.health_check.timeout: must not exceed interval") != std::string::npos);
  CHECK(error_of(two + "    queue: {size: 3}\n").find("t.yaml:6: upstreams.app.queue: applies only with max_conns") == 0);
  CHECK(error_of(std::string("upstreams:\n  app:\n    servers:\n      - {address: 127.0.0.1:1, weight: 0}\n"))
            .find("t.yaml:4: upstreams.app.servers[0].weight:") == 0);
}

TEST_CASE("Via per direction and the client keep-alive grace") {
  auto c = load_config_text(kBase, "t.yaml");
  CHECK_FALSE(c.via.upstream);
  CHECK(c.via.client);
  CHECK(c.client.keepalive_grace == Millis(1000));
  c = load_config_text(std::string(kBase) + "via: {upstream: true, client: false}\nclient:\n  keepalive_grace: 250ms\n",
                       "t.yaml");
  CHECK(c.via.upstream);
  CHECK_FALSE(c.via.client);
  CHECK(c.client.keepalive_grace == Millis(250));
  auto e = error_of(std::string(kBase) + "via:\n  upstream: yes please\n");
  CHECK(e.find("t.yaml:7: via.upstream: 'yes please' is not a boolean") == 0);
  e = error_of(std::string(kBase) + "via:\n  both: true\n");
  CHECK(e.find("via.both: unknown key") != std::string::npos);
}

TEST_CASE("describe_config says what holdfast does when the backend's timeout is unknown") {
  auto d = describe_config(load_config_text(kBase, "t.yaml"));
  CHECK(d.find("upstream 'app': the backend's idle timeout is unknown") != std::string::npos);
  CHECK(d.find("Connection: keep-alive") != std::string::npos);
  CHECK(d.find("margin (1s)") != std::string::npos);
  d = describe_config(load_config_text(std::string(kBase) + "    backend_keepalive_timeout: 5s\n", "t.yaml"));
  CHECK(d.find("idle timeout is unknown") == std::string::npos);
}

TEST_CASE("splice_min_body: a size, 64k by default, 0 turns splicing off") {
  CHECK(load_config_text(kBase, "t.yaml").splice_min_body == 64 * 1024);
  CHECK(load_config_text(std::string(kBase) + "splice_min_body: 1m\n", "t.yaml").splice_min_body == 1024 * 1024);
  auto off = load_config_text(std::string(kBase) + "splice_min_body: 0\n", "t.yaml");
  CHECK(off.splice_min_body == 0);
  CHECK(describe_config(off).find("splice_min_body: 0") != std::string::npos);
  auto e = error_of(std::string(kBase) + "splice_min_body: lots\n");
  CHECK(e.find("t.yaml:6: splice_min_body:") == 0);
}
