// The validated configuration: plain structs built once from YAML by
// load_config() and then shared read-only by every worker. Nothing else in
// holdfast reads YAML. Exceptions (ConfigError) are used here only: loading
// config is the one place where failing loudly and early is the right answer.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "holdfast/duration.hpp"

namespace holdfast {

// Carries "FILE:LINE: KEY: what was expected" so an operator can go straight
// to the mistake.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Whether a value was written by the operator or filled in by holdfast;
// `--check` prints it beside each timeout of the chain.
enum class Origin { declared, defaulted, derived };

struct TimeoutValue {
  Millis value{0};
  Origin origin = Origin::defaulted;
};

struct Endpoint {
  std::string host;   // literal IPv4 or IPv6 address, or a name resolved at startup
  std::uint16_t port = 0;
  std::string text;   // as written, for logs
};

struct ClientConfig {
  TimeoutValue keepalive_timeout{Millis(75'000)};
  // An idle client connection is closed keepalive_timeout + keepalive_grace
  // after its last response, while Keep-Alive: timeout= states
  // keepalive_timeout alone: a client that honours the hint gives up first
  // and never sends a request into holdfast's close.
  Millis keepalive_grace{1000};
  std::uint64_t keepalive_requests = 1000;
  Millis header_timeout{10'000};
  Millis body_timeout{60'000};
  Millis send_timeout{60'000};
  std::uint64_t max_header_bytes = 16 * 1024;
  // Idle timeout of a load balancer in front of holdfast, when known.
  std::optional<Millis> front_idle_timeout;
  // Gap kept between the front's idle timeout and keepalive_timeout.
  TimeoutValue margin{Millis(1000)};
};

struct KeepaliveConfig {
  // Room for a burst: with fewer idle slots than concurrent requests, every
  // burst closes connections that the next one must open again.
  std::uint32_t max_idle = 256;
  TimeoutValue idle_timeout{Millis(50'000)};
  // Default far above nginx's 1000 so that steady traffic does not churn.
  std::uint64_t max_requests = 1'000'000;
  Millis max_lifetime{3'600'000};
  // Safety gap kept between our idle deadline and the backend's.
  Millis margin{1000};
};

enum class BalancePolicy { round_robin, least_conn, random_two, hash };

// What `balance: hash` hashes: a request header, a cookie or the client's address.
struct HashKey {
  enum class Kind { header, cookie, client_ip };
  Kind kind = Kind::client_ip;
  std::string name;   // header or cookie name; empty for client_ip
};

// Active health checks of an upstream's servers (off unless configured).
struct HealthCheckConfig {
  std::string path = "/";
  Millis interval{5000};
  Millis timeout{2000};
  unsigned rise = 2;             // consecutive passes that bring a down server up
  unsigned fall = 3;             // consecutive failures that take an up server down
  int expect_min = 200;          // a status in [expect_min, expect_max] passes
  int expect_max = 399;
  std::string host;              // Host field of the check; the server's address when empty
  bool start_down = false;       // servers start down until `rise` checks pass
};

// Requests waiting for a connection slot when every eligible server is at max_conns.
struct QueueConfig {
  std::uint32_t size = 0;        // 0: no queue, 503 at once
  Millis timeout{5000};
};

// How an upstream's servers are chosen, when one is out, and how a failed
// attempt moves on (see balancer.hpp and health.hpp).
struct BalancingConfig {
  BalancePolicy policy = BalancePolicy::round_robin;
  HashKey hash_key;
  std::vector<unsigned> weights;       // per server, parallel to UpstreamConfig::servers
  unsigned retries = 1;                // further attempts on other servers after an unsent failure
  Origin retries_origin = Origin::defaulted;
  Millis retry_timeout{10'000};        // no new attempt starts later than this after the request head
  unsigned max_fails = 1;              // consecutive failures that eject a server; 0: never
  Millis fail_timeout{10'000};         // first ejection; doubles on each repeat
  Millis fail_timeout_max{300'000};    // cap of the doubling
  bool fail_on_5xx = false;            // a 5xx answer counts as a failure too
  std::optional<HealthCheckConfig> health_check;
  std::uint32_t max_conns = 0;         // active connections per server (all workers); 0: no limit
  QueueConfig queue;
};

struct UpstreamConfig {
  std::string name;
  std::vector<Endpoint> servers;
  BalancingConfig balancing;
  KeepaliveConfig keepalive;
  std::optional<Millis> backend_keepalive_timeout;
  Millis connect_timeout{2000};
  Millis send_timeout{30'000};
  Millis read_timeout{30'000};
  // Request bytes (head plus body) kept so that a request can be sent again
  // on a fresh connection; a longer body makes the request non-retryable.
  std::uint64_t retry_buffer = 64 * 1024;
  // Protocols a client may switch to with Upgrade (lower case, e.g.
  // "websocket"); others are stripped like any hop-by-hop field. h2c is
  // never tunnelled: the upstream leg is HTTP/1.1.
  std::vector<std::string> upgrade{"websocket"};
  // Idle time after which a tunnel (after 101 Switching Protocols) is closed.
  Millis tunnel_timeout{3'600'000};
  // How often server host names are resolved again (every address a name
  // resolves to is a server of the group); unused when every server address
  // is a literal IP.
  Millis resolve_interval{30'000};
};

struct RouteConfig {
  std::optional<std::string> host;  // exact match, case-insensitive, port ignored
  std::string path_prefix = "/";
  std::string upstream;
  std::size_t upstream_index = 0;   // resolved by load_config
};

enum class AccessFormat { text, json };

struct LogConfig {
  std::string level = "info";
  std::string access = "stdout";    // "stdout", "stderr", "off" or a file path
  AccessFormat access_format = AccessFormat::text;
};

// Where holdfast adds `Via: 1.1 holdfast`. Off towards backends by default:
// nginx (gzip_proxied off, its default) does not compress an answer to a
// request that carries Via, which costs clients several times the bytes.
struct ViaConfig {
  bool upstream = false;  // requests sent to backends
  bool client = true;     // responses sent to clients
};

// The admin listener (/metrics, /status, /, /ready, /live): off unless set.
struct AdminConfig {
  std::optional<Endpoint> listen;
};

struct Config {
  std::string source;               // file the config came from
  std::vector<Endpoint> listen;
  // listen() backlog of every listening socket (one per address per worker).
  // 511 as nginx's NGX_LISTEN_BACKLOG on Linux; the kernel caps it at
  // net.core.somaxconn.
  int listen_backlog = 511;
  unsigned workers = 1;
  Millis drain_timeout{10'000};
  ClientConfig client;
  std::vector<UpstreamConfig> upstreams;
  std::vector<RouteConfig> routes;
  LogConfig log;
  AdminConfig admin;
  ViaConfig via;
  // Reload when the config file (or the directory holding it, for
  // Kubernetes ConfigMap symlink swaps) changes, as on SIGHUP.
  bool reload_on_change = false;
  // Message bodies at least this long (Content-Length), and close-delimited
  // response bodies, move socket to socket with splice(2); 0: never.
  std::uint64_t splice_min_body = 64 * 1024;
  // DNS servers for upstream host names ("127.0.0.1:5353"); empty: the
  // system's (/etc/resolv.conf).
  std::vector<Endpoint> resolver;
};

// Each key is declared once, in the schema of the config module
// (src/config_keys.cpp), with its reload class; the three functions below
// are generated from it.

// Settings of `next` that differ from `running` and cannot change while
// holdfast runs (the `restart` class): one "KEY: OLD -> NEW needs a restart"
// message each; empty when a reload may apply.
std::vector<std::string> restart_required(const Config& running, const Config& next);

// False when a key of the `connection` class (keepalive.*,
// backend_keepalive_timeout) differs: the pools of that upstream cannot be
// kept across a reload from `a` to `b`. Servers and names are not compared.
bool same_connection_settings(const UpstreamConfig& a, const UpstreamConfig& b);

// Every key as Markdown tables (name, type, default, bounds, reload class,
// help): `holdfast --config-reference`, and the README's reference.
std::string config_reference();

// Loads and validates; throws ConfigError naming file, line, key and rule.
Config load_config(const std::string& path);
// Same, from text (tests); `source` names it in messages.
Config load_config_text(const std::string& text, const std::string& source);

// The effective configuration, as YAML (every key, unset ones as comments),
// followed by the timeout chain hop by
// hop with each timeout marked declared, defaulted, derived or unknown.
std::string describe_config(const Config& config);

}  // namespace holdfast
