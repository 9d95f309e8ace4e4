// The upstream keys that say how servers are chosen and when one is out:
// balance, weights, retries, passive ejection, active checks, limits.
#include <algorithm>
#include <sstream>

#include "config_loader.hpp"

namespace holdfast {

const std::vector<const char*> kBalancingKeys{"balance",      "hash_key",      "retries",   "retry_timeout",
                                              "max_fails",    "fail_timeout",  "fail_timeout_max",
                                              "fail_on_5xx",  "health_check",  "max_conns", "queue"};

namespace {

bool boolean(const ConfigReader& r, const YAML::Node& n, const std::string& key) {
  auto text = r.scalar(n, key);
  if (text == "true") return true;
  if (text == "false") return false;
  r.fail(n, key, "'" + text + "' is not a boolean (expected true or false)");
}

HashKey hash_key(const ConfigReader& r, const YAML::Node& n, const std::string& key) {
  auto text = r.scalar(n, key);
  HashKey k;
  auto colon = text.find(':');
  auto kind = text.substr(0, colon);
  if (text == "client_ip") return k;
  if (colon != std::string::npos && colon + 1 < text.size() && (kind == "header" || kind == "cookie")) {
    k.kind = kind == "header" ? HashKey::Kind::header : HashKey::Kind::cookie;
    k.name = text.substr(colon + 1);
    return k;
  }
  r.fail(n, key, "'" + text + "' is not a hash key (expected client_ip, header:NAME or cookie:NAME)");
}

// "200-399" or "200".
void expect_range(const ConfigReader& r, const YAML::Node& n, const std::string& key, HealthCheckConfig& hc) {
  auto text = r.scalar(n, key);
  auto dash = text.find('-');
  auto number = [&](const std::string& part, int& out) {
    auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), out);
    return ec == std::errc() && p == part.data() + part.size() && out >= 100 && out <= 599;
  };
  bool ok = dash == std::string::npos ? number(text, hc.expect_min) && number(text, hc.expect_max)
                                      : number(text.substr(0, dash), hc.expect_min) &&
                                            number(text.substr(dash + 1), hc.expect_max);
  if (!ok || hc.expect_min > hc.expect_max)
    r.fail(n, key, "'" + text + "' is not a status range (expected e.g. \"200-399\" or \"200\", within 100..599)");
}

HealthCheckConfig health_check(const ConfigReader& r, const YAML::Node& n, const std::string& key, Millis connect) {
  r.expect_map(n, key, {"path", "interval", "timeout", "rise", "fall", "expect", "host", "start"});
  HealthCheckConfig hc;
  hc.timeout = connect;
  if (auto v = n["path"]) {
    hc.path = r.scalar(v, key + ".path");
    if (hc.path.empty() || hc.path[0] != '/') r.fail(v, key + ".path", "must start with '/'");
  }
  if (auto v = n["interval"]) hc.interval = r.positive(v, key + ".interval");
  if (auto v = n["timeout"]) hc.timeout = r.positive(v, key + ".timeout");
  else hc.timeout = std::min(hc.timeout, hc.interval);
  if (hc.timeout > hc.interval)
    r.fail(n["timeout"] ? n["timeout"] : n, key + ".timeout",
           "must not exceed interval (" + format_duration(hc.interval) + "): a check must end before the next one");
  if (auto v = n["rise"]) hc.rise = static_cast<unsigned>(r.count(v, key + ".rise", 1, 100));
  if (auto v = n["fall"]) hc.fall = static_cast<unsigned>(r.count(v, key + ".fall", 1, 100));
  if (auto v = n["expect"]) expect_range(r, v, key + ".expect", hc);
  if (auto v = n["host"]) hc.host = r.scalar(v, key + ".host");
  if (auto v = n["start"]) {
    auto text = r.scalar(v, key + ".start");
    if (text != "up" && text != "down") r.fail(v, key + ".start", "'" + text + "' is not a state (expected up or down)");
    hc.start_down = text == "down";
  }
  return hc;
}

const char* policy_name(BalancePolicy p) {
  switch (p) {
    case BalancePolicy::round_robin: return "round_robin";
    case BalancePolicy::least_conn: return "least_conn";
    case BalancePolicy::random_two: return "random_two";
    case BalancePolicy::hash: return "hash";
  }
  return "?";
}

}  // namespace

void load_server_extras(const ConfigReader& r, const YAML::Node& s, const std::string& skey, UpstreamConfig& u) {
  unsigned weight = 1;
  if (s.IsMap())
    if (auto w = s["weight"]) weight = static_cast<unsigned>(r.count(w, skey + ".weight", 1, 1000));
  u.balancing.weights.push_back(weight);
}

void load_balancing(const ConfigReader& r, const YAML::Node& n, const std::string& key, UpstreamConfig& u) {
  auto& b = u.balancing;
  if (auto v = n["balance"]) {
    auto text = r.scalar(v, key + ".balance");
    if (text == "round_robin") b.policy = BalancePolicy::round_robin;
    else if (text == "least_conn") b.policy = BalancePolicy::least_conn;
    else if (text == "random_two") b.policy = BalancePolicy::random_two;
    else if (text == "hash") b.policy = BalancePolicy::hash;
    else r.fail(v, key + ".balance", "'" + text + "' is not a policy (expected round_robin, least_conn, random_two or hash)");
  }
  if (auto v = n["hash_key"]) {
    if (b.policy != BalancePolicy::hash) r.fail(v, key + ".hash_key", "applies only with balance: hash");
    b.hash_key = hash_key(r, v, key + ".hash_key");
  }
  const unsigned servers = static_cast<unsigned>(u.servers.size());
  b.retries = servers > 1 ? servers - 1 : 1;
  if (auto v = n["retries"]) {
    b.retries = static_cast<unsigned>(r.count(v, key + ".retries", 0, 100));
    b.retries_origin = Origin::declared;
  }
  if (auto v = n["retry_timeout"]) b.retry_timeout = r.positive(v, key + ".retry_timeout");
  if (auto v = n["max_fails"]) b.max_fails = static_cast<unsigned>(r.count(v, key + ".max_fails", 0, 1000));
  if (auto v = n["fail_timeout"]) b.fail_timeout = r.positive(v, key + ".fail_timeout");
  if (auto v = n["fail_timeout_max"]) b.fail_timeout_max = r.positive(v, key + ".fail_timeout_max");
  else if (b.fail_timeout_max < b.fail_timeout) b.fail_timeout_max = b.fail_timeout;
  if (b.fail_timeout_max < b.fail_timeout)
    r.fail(n["fail_timeout_max"], key + ".fail_timeout_max",
           "must be >= fail_timeout (" + format_duration(b.fail_timeout) + "): it caps the doubling");
  if (auto v = n["fail_on_5xx"]) b.fail_on_5xx = boolean(r, v, key + ".fail_on_5xx");
  if (auto v = n["health_check"]) b.health_check = health_check(r, v, key + ".health_check", u.connect_timeout);
  if (auto v = n["max_conns"]) b.max_conns = static_cast<std::uint32_t>(r.count(v, key + ".max_conns", 0, 1'000'000));
  if (auto v = n["queue"]) {
    r.expect_map(v, key + ".queue", {"size", "timeout"});
    if (auto s = v["size"]) b.queue.size = static_cast<std::uint32_t>(r.count(s, key + ".queue.size", 0, 1'000'000));
    if (auto t = v["timeout"]) b.queue.timeout = r.positive(t, key + ".queue.timeout");
    if (b.max_conns == 0) r.fail(v, key + ".queue", "applies only with max_conns (requests wait for a free connection)");
  }
}

std::string describe_balancing(const UpstreamConfig& u) {
  const auto& b = u.balancing;
  std::ostringstream o;
  o << "    balance: " << policy_name(b.policy) << "\n";
  if (b.policy == BalancePolicy::hash) {
    o << "    hash_key: "
      << (b.hash_key.kind == HashKey::Kind::client_ip ? std::string("client_ip")
          : b.hash_key.kind == HashKey::Kind::header  ? "header:" + b.hash_key.name
                                                       : "cookie:" + b.hash_key.name)
      << "\n";
  }
  o << "    retries: " << b.retries << (b.retries_origin == Origin::declared ? "" : "   # servers - 1, at least 1")
    << "\n    retry_timeout: " << format_duration(b.retry_timeout) << "\n";
  o << "    max_fails: " << b.max_fails << (b.max_fails == 0 ? "   # passive ejection off" : "") << "\n"
    << "    fail_timeout: " << format_duration(b.fail_timeout) << "\n"
    << "    fail_timeout_max: " << format_duration(b.fail_timeout_max) << "\n"
    << "    fail_on_5xx: " << (b.fail_on_5xx ? "true" : "false") << "\n";
  if (const auto& hc = b.health_check) {
    o << "    health_check: {path: " << hc->path << ", interval: " << format_duration(hc->interval)
      << ", timeout: " << format_duration(hc->timeout) << ", rise: " << hc->rise << ", fall: " << hc->fall
      << ", expect: \"" << hc->expect_min << "-" << hc->expect_max << "\""
      << (hc->host.empty() ? "" : ", host: " + hc->host) << ", start: " << (hc->start_down ? "down" : "up") << "}\n";
  } else {
    o << "    health_check: off\n";
  }
  o << "    max_conns: " << b.max_conns << (b.max_conns == 0 ? "   # no limit" : "") << "\n";
  if (b.max_conns) o << "    queue: {size: " << b.queue.size << ", timeout: " << format_duration(b.queue.timeout) << "}\n";
  return o.str();
}

}  // namespace holdfast
