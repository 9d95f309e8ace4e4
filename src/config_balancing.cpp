// The upstream keys that say how servers are chosen and when one is out:
// balance, retries, passive ejection, active checks, limits; their rows of the
// schema and the rules between them.
#include <algorithm>

#include "config_schema.hpp"

namespace holdfast {

namespace {

using R = Reload;

// `hash_key`: client_ip, header:NAME or cookie:NAME.
struct HashKeyCodec {
  std::string type() const { return "client_ip, header:NAME or cookie:NAME"; }
  std::string bounds() const { return "only with balance: hash"; }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, HashKey& k) const {
    auto text = r.scalar(n, key);
    auto colon = text.find(':');
    auto kind = text.substr(0, colon);
    if (text == "client_ip") {
      k = HashKey{};
      return;
    }
    if (colon != std::string::npos && colon + 1 < text.size() && (kind == "header" || kind == "cookie")) {
      k.kind = kind == "header" ? HashKey::Kind::header : HashKey::Kind::cookie;
      k.name = text.substr(colon + 1);
      return;
    }
    r.fail(n, key, "'" + text + "' is not a hash key (expected client_ip, header:NAME or cookie:NAME)");
  }
  std::optional<std::string> show(const HashKey& k) const {
    return k.kind == HashKey::Kind::client_ip ? std::string("client_ip")
           : k.kind == HashKey::Kind::header  ? "header:" + k.name
                                               : "cookie:" + k.name;
  }
};

// `retries`, remembering that the operator chose it (the default depends on the servers).
struct RetriesCodec {
  CountCodec count{0, 100};
  std::string type() const { return count.type(); }
  std::string bounds() const { return count.bounds(); }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, BalancingConfig& b) const {
    count.read(r, n, key, b.retries);
    b.retries_origin = Origin::declared;
  }
  std::optional<std::string> show(const BalancingConfig& b) const { return count.show(b.retries); }
};

// `expect`: "200-399" or "200".
struct ExpectCodec {
  std::string type() const { return "status or range (\"200-399\")"; }
  std::string bounds() const { return "100..599"; }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, HealthCheckConfig& hc) const {
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
  std::optional<std::string> show(const HealthCheckConfig& hc) const {
    return "\"" + std::to_string(hc.expect_min) + "-" + std::to_string(hc.expect_max) + "\"";
  }
};

void read_health_check(const ConfigReader& r, const YAML::Node& n, const std::string& key, UpstreamConfig& u) {
  HealthCheckConfig hc;
  read_keys(r, n, key, health_check_keys(), hc);
  if (!n["timeout"]) hc.timeout = std::min(u.connect_timeout, hc.interval);
  if (hc.timeout > hc.interval)
    r.fail(n["timeout"] ? n["timeout"] : n, key + ".timeout",
           "must not exceed interval (" + format_duration(hc.interval) + "): a check must end before the next one");
  u.balancing.health_check = hc;
}

}  // namespace

std::vector<Key<UpstreamConfig>> balancing_keys() {
  using S = UpstreamConfig;
  const DurationCodec duration{true};
  const CountCodec max_conns{0, 1'000'000};
  std::vector<Key<S>> k{
      row<S>("balance",
             WordsCodec<BalancePolicy>{{{"round_robin", BalancePolicy::round_robin}, {"least_conn", BalancePolicy::least_conn},
                                        {"random_two", BalancePolicy::random_two}, {"hash", BalancePolicy::hash}},
                                       "policy"},
             HF_FIELD(balancing.policy), R::live, "How a server is chosen (see \"Failover, health and balancing\")."),
      row<S>("hash_key", HashKeyCodec{}, HF_FIELD(balancing.hash_key), R::live, "What balance: hash hashes."),
      row<S>("retries", RetriesCodec{}, HF_FIELD(balancing), R::live,
             "Further attempts on other servers after a failure before the request was sent."),
      row<S>("retry_timeout", duration, HF_FIELD(balancing.retry_timeout), R::live,
             "No new attempt starts later than this after the request head."),
      row<S>("max_fails", CountCodec{0, 1000}, HF_FIELD(balancing.max_fails), R::live,
             "Consecutive failures that take a server out; 0: never."),
      row<S>("fail_timeout", duration, HF_FIELD(balancing.fail_timeout), R::live,
             "How long an ejected server stays out; doubles on each repeat."),
      row<S>("fail_timeout_max", duration, HF_FIELD(balancing.fail_timeout_max), R::live,
             "Cap of the doubling; at least fail_timeout."),
      row<S>("fail_on_5xx", BoolCodec{}, HF_FIELD(balancing.fail_on_5xx), R::live, "A 5xx answer counts as a failure too."),
      Key<S>{},
      row<S>("max_conns", max_conns, HF_FIELD(balancing.max_conns), R::live,
             "Active connections per server, all workers together; 0: no limit."),
      row<S>("queue.size", max_conns, HF_FIELD(balancing.queue.size), R::live,
             "Requests that may wait for a free connection when every server is at max_conns; 0: 503 at once."),
      row<S>("queue.timeout", duration, HF_FIELD(balancing.queue.timeout), R::live,
             "Longest wait in the queue (503 after it)."),
  };
  for (auto& key : k) {
    if (key.name == "hash_key") key.applies = [](const S& u) { return u.balancing.policy == BalancePolicy::hash; };
    if (key.name == "retries") key.default_text = "servers - 1, at least 1";
    if (key.name.rfind("queue.", 0) == 0) key.applies = [](const S& u) { return u.balancing.max_conns > 0; };
  }
  auto& hc = k[8];
  hc.name = "health_check";
  hc.type = "mapping";
  hc.help = "Active health checks of the group's servers: the upstreams.*.health_check.* keys below.";
  hc.unset = "off";
  hc.read = read_health_check;
  hc.show = [](const S& u, int indent) -> std::optional<std::string> {
    if (!u.balancing.health_check) return std::nullopt;
    return "\n" + describe_keys(health_check_keys(), *u.balancing.health_check, indent);
  };
  return k;
}

// Rules between the balancing keys of one upstream, after its table was read.
void check_balancing(const ConfigReader& r, const YAML::Node& n, const std::string& key, UpstreamConfig& u) {
  auto& b = u.balancing;
  if (n["hash_key"] && b.policy != BalancePolicy::hash) r.fail(n["hash_key"], key + ".hash_key", "applies only with balance: hash");
  const unsigned servers = static_cast<unsigned>(u.servers.size());
  if (b.retries_origin != Origin::declared) b.retries = servers > 1 ? servers - 1 : 1;
  if (!n["fail_timeout_max"] && b.fail_timeout_max < b.fail_timeout) b.fail_timeout_max = b.fail_timeout;
  if (b.fail_timeout_max < b.fail_timeout)
    r.fail(n["fail_timeout_max"], key + ".fail_timeout_max",
           "must be >= fail_timeout (" + format_duration(b.fail_timeout) + "): it caps the doubling");
  if (n["queue"] && b.max_conns == 0)
    r.fail(n["queue"], key + ".queue", "applies only with max_conns (requests wait for a free connection)");
}

const std::vector<Key<HealthCheckConfig>>& health_check_keys() {
  using S = HealthCheckConfig;
  static const std::vector<Key<S>> keys = [] {
    const DurationCodec duration{true};
    std::vector<Key<S>> k{
        row<S>("path", StringCodec{[](const std::string& t) { return std::string(!t.empty() && t[0] == '/' ? "" : "must start with '/'"); }},
               HF_FIELD(path), R::live, "Path requested by each check (GET)."),
        row<S>("interval", duration, HF_FIELD(interval), R::live, "Time between two checks of a server."),
        row<S>("timeout", duration, HF_FIELD(timeout), R::live, "A check fails when not answered within this; at most interval."),
        row<S>("rise", CountCodec{1, 100}, HF_FIELD(rise), R::live, "Consecutive passes that bring a down server up."),
        row<S>("fall", CountCodec{1, 100}, HF_FIELD(fall), R::live, "Consecutive failures that take an up server down."),
        row<S>("expect", ExpectCodec{}, [](auto& s) -> auto& { return s; }, R::live, "Statuses that pass."),
        row<S>("host", StringCodec{}, HF_FIELD(host), R::live, "Host field of the check."),
        row<S>("start", WordsCodec<bool>{{{"up", false}, {"down", true}}, "state"}, HF_FIELD(start_down), R::live,
               "State of the servers until their first checks: down waits for rise passes."),
    };
    k[2].default_text = "min(connect_timeout, interval)";
    k[6].unset = "the server's address";
    return k;
  }();
  return keys;
}

}  // namespace holdfast
