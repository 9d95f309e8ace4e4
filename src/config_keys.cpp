// The schema's tables: every top-level, upstream, server and route key, its
// type, bounds, reload class and help. Balancing and health-check keys are in
// config_balancing.cpp. Order matters: it is the order of reading (a key may
// use one read before it), of `--check` and of the reference.
#include <algorithm>

#include "config_schema.hpp"

namespace holdfast {

const char* reload_name(Reload r) {
  switch (r) {
    case Reload::live: return "live";
    case Reload::restart: return "restart";
    case Reload::connection: return "connection";
  }
  return "?";
}

namespace {

using R = Reload;

std::string must_start_with_slash(const std::string& text) {
  return !text.empty() && text[0] == '/' ? "" : "must start with '/'";
}

std::string not_empty_log_target(const std::string& text) {
  return text.empty() ? "expected stdout, stderr, off or a file path" : "";
}

// `upgrade`: protocol names, lower-cased; never h2c.
struct UpgradeCodec {
  std::string type() const { return "list of protocol names"; }
  std::string bounds() const { return "not h2c"; }
  void read(const ConfigReader& r, const YAML::Node& v, const std::string& key, std::vector<std::string>& out) const {
    if (!v.IsSequence()) r.fail(v, key, "expected a list of protocol names, e.g. [websocket]");
    out.clear();
    for (std::size_t i = 0; i < v.size(); ++i) {
      const auto ikey = key + "[" + std::to_string(i) + "]";
      auto name = r.scalar(v[i], ikey);
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
      if (name.empty() || name.find_first_of(" ,/") != std::string::npos)
        r.fail(v[i], ikey, "'" + name + "' is not a protocol name (e.g. websocket)");
      if (name == "h2c") r.fail(v[i], ikey, "h2c cannot be tunnelled: the upstream leg is HTTP/1.1");
      out.push_back(name);
    }
  }
  std::optional<std::string> show(const std::vector<std::string>& v) const {
    std::string out;
    for (const auto& p : v) out += (out.empty() ? "" : ", ") + p;
    return "[" + out + "]";
  }
};

template <class S>
Key<S> custom(std::string name, std::string type, Reload reload, std::string help,
              decltype(Key<S>::read) read, decltype(Key<S>::show) show) {
  Key<S> k;
  k.name = std::move(name);
  k.type = std::move(type);
  k.reload = reload;
  k.help = std::move(help);
  k.read = std::move(read);
  k.show = std::move(show);
  return k;
}

std::vector<Key<Config>> make_top_keys() {
  using S = Config;
  const DurationCodec any_duration{false}, duration{true};
  std::vector<Key<S>> k{
      row<S>("listen", EndpointsCodec{true, true, "expected an address or a list of addresses"}, HF_FIELD(listen), R::live,
             "Addresses the proxy listens on; port 0 lets the kernel choose."),
      row<S>("listen_backlog", CountCodec{1, 65535}, HF_FIELD(listen_backlog), R::restart,
             "Accept queue of each listening socket; the kernel caps it at net.core.somaxconn (see \"Listening sockets\")."),
      row<S>("workers", CountCodec{1, 256}, HF_FIELD(workers), R::restart,
             "Event loops (threads), each with its own listening sockets and pools."),
      row<S>("drain_timeout", any_duration, HF_FIELD(drain_timeout), R::live,
             "On SIGTERM/SIGINT: how long in-flight exchanges may take before they are closed."),
      row<S>("splice_min_body", SizeCodec{}, HF_FIELD(splice_min_body), R::live,
             "Bodies with a Content-Length of at least this, and close-delimited responses to HTTP/1.0 clients, move "
             "socket to socket with splice(2) instead of through buffers; 0: never (see \"Large bodies without copies\")."),
      row<S>("client.keepalive_timeout", duration, HF_FIELD(client.keepalive_timeout), R::live,
             "Idle time allowed between requests on a client connection, advertised as Keep-Alive: timeout=N; "
             "must be >= front_idle_timeout + margin, and is derived from them when left out."),
      row<S>("client.keepalive_grace", any_duration, HF_FIELD(client.keepalive_grace), R::live,
             "An idle client connection closes keepalive_timeout + keepalive_grace after its last response."),
      row<S>("client.keepalive_requests", CountCodec{1, 1ULL << 40}, HF_FIELD(client.keepalive_requests), R::live,
             "Requests per client connection; the connection is closed after the last one's response."),
      row<S>("client.header_timeout", duration, HF_FIELD(client.header_timeout), R::live,
             "A request head must arrive in full within this (408)."),
      row<S>("client.body_timeout", duration, HF_FIELD(client.body_timeout), R::live,
             "Longest pause while reading a request body."),
      row<S>("client.send_timeout", duration, HF_FIELD(client.send_timeout), R::live,
             "Longest pause while the client is not reading."),
      row<S>("client.max_header_bytes", SizeCodec{1024, 1024 * 1024}, HF_FIELD(client.max_header_bytes), R::live,
             "Request line and fields; 431 (or 414 for the target) above it."),
      row<S>("client.front_idle_timeout", any_duration, HF_FIELD(client.front_idle_timeout), R::live,
             "Idle timeout of a load balancer in front of holdfast, when known."),
      row<S>("client.margin", any_duration, HF_FIELD(client.margin), R::live,
             "Gap kept between front_idle_timeout and keepalive_timeout."),
      custom<S>("upstreams", "mapping of group names to upstreams", R::live,
                "The upstream groups, by name; each is described by the upstreams.* keys below.",
                [](const ConfigReader& r, const YAML::Node& n, const std::string& key, S& c) {
                  if (!n.IsMap() || n.size() == 0) r.fail(n, key, "expected a mapping of group names to groups");
                  for (const auto& kv : n) c.upstreams.push_back(load_upstream(r, kv.first.as<std::string>(), kv.second));
                },
                [](const S& c, int indent) -> std::optional<std::string> {
                  std::string out = "\n";
                  for (const auto& u : c.upstreams)
                    out += std::string(indent, ' ') + u.name + ":\n" + describe_keys(upstream_keys(), u, indent + 2);
                  return out;
                }),
      custom<S>("routes", "list of routes", R::live,
                "Checked in order, first match wins; each is described by the routes[] keys below. May be left out "
                "when there is one upstream group.",
                [](const ConfigReader& r, const YAML::Node& n, const std::string& key, S& c) {
                  if (!n.IsSequence() || n.size() == 0) r.fail(n, key, "expected a list of routes");
                  for (std::size_t i = 0; i < n.size(); ++i)
                    c.routes.push_back(load_route(r, n[i], key + "[" + std::to_string(i) + "]", c));
                },
                [](const S& c, int indent) -> std::optional<std::string> {
                  std::string out = "\n";
                  for (const auto& rt : c.routes) {
                    // The block's first key, indented by indent + 2, becomes the list item.
                    const auto block = describe_keys(route_keys(), rt, indent + 2);
                    const auto at = static_cast<std::size_t>(indent);
                    out.append(block, 0, at).append("- ").append(block, at + 2);
                  }
                  return out;
                }),
      row<S>("log.level", WordsCodec<std::string>{{{"trace", "trace"}, {"debug", "debug"}, {"info", "info"}, {"warn", "warn"},
                                                   {"error", "error"}, {"critical", "critical"}, {"off", "off"}}, "level"},
             HF_FIELD(log.level), R::live, "Level of the diagnostic log (stderr)."),
      row<S>("log.access", StringCodec{not_empty_log_target}, HF_FIELD(log.access), R::restart,
             "Access log: stdout, stderr, off, or a file path."),
      row<S>("log.access_format", WordsCodec<AccessFormat>{{{"text", AccessFormat::text}, {"json", AccessFormat::json}}, "format"},
             HF_FIELD(log.access_format), R::live, "text, or json: one object per line."),
      row<S>("admin.listen", EndpointCodec{true}, HF_FIELD(admin.listen), R::restart,
             "Address of the admin listener (/metrics, /status, /, /ready, /live); off when admin is left out; "
             "never the proxy's port."),
      row<S>("via.upstream", BoolCodec{}, HF_FIELD(via.upstream), R::live,
             "Add Via: 1.1 holdfast to requests sent to backends (see \"Via\")."),
      row<S>("via.client", BoolCodec{}, HF_FIELD(via.client), R::live, "Add Via: 1.1 holdfast to responses sent to clients."),
      row<S>("reload_on_change", BoolCodec{}, HF_FIELD(reload_on_change), R::live,
             "Reload when the config file, or the directory holding it (Kubernetes ConfigMap symlink swaps), changes, "
             "as on SIGHUP."),
      row<S>("resolver", EndpointsCodec{false, false, "expected an address or a list of addresses (IP:port)"}, HF_FIELD(resolver),
             R::restart, "DNS servers for upstream host names (IP:port); empty: the system's (/etc/resolv.conf)."),
  };
  for (auto& key : k) {
    if (key.name == "listen") key.default_text = "`[\"0.0.0.0:8080\"]`";
    if (key.name == "client.front_idle_timeout") key.unset = "unknown";
    if (key.name == "upstreams") key.required = "is required (at least one upstream group)";
    if (key.name == "routes") key.default_text = "one route / to the only upstream";
    if (key.name == "admin.listen") {
      key.unset = "off";
      key.default_text = "off; required when admin is set";
      key.required = "is required when admin is set (e.g. 127.0.0.1:9901)";
    }
  }
  return k;
}

std::vector<Key<UpstreamConfig>> make_upstream_keys() {
  using S = UpstreamConfig;
  const DurationCodec any_duration{false}, duration{true};
  std::vector<Key<S>> k{
      custom<S>("servers", "list of addresses or {address, weight}", R::live,
                "The group's servers; each is an address or a mapping of the upstreams.*.servers[] keys below.",
                [](const ConfigReader& r, const YAML::Node& n, const std::string& key, S& u) {
                  if (!n.IsSequence() || n.size() == 0) r.fail(n, key, "expected a list of servers");
                  for (std::size_t i = 0; i < n.size(); ++i) {
                    const auto skey = key + "[" + std::to_string(i) + "]";
                    ServerEntry e;
                    if (n[i].IsScalar()) e.address = r.endpoint(n[i], skey, false);
                    else read_keys(r, n[i], skey, server_keys(), e);
                    u.servers.push_back(*e.address);
                    u.balancing.weights.push_back(e.weight);
                  }
                },
                [](const S& u, int indent) -> std::optional<std::string> {
                  std::string out = "\n";
                  for (std::size_t i = 0; i < u.servers.size(); ++i)
                    out += std::string(indent, ' ') + "- {address: " + u.servers[i].text +
                           ", weight: " + std::to_string(u.balancing.weights[i]) + "}\n";
                  return out;
                }),
      row<S>("connect_timeout", duration, HF_FIELD(connect_timeout), R::live, "Connecting to a server; 504 when exceeded."),
      row<S>("send_timeout", duration, HF_FIELD(send_timeout), R::live, "Longest pause while the server is not reading."),
      row<S>("read_timeout", duration, HF_FIELD(read_timeout), R::live,
             "Longest pause while waiting for response bytes; 504."),
      row<S>("backend_keepalive_timeout", duration, HF_FIELD(backend_keepalive_timeout), R::connection,
             "The backend's own idle timeout, when known; idle_timeout + keepalive.margin must not exceed it."),
      row<S>("keepalive.max_idle", CountCodec{0, 100000}, HF_FIELD(keepalive.max_idle), R::connection,
             "Idle pooled connections per server, per worker."),
      row<S>("keepalive.idle_timeout", duration, HF_FIELD(keepalive.idle_timeout), R::connection,
             "How long a pooled connection may stay idle; must be <= backend_keepalive_timeout - margin, and is "
             "derived from it when left out."),
      row<S>("keepalive.max_requests", CountCodec{1, 1ULL << 40}, HF_FIELD(keepalive.max_requests), R::connection,
             "Requests per upstream connection."),
      row<S>("keepalive.max_lifetime", duration, HF_FIELD(keepalive.max_lifetime), R::connection,
             "Age after which an upstream connection is not reused."),
      row<S>("keepalive.margin", any_duration, HF_FIELD(keepalive.margin), R::connection,
             "How long before the backend's idle deadline holdfast gives up a pooled connection."),
      row<S>("retry_buffer", SizeCodec{}, HF_FIELD(retry_buffer), R::live,
             "Request bytes (head and body) kept so that a request can be sent again; a longer request is not retried."),
      row<S>("upgrade", UpgradeCodec{}, HF_FIELD(upgrade), R::live,
             "Protocols a client may switch to with Upgrade (101); [] for none; never h2c."),
      row<S>("tunnel_timeout", duration, HF_FIELD(tunnel_timeout), R::live,
             "Idle time after which an upgraded connection (a tunnel) is closed; replaces read_timeout."),
      row<S>("resolve_interval", duration, HF_FIELD(resolve_interval), R::live,
             "How often server host names are resolved again; unused when every address is a literal IP."),
  };
  for (auto& key : k) {
    if (key.name == "servers") key.required = "is required (at least one server)";
    if (key.name == "backend_keepalive_timeout") key.unset = "unknown";
  }
  auto more = balancing_keys();
  k.insert(k.end(), more.begin(), more.end());
  return k;
}

}  // namespace

const std::vector<Key<Config>>& top_keys() {
  static const auto keys = make_top_keys();
  return keys;
}

const std::vector<Key<UpstreamConfig>>& upstream_keys() {
  static const auto keys = make_upstream_keys();
  return keys;
}

const std::vector<Key<ServerEntry>>& server_keys() {
  using S = ServerEntry;
  static const std::vector<Key<S>> keys = [] {
    std::vector<Key<S>> k{
        row<S>("address", EndpointCodec{false}, HF_FIELD(address), R::live, "The server's address (host:port)."),
        row<S>("weight", CountCodec{1, 1000}, HF_FIELD(weight), R::live,
               "Share of requests relative to the group's other servers."),
    };
    k[0].required = "is required";
    return k;
  }();
  return keys;
}

const std::vector<Key<RouteConfig>>& route_keys() {
  using S = RouteConfig;
  static const std::vector<Key<S>> keys = [] {
    std::vector<Key<S>> k{
        row<S>("match.host", StringCodec{}, HF_FIELD(host), R::live, "Host to match, exactly, case-insensitive, port ignored."),
        row<S>("match.path_prefix", StringCodec{must_start_with_slash}, HF_FIELD(path_prefix), R::live,
               "Path prefix to match."),
        row<S>("upstream", StringCodec{}, HF_FIELD(upstream), R::live, "Name of the upstream group that serves the route."),
    };
    k[0].unset = "any";
    k[2].required = "is required";
    return k;
  }();
  return keys;
}

}  // namespace holdfast
