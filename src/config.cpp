// YAML -> Config: the schema's tables (config_keys.cpp) read the keys, then
// the rules between keys run here; and what is generated from the tables:
// describe_config(), restart_required(), same_connection_settings(),
// config_reference(). yaml-cpp is included by the config module alone (the
// config*.cpp files and their private config_loader.hpp, config_schema.hpp).
#include "holdfast/config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "config_schema.hpp"

namespace holdfast {

namespace {

// The rules between client keys, after the table was read: the client side of
// the timeout chain.
void check_client(const ConfigReader& r, const YAML::Node& n, ClientConfig& cc) {
  const Millis margin = cc.margin.value;
  if (cc.front_idle_timeout) {
    Millis needed = *cc.front_idle_timeout + margin;
    if (cc.keepalive_timeout.origin == Origin::declared) {
      if (cc.keepalive_timeout.value < needed)
        r.fail(n["keepalive_timeout"], "client.keepalive_timeout",
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
    r.fail(n["keepalive_timeout"], "client.keepalive_timeout", "must be greater than 0");
}

// The pool side of the timeout chain: idle_timeout + margin <= the backend's.
void check_keepalive(const ConfigReader& r, const YAML::Node& n, const std::string& key, UpstreamConfig& u) {
  if (!u.backend_keepalive_timeout) return;
  auto& ka = u.keepalive;
  const YAML::Node kan = n["keepalive"];
  Millis backend = *u.backend_keepalive_timeout;
  if (ka.margin >= backend)
    r.fail(kan && kan["margin"] ? kan["margin"] : n["backend_keepalive_timeout"], key + ".keepalive.margin",
           "timeout order broken: keepalive.margin (" + format_duration(ka.margin) +
               ") must be below backend_keepalive_timeout (" + format_duration(backend) +
               "), or no idle connection could ever be reused; fix: lower keepalive.margin");
  Millis ceiling = backend - ka.margin;
  if (ka.idle_timeout.origin == Origin::declared) {
    if (ka.idle_timeout.value > ceiling)
      r.fail(kan["idle_timeout"], key + ".keepalive.idle_timeout",
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

Config load_root(const ConfigReader& r, const std::string& source, const YAML::Node& root) {
  Config c;
  c.source = source;
  if (root.IsNull()) r.fail(root, "(top level)", "the file is empty");
  read_keys(r, root, "", top_keys(), c);
  if (c.listen.empty()) c.listen.push_back(Endpoint{"0.0.0.0", 8080, "0.0.0.0:8080"});
  check_client(r, root["client"], c.client);
  if (!root["routes"]) {
    if (c.upstreams.size() != 1) r.fail(root, "routes", "is required when there is more than one upstream group");
    RouteConfig route;
    route.upstream = c.upstreams[0].name;
    c.routes.push_back(route);
  }
  if (c.admin.listen)
    for (const auto& ep : c.listen)
      if (c.admin.listen->port != 0 && ep.port == c.admin.listen->port)
        r.fail(root["admin"]["listen"], "admin.listen", "must not share the proxy's port " + std::to_string(ep.port));
  return c;
}

Config load_from_node_or_text(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(source + ":" + std::to_string(e.mark.line + 1) + ": (syntax): " + e.msg);
  }
  try {
    const YAML::Node& top = root;
    return load_root(ConfigReader(source), source, top);
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

UpstreamConfig load_upstream(const ConfigReader& r, const std::string& name, const YAML::Node& n) {
  UpstreamConfig u;
  u.name = name;
  const std::string key = "upstreams." + name;
  read_keys(r, n, key, upstream_keys(), u);
  check_balancing(r, n, key, u);
  check_keepalive(r, n, key, u);
  return u;
}

RouteConfig load_route(const ConfigReader& r, const YAML::Node& n, const std::string& key, const Config& c) {
  RouteConfig route;
  read_keys(r, n, key, route_keys(), route);
  auto it = std::find_if(c.upstreams.begin(), c.upstreams.end(), [&](const UpstreamConfig& u) { return u.name == route.upstream; });
  if (it == c.upstreams.end())
    r.fail(n["upstream"], key + ".upstream", "names upstream '" + route.upstream + "', which is not defined under upstreams");
  route.upstream_index = static_cast<std::size_t>(it - c.upstreams.begin());
  return route;
}

// Only top-level keys are of the restart class (the reload code keeps
// upstreams and routes per version), so only the top table is compared.
std::vector<std::string> restart_required(const Config& running, const Config& next) {
  std::vector<std::string> out;
  for (const auto& k : top_keys()) {
    if (k.reload != Reload::restart) continue;
    const auto was = value_of(k, running), now = value_of(k, next);
    if (was != now) out.push_back(k.name + ": " + was + " -> " + now + " needs a restart (it cannot change while holdfast runs)");
  }
  return out;
}

bool same_connection_settings(const UpstreamConfig& a, const UpstreamConfig& b) {
  for (const auto& k : upstream_keys())
    if (k.reload == Reload::connection && value_of(k, a) != value_of(k, b)) return false;
  return true;
}

std::string config_reference() {
  std::string o =
      "Durations are written `250ms`, `5s`, `2m`, `1h`; sizes `512`, `16k`, `10m`. Reload classes: **live**, "
      "a reload applies the new value; **restart**, a reload that changes it fails (restart holdfast); "
      "**connection**, applied, but the upstream's pooled connections are not kept across the reload.\n\n";
  o += "Top level:\n\n" + reference_of(top_keys(), "");
  o += "\nEach upstream group (`upstreams.NAME`):\n\n" + reference_of(upstream_keys(), "upstreams.*.");
  o += "\nEach server given as a mapping:\n\n" + reference_of(server_keys(), "upstreams.*.servers[].");
  o += "\nActive health checks, when `health_check` is set:\n\n" + reference_of(health_check_keys(), "upstreams.*.health_check.");
  o += "\nEach route:\n\n" + reference_of(route_keys(), "routes[].");
  return o;
}

std::string describe_config(const Config& c) {
  std::ostringstream o;
  o << "# effective configuration of " << c.source << "\n" << describe_keys(top_keys(), c, 0);
  const auto& cl = c.client;

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
