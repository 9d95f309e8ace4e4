// YAML -> Config. yaml-cpp is included by the config module alone (this
// file, config_balancing.cpp and their private config_loader.hpp).
#include "holdfast/config.hpp"

#include <yaml-cpp/yaml.h>

#include "config_loader.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

namespace holdfast {

namespace {

class Loader : public ConfigReader {
 public:
  using ConfigReader::ConfigReader;

  Config load(const YAML::Node& root) {
    Config c;
    c.source = source_;
    if (root.IsNull()) fail(root, "(top level)", "the file is empty");
    expect_map(root, "", {"listen", "listen_backlog", "workers", "drain_timeout", "client", "upstreams", "routes", "log", "admin", "via",
                      "reload_on_change", "resolver", "splice_min_body"});

    if (auto n = root["listen"]) {
      if (n.IsScalar()) c.listen.push_back(endpoint(n, "listen", true));
      else if (n.IsSequence()) {
        for (std::size_t i = 0; i < n.size(); ++i) c.listen.push_back(endpoint(n[i], "listen[" + std::to_string(i) + "]", true));
      } else fail(n, "listen", "expected an address or a list of addresses");
      if (c.listen.empty()) fail(n, "listen", "expected at least one address");
    } else {
      c.listen.push_back(Endpoint{"0.0.0.0", 8080, "0.0.0.0:8080"});
    }
    if (auto n = root["listen_backlog"]) c.listen_backlog = static_cast<int>(count(n, "listen_backlog", 1, 65535));
    if (auto n = root["workers"]) c.workers = static_cast<unsigned>(count(n, "workers", 1, 256));
    if (auto n = root["drain_timeout"]) c.drain_timeout = duration(n, "drain_timeout");
    if (auto n = root["reload_on_change"]) c.reload_on_change = boolean(n, "reload_on_change");
    if (auto n = root["splice_min_body"]) c.splice_min_body = size(n, "splice_min_body");
    if (auto n = root["resolver"]) {
      if (n.IsScalar()) c.resolver.push_back(endpoint(n, "resolver", false));
      else if (n.IsSequence()) {
        for (std::size_t i = 0; i < n.size(); ++i) c.resolver.push_back(endpoint(n[i], "resolver[" + std::to_string(i) + "]", false));
      } else fail(n, "resolver", "expected an address or a list of addresses (IP:port)");
    }

    load_client(root["client"], c.client);

    auto ups = root["upstreams"];
    if (!ups) fail(root, "upstreams", "is required (at least one upstream group)");
    if (!ups.IsMap() || ups.size() == 0) fail(ups, "upstreams", "expected a mapping of group names to groups");
    for (const auto& kv : ups) c.upstreams.push_back(load_upstream(kv.first.as<std::string>(), kv.second));

    auto routes = root["routes"];
    if (!routes) {
      if (c.upstreams.size() != 1)
        fail(root, "routes", "is required when there is more than one upstream group");
      RouteConfig r;
      r.upstream = c.upstreams[0].name;
      c.routes.push_back(r);
    } else {
      if (!routes.IsSequence() || routes.size() == 0) fail(routes, "routes", "expected a list of routes");
      for (std::size_t i = 0; i < routes.size(); ++i) c.routes.push_back(load_route(routes[i], "routes[" + std::to_string(i) + "]", c));
    }

    if (auto n = root["log"]) {
      expect_map(n, "log", {"level", "access", "access_format"});
      if (auto l = n["level"]) {
        c.log.level = scalar(l, "log.level");
        static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error", "critical", "off"};
        if (!levels.count(c.log.level)) fail(l, "log.level", "'" + c.log.level + "' is not a level (expected trace, debug, info, warn, error, critical or off)");
      }
      if (auto a = n["access"]) c.log.access = scalar(a, "log.access");
      if (c.log.access.empty()) fail(n["access"], "log.access", "expected stdout, stderr, off or a file path");
      if (auto f = n["access_format"]) {
        auto format = scalar(f, "log.access_format");
        if (format == "text") c.log.access_format = AccessFormat::text;
        else if (format == "json") c.log.access_format = AccessFormat::json;
        else fail(f, "log.access_format", "'" + format + "' is not a format (expected text or json)");
      }
    }
    if (auto n = root["via"]) {
      expect_map(n, "via", {"upstream", "client"});
      if (auto v = n["upstream"]) c.via.upstream = boolean(v, "via.upstream");
      if (auto v = n["client"]) c.via.client = boolean(v, "via.client");
    }
    if (auto n = root["admin"]) {
      expect_map(n, "admin", {"listen"});
      if (auto l = n["listen"]) c.admin.listen = endpoint(l, "admin.listen", true);
      else fail(n, "admin.listen", "is required when admin is set (e.g. 127.0.0.1:9901)");
      for (const auto& ep : c.listen)
        if (c.admin.listen->port != 0 && ep.port == c.admin.listen->port)
          fail(n["listen"], "admin.listen", "must not share the proxy's port " + std::to_string(ep.port));
    }
    return c;
  }

  void load_client(const YAML::Node& n, ClientConfig& cc) {
    if (!n) return;
    expect_map(n, "client", {"keepalive_timeout", "keepalive_requests", "header_timeout", "body_timeout",
                             "send_timeout", "max_header_bytes", "front_idle_timeout", "margin",
                             "keepalive_grace"});
    if (auto v = n["keepalive_timeout"]) cc.keepalive_timeout = {duration(v, "client.keepalive_timeout"), Origin::declared};
    if (auto v = n["keepalive_grace"]) cc.keepalive_grace = duration(v, "client.keepalive_grace");
    if (auto v = n["keepalive_requests"]) cc.keepalive_requests = count(v, "client.keepalive_requests", 1, 1ULL << 40);
    if (auto v = n["header_timeout"]) cc.header_timeout = positive(v, "client.header_timeout");
    if (auto v = n["body_timeout"]) cc.body_timeout = positive(v, "client.body_timeout");
    if (auto v = n["send_timeout"]) cc.send_timeout = positive(v, "client.send_timeout");
    if (auto v = n["max_header_bytes"]) {
      cc.max_header_bytes = size(v, "client.max_header_bytes");
      if (cc.max_header_bytes < 1024 || cc.max_header_bytes > 1024 * 1024)
        fail(v, "client.max_header_bytes", "must be between 1k and 1m");
    }
    if (auto v = n["margin"]) cc.margin = {duration(v, "client.margin"), Origin::declared};
    const Millis margin = cc.margin.value;
    if (auto v = n["front_idle_timeout"]) {
      cc.front_idle_timeout = duration(v, "client.front_idle_timeout");
      Millis needed = *cc.front_idle_timeout + margin;
      if (cc.keepalive_timeout.origin == Origin::declared) {
        if (cc.keepalive_timeout.value < needed)
          fail(n["keepalive_timeout"], "client.keepalive_timeout",
               "timeout order broken: client.keepalive_timeout (" + format_duration(cc.keepalive_timeout.value) +
                   ") must be >= client.front_idle_timeout (" + format_duration(*cc.front_idle_timeout) +
                   ") + client.margin (" + format_duration(margin) +
                   "): the load balancer in front must give up on an idle connection before holdfast does, "
                   "or it will send a request just as holdfast closes; fix: set client.keepalive_timeout to at least " +
                   format_duration(needed));
      } else if (cc.keepalive_timeout.value < needed) {
        cc.keepalive_timeout = {needed, Origin::derived};
      }
    }
    if (cc.keepalive_timeout.value.count() == 0)
      fail(n["keepalive_timeout"], "client.keepalive_timeout", "must be greater than 0");
  }

  UpstreamConfig load_upstream(const std::string& name, const YAML::Node& n) {
    UpstreamConfig u;
    u.name = name;
    std::string key = "upstreams." + name;
    std::vector<const char*> allowed{"servers", "keepalive", "backend_keepalive_timeout", "connect_timeout",
                                     "send_timeout", "read_timeout", "retry_buffer", "upgrade", "tunnel_timeout", "resolve_interval"};
    allowed.insert(allowed.end(), kBalancingKeys.begin(), kBalancingKeys.end());
    expect_map(n, key, allowed);
    auto servers = n["servers"];
    if (!servers) fail(n, key + ".servers", "is required (at least one server)");
    if (!servers.IsSequence() || servers.size() == 0) fail(servers, key + ".servers", "expected a list of servers");
    for (std::size_t i = 0; i < servers.size(); ++i) {
      std::string skey = key + ".servers[" + std::to_string(i) + "]";
      auto s = servers[i];
      if (s.IsScalar()) {
        u.servers.push_back(endpoint(s, skey, false));
      } else {
        expect_map(s, skey, {"address", "weight"});
        if (!s["address"]) fail(s, skey + ".address", "is required");
        u.servers.push_back(endpoint(s["address"], skey + ".address", false));
      }
      load_server_extras(*this, s, skey, u);
    }
    load_balancing(*this, n, key, u);
    if (auto v = n["connect_timeout"]) u.connect_timeout = positive(v, key + ".connect_timeout");
    if (auto v = n["send_timeout"]) u.send_timeout = positive(v, key + ".send_timeout");
    if (auto v = n["read_timeout"]) u.read_timeout = positive(v, key + ".read_timeout");
    if (auto v = n["retry_buffer"]) u.retry_buffer = size(v, key + ".retry_buffer");
    if (auto v = n["tunnel_timeout"]) u.tunnel_timeout = positive(v, key + ".tunnel_timeout");
    if (auto v = n["resolve_interval"]) u.resolve_interval = positive(v, key + ".resolve_interval");
    if (auto v = n["upgrade"]) {
      if (!v.IsSequence()) fail(v, key + ".upgrade", "expected a list of protocol names, e.g. [websocket]");
      u.upgrade.clear();
      for (std::size_t i = 0; i < v.size(); ++i) {
        auto name = scalar(v[i], key + ".upgrade[" + std::to_string(i) + "]");
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
        if (name.empty() || name.find_first_of(" ,/") != std::string::npos)
          fail(v[i], key + ".upgrade[" + std::to_string(i) + "]", "'" + name + "' is not a protocol name (e.g. websocket)");
        if (name == "h2c")
          fail(v[i], key + ".upgrade[" + std::to_string(i) + "]",
               "h2c cannot be tunnelled: the upstream leg is HTTP/1.1");
        u.upgrade.push_back(name);
      }
    }
    if (auto v = n["backend_keepalive_timeout"]) u.backend_keepalive_timeout = positive(v, key + ".backend_keepalive_timeout");

    auto& ka = u.keepalive;
    auto kan = n["keepalive"];
    if (kan) {
      std::string kkey = key + ".keepalive";
      expect_map(kan, kkey, {"max_idle", "idle_timeout", "max_requests", "max_lifetime", "margin"});
      if (auto v = kan["max_idle"]) ka.max_idle = static_cast<std::uint32_t>(count(v, kkey + ".max_idle", 0, 100000));
      if (auto v = kan["idle_timeout"]) ka.idle_timeout = {positive(v, kkey + ".idle_timeout"), Origin::declared};
      if (auto v = kan["max_requests"]) ka.max_requests = count(v, kkey + ".max_requests", 1, 1ULL << 40);
      if (auto v = kan["max_lifetime"]) ka.max_lifetime = positive(v, kkey + ".max_lifetime");
      if (auto v = kan["margin"]) ka.margin = duration(v, kkey + ".margin");
    }
    if (u.backend_keepalive_timeout) {
      Millis backend = *u.backend_keepalive_timeout;
      if (ka.margin >= backend)
        fail(kan && kan["margin"] ? kan["margin"] : n["backend_keepalive_timeout"], key + ".keepalive.margin",
             "timeout order broken: keepalive.margin (" + format_duration(ka.margin) +
                 ") must be below backend_keepalive_timeout (" + format_duration(backend) +
                 "), or no idle connection could ever be reused; fix: lower keepalive.margin");
      Millis ceiling = backend - ka.margin;
      if (ka.idle_timeout.origin == Origin::declared) {
        if (ka.idle_timeout.value > ceiling)
          fail(kan["idle_timeout"], key + ".keepalive.idle_timeout",
               "timeout order broken: keepalive.idle_timeout (" + format_duration(ka.idle_timeout.value) +
                   ") + keepalive.margin (" + format_duration(ka.margin) + ") must be <= backend_keepalive_timeout (" +
                   format_duration(backend) +
                   "): holdfast must give up on an idle pooled connection before the backend closes it, or a "
                   "request will be sent just as the backend closes (the intermittent 502); fix: set "
                   "keepalive.idle_timeout to at most " + format_duration(ceiling) + " or remove it to derive it");
      } else {
        ka.idle_timeout = {std::min(ka.idle_timeout.value, ceiling), Origin::derived};
      }
    }
    return u;
  }

  RouteConfig load_route(const YAML::Node& n, const std::string& key, const Config& c) {
    expect_map(n, key, {"match", "upstream"});
    RouteConfig r;
    if (auto m = n["match"]) {
      expect_map(m, key + ".match", {"host", "path_prefix"});
      if (auto h = m["host"]) r.host = scalar(h, key + ".match.host");
      if (auto p = m["path_prefix"]) {
        r.path_prefix = scalar(p, key + ".match.path_prefix");
        if (r.path_prefix.empty() || r.path_prefix[0] != '/') fail(p, key + ".match.path_prefix", "must start with '/'");
      }
    }
    auto up = n["upstream"];
    if (!up) fail(n, key + ".upstream", "is required");
    r.upstream = scalar(up, key + ".upstream");
    auto it = std::find_if(c.upstreams.begin(), c.upstreams.end(), [&](const UpstreamConfig& u) { return u.name == r.upstream; });
    if (it == c.upstreams.end()) fail(up, key + ".upstream", "names upstream '" + r.upstream + "', which is not defined under upstreams");
    r.upstream_index = static_cast<std::size_t>(it - c.upstreams.begin());
    return r;
  }

};

Config load_from_node_or_text(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(source + ":" + std::to_string(e.mark.line + 1) + ": (syntax): " + e.msg);
  }
  try {
    return Loader(source).load(root);
  } catch (const YAML::Exception& e) {
    throw ConfigError(source + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
}

const char* origin_name(Origin o) {
  switch (o) {
    case Origin::declared: return "declared";
    case Origin::defaulted: return "defaulted";
    case Origin::derived: return "derived";
  }
  return "?";
}

}  // namespace

Config load_config_text(const std::string& text, const std::string& source) {
  return load_from_node_or_text(text, source);
}

Config load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open the file");
  std::stringstream buf;
  buf << in.rdbuf();
  return load_from_node_or_text(buf.str(), path);
}

namespace {
std::string endpoints_text(const std::vector<Endpoint>& list) {
  std::string out;
  for (const auto& e : list) out += (out.empty() ? "" : ", ") + e.text;
  return out.empty() ? "(none)" : out;
}
}  // namespace

std::vector<std::string> restart_required(const Config& running, const Config& next) {
  std::vector<std::string> out;
  auto differs = [&](const char* key, const std::string& was, const std::string& now) {
    if (was != now) out.push_back(std::string(key) + ": " + was + " -> " + now + " needs a restart (it cannot change while holdfast runs)");
  };
  differs("workers", std::to_string(running.workers), std::to_string(next.workers));
  differs("listen_backlog", std::to_string(running.listen_backlog), std::to_string(next.listen_backlog));
  differs("admin.listen", running.admin.listen ? running.admin.listen->text : "(off)",
          next.admin.listen ? next.admin.listen->text : "(off)");
  differs("log.access", running.log.access, next.log.access);
  differs("resolver", endpoints_text(running.resolver), endpoints_text(next.resolver));
  return out;
}

std::string describe_config(const Config& c) {
  std::ostringstream o;
  o << "# effective configuration of " << c.source << "\n";
  o << "listen: [";
  for (std::size_t i = 0; i < c.listen.size(); ++i) o << (i ? ", " : "") << '"' << c.listen[i].text << '"';
  o << "]\nlisten_backlog: " << c.listen_backlog << "\nworkers: " << c.workers << "\ndrain_timeout: " << format_duration(c.drain_timeout) << "\n";
  o << "splice_min_body: " << (c.splice_min_body ? format_size(c.splice_min_body) : std::string("0  # off")) << "\n";
  const auto& cl = c.client;
  o << "client:\n"
    << "  keepalive_timeout: " << format_duration(cl.keepalive_timeout.value) << "\n"
    << "  keepalive_grace: " << format_duration(cl.keepalive_grace) << "\n"
    << "  keepalive_requests: " << cl.keepalive_requests << "\n"
    << "  header_timeout: " << format_duration(cl.header_timeout) << "\n"
    << "  body_timeout: " << format_duration(cl.body_timeout) << "\n"
    << "  send_timeout: " << format_duration(cl.send_timeout) << "\n"
    << "  max_header_bytes: " << format_size(cl.max_header_bytes) << "\n";
  if (cl.front_idle_timeout) o << "  front_idle_timeout: " << format_duration(*cl.front_idle_timeout) << "\n";
  o << "  margin: " << format_duration(cl.margin.value) << "\n";
  o << "upstreams:\n";
  for (const auto& u : c.upstreams) {
    o << "  " << u.name << ":\n    servers:\n";
    for (std::size_t i = 0; i < u.servers.size(); ++i)
      o << "      - {address: " << u.servers[i].text << ", weight: " << u.balancing.weights[i] << "}\n";
    o << "    keepalive:\n"
      << "      max_idle: " << u.keepalive.max_idle << "\n"
      << "      idle_timeout: " << format_duration(u.keepalive.idle_timeout.value) << "\n"
      << "      max_requests: " << u.keepalive.max_requests << "\n"
      << "      max_lifetime: " << format_duration(u.keepalive.max_lifetime) << "\n"
      << "      margin: " << format_duration(u.keepalive.margin) << "\n";
    if (u.backend_keepalive_timeout) o << "    backend_keepalive_timeout: " << format_duration(*u.backend_keepalive_timeout) << "\n";
    o << "    connect_timeout: " << format_duration(u.connect_timeout) << "\n"
      << "    send_timeout: " << format_duration(u.send_timeout) << "\n"
      << "    read_timeout: " << format_duration(u.read_timeout) << "\n"
      << "    retry_buffer: " << format_size(u.retry_buffer) << "\n"
      << "    upgrade: [";
    for (std::size_t i = 0; i < u.upgrade.size(); ++i) o << (i ? ", " : "") << u.upgrade[i];
    o << "]\n    tunnel_timeout: " << format_duration(u.tunnel_timeout) << "\n" << describe_balancing(u);
  }
  o << "routes:\n";
  for (const auto& r : c.routes) {
    o << "  - match: {";
    if (r.host) o << "host: " << *r.host << ", ";
    o << "path_prefix: " << r.path_prefix << "}\n    upstream: " << r.upstream << "\n";
  }
  o << "log:\n  level: " << c.log.level << "\n  access: " << c.log.access << "\n  access_format: "
    << (c.log.access_format == AccessFormat::json ? "json" : "text") << "\n";
  if (c.admin.listen) o << "admin:\n  listen: " << c.admin.listen->text << "\n";
  o << "via:\n  upstream: " << (c.via.upstream ? "true" : "false") << "\n  client: " << (c.via.client ? "true" : "false")
    << "\n";

  // The chain, outermost hop first. Each caller must give up on an idle
  // connection before the server behind it does.
  o << "\n# keep-alive timeout chain (each caller must time out before the server behind it)\n";
  o << "#   load balancer in front   idle "
    << (cl.front_idle_timeout ? format_duration(*cl.front_idle_timeout) + " (declared)" : std::string("unknown")) << "\n";
  o << "#   holdfast client side     keepalive_timeout " << format_duration(cl.keepalive_timeout.value) << " ("
    << origin_name(cl.keepalive_timeout.origin) << "), margin " << format_duration(cl.margin.value) << " ("
    << origin_name(cl.margin.origin) << "), closes idle after + grace " << format_duration(cl.keepalive_grace)
    << (cl.front_idle_timeout ? "  ok: above the front's idle timeout" : "") << "\n";
  for (const auto& u : c.upstreams) {
    o << "#   holdfast pool '" << u.name << "'    idle_timeout " << format_duration(u.keepalive.idle_timeout.value) << " ("
      << origin_name(u.keepalive.idle_timeout.origin) << "), margin " << format_duration(u.keepalive.margin) << "\n";
    o << "#   backend '" << u.name << "'          keepalive_timeout "
      << (u.backend_keepalive_timeout ? format_duration(*u.backend_keepalive_timeout) + " (declared)  ok: above idle_timeout + margin"
                                      : std::string("unknown"))
      << "\n";
    if (!u.upgrade.empty())
      o << "#   tunnels '" << u.name << "'          tunnel_timeout " << format_duration(u.tunnel_timeout)
        << " (idle, after 101 Switching Protocols; replaces read_timeout)\n";
  }
  for (const auto& u : c.upstreams) {
    if (u.backend_keepalive_timeout) continue;
    const auto m = format_duration(u.keepalive.margin);
    o << "#\n# upstream '" << u.name << "': the backend's idle timeout is unknown, so holdfast\n"
      << "#   asks:   every request says Connection: keep-alive (Apache then states timeout=N);\n"
      << "#   learns: Keep-Alive: timeout=N answers, and the idle time after which the backend\n"
      << "#           closes a pooled connection (rounded down to whole seconds, as a FIN may come late;\n"
      << "#           the shortest recent one counts, growing back by a quarter every 2m);\n"
      << "#   keeps:  pooled connections idle at most min(stated, observed) - margin (" << m << "),\n"
      << "#           and never longer than idle_timeout (" << format_duration(u.keepalive.idle_timeout.value)
      << ");\n#           POST and PATCH go only on connections more than margin (" << m << ") from it.\n"
      << "#   Until the backend's first answer or close, idle_timeout applies; GET-like requests that\n"
      << "#   meet a close are sent again. Declare backend_keepalive_timeout to start safe.\n";
  }
  return o.str();
}

}  // namespace holdfast
