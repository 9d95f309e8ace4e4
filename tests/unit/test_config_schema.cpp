// The config schema: every key parses the value `--check` prints for it,
// and the reload classes drive restart_required() and same_connection_settings().
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

// Every key set, so that none is left out of --check as unset or inapplicable.
const char* kFull = R"(listen: ["127.0.0.1:0", "[::1]:0"]
listen_backlog: 1024
workers: 2
drain_timeout: 3s
reload_on_change: true
resolver: ["127.0.0.1:5353"]
client:
  keepalive_timeout: 80s
  keepalive_grace: 500ms
  keepalive_requests: 50
  header_timeout: 5s
  body_timeout: 20s
  send_timeout: 25s
  max_header_bytes: 32k
  front_idle_timeout: 60s
  margin: 2s
upstreams:
  app:
    servers:
      - 127.0.0.1:9001
      - {address: 127.0.0.1:9002, weight: 3}
    connect_timeout: 1s
    send_timeout: 9s
    read_timeout: 8s
    backend_keepalive_timeout: 10s
    keepalive: {max_idle: 7, idle_timeout: 6s, max_requests: 99, max_lifetime: 10m, margin: 2s}
    retry_buffer: 128k
    upgrade: [websocket, foo]
    tunnel_timeout: 5m
    resolve_interval: 1m
    balance: hash
    hash_key: header:X-User
    retries: 0
    retry_timeout: 4s
    max_fails: 2
    fail_timeout: 3s
    fail_timeout_max: 1m
    fail_on_5xx: true
    health_check: {path: /hc, interval: 2s, timeout: 1s, rise: 3, fall: 4, expect: "200", host: hc.local, start: down}
    max_conns: 10
    queue: {size: 5, timeout: 2s}
routes:
  - match: {host: api.example.com, path_prefix: /v1/}
    upstream: app
  - upstream: app
log: {level: warn, access: "off", access_format: json}
admin: {listen: "127.0.0.1:9901"}
via: {upstream: true, client: false}
)";

// The effective configuration without its first line (the source) and the chain.
std::string effective(const Config& c) {
  auto d = describe_config(c);
  d = d.substr(d.find('\n') + 1);
  return d.substr(0, d.find("\n# keep-alive timeout chain"));
}

Config parse(const std::string& text) { return load_config_text(text, "t.yaml"); }

}  // namespace

TEST_CASE("every key parses the value --check prints for it, defaults included") {
  for (const char* text : {kBase, kFull}) {
    const auto first = parse(text);
    const auto printed = effective(first);
    Config again;
    REQUIRE_NOTHROW(again = parse(printed));
    CHECK(effective(again) == printed);
  }
}

TEST_CASE("--check prints every key of the reference") {
  const auto printed = effective(parse(kFull));
  const auto reference = config_reference();
  int keys = 0;
  for (std::size_t at = reference.find("\n| `"); at != std::string::npos; at = reference.find("\n| `", at + 1)) {
    auto name = reference.substr(at + 4, reference.find('`', at + 4) - at - 4);
    auto leaf = name.substr(name.rfind('.') + 1);
    ++keys;
    INFO(name);
    CHECK(printed.find(leaf + ":") != std::string::npos);
  }
  CHECK(keys > 50);
}

TEST_CASE("the reference states type, default, bounds and reload class of each key") {
  const auto ref = config_reference();
  CHECK(ref.find("| `workers` | count | `1` | 1..256 | restart |") != std::string::npos);
  CHECK(ref.find("| `upstreams.*.keepalive.idle_timeout` | duration | `50s` | > 0 | connection |") != std::string::npos);
  CHECK(ref.find("| `upstreams.*.read_timeout` | duration | `30s` | > 0 | live |") != std::string::npos);
  CHECK(ref.find("| `upstreams.*.resolve_interval` | duration | `30s` |") != std::string::npos);
  CHECK(ref.find("| `log.access_format` | one of: text, json | `text` |") != std::string::npos);
  CHECK(ref.find("| `upstreams.*.health_check.rise` | count | `2` | 1..100 | live |") != std::string::npos);
}

TEST_CASE("restart_required lists a changed restart key and no live one") {
  const auto running = parse(kBase);
  CHECK(restart_required(running, parse(kBase)).empty());
  auto changed = restart_required(running, parse(std::string(kBase) + "workers: 4\ndrain_timeout: 1s\nvia: {client: false}\n"));
  REQUIRE(changed.size() == 1);
  CHECK(changed[0].find("workers: 1 -> 4 needs a restart") == 0);
  changed = restart_required(running, parse(std::string(kBase) + "admin: {listen: \"127.0.0.1:9901\"}\nresolver: 127.0.0.1:53\n"));
  REQUIRE(changed.size() == 2);
  CHECK(changed[0].find("admin.listen: off -> 127.0.0.1:9901 needs a restart") == 0);
  CHECK(changed[1].find("resolver: [] -> [\"127.0.0.1:53\"] needs a restart") == 0);
  changed = restart_required(running, parse(std::string(kBase) + "listen_backlog: 64\nlog: {access: stderr}\n"));
  REQUIRE(changed.size() == 2);
  CHECK(changed[0].find("listen_backlog: 511 -> 64") == 0);
  CHECK(changed[1].find("log.access: stdout -> stderr") == 0);
}

TEST_CASE("same_connection_settings compares the connection keys of an upstream only") {
  const auto a = parse(kBase).upstreams[0];
  CHECK(same_connection_settings(a, a));
  CHECK_FALSE(same_connection_settings(a, parse(std::string(kBase) + "    keepalive: {idle_timeout: 20s}\n").upstreams[0]));
  CHECK_FALSE(same_connection_settings(a, parse(std::string(kBase) + "    keepalive: {max_idle: 3}\n").upstreams[0]));
  CHECK_FALSE(same_connection_settings(a, parse(std::string(kBase) + "    backend_keepalive_timeout: 60s\n").upstreams[0]));
  CHECK(same_connection_settings(a, parse(std::string(kBase) + "    read_timeout: 5s\n").upstreams[0]));
  CHECK(same_connection_settings(a, parse(std::string(kBase) + "    balance: least_conn\n    resolve_interval: 5s\n").upstreams[0]));
}

TEST_CASE("unknown keys are refused with the keys the table declares at that place") {
  auto error_of = [](const std::string& text) {
    try {
      parse(text);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  auto e = error_of(std::string(kBase) + "    keepalive: {idle: 1s}\n");
  CHECK(e.find("t.yaml:6: upstreams.app.keepalive.idle: unknown key (expected one of: max_idle, idle_timeout, max_requests, "
               "max_lifetime, margin)") == 0);
  e = error_of(std::string(kBase) + "    health_check: {paht: /}\n");
  CHECK(e.find("t.yaml:6: upstreams.app.health_check.paht: unknown key") == 0);
  e = error_of("upstreams:\n  app:\n    servers: [{address: 127.0.0.1:1, wieght: 2}]\n");
  CHECK(e.find("upstreams.app.servers[0].wieght: unknown key (expected one of: address, weight)") != std::string::npos);
  e = error_of(std::string(kBase) + "resolver: {a: 1}\n");
  CHECK(e.find("t.yaml:6: resolver: expected an address or a list of addresses (IP:port)") == 0);
  e = error_of(std::string(kBase) + "    resolve_interval: 0s\n");
  CHECK(e.find("t.yaml:6: upstreams.app.resolve_interval: must be greater than 0") == 0);
}
