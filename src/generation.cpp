#include "holdfast/generation.hpp"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include "holdfast/loop_clock.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

Generation::Generation(Worker& worker, std::shared_ptr<const ConfigVersion> version, Generation* previous)
    : worker_(worker), version_(std::move(version)) {
  const auto& cfg = version_->config;
  for (std::size_t g = 0; g < cfg.upstreams.size(); ++g) {
    UpstreamPool* before = nullptr;
    if (previous)
      for (std::size_t p = 0; p < previous->pools_.size(); ++p)
        if (previous->config().upstreams[p].name == cfg.upstreams[g].name) before = previous->pools_[p].get();
    pools_.push_back(std::make_unique<UpstreamPool>(worker, cfg.upstreams[g], version_->servers[g],
                                                    version_->layout.upstreams[g].slots, before));
    // Workers start their round robin at different servers so that a burst
    // spread over workers does not land on the first server of each.
    balancers_.push_back(make_balancer(cfg.upstreams[g], worker.index()));
  }
}

Generation::~Generation() = default;

void Generation::drain_unadopted() {
  for (auto& p : pools_) p->drain_unadopted();
}

void Generation::close_idle() {
  for (auto& p : pools_) p->close_idle();
}

void Generation::finish_exchange(const ExchangeRecord& r) {
  if (r.has_server) {
    auto slot = pools_[r.group]->slot(r.server);
    if (r.status >= 100 && r.status < 600)
      worker_.stats().add(slot, static_cast<Counter>(static_cast<std::size_t>(Counter::responses_1xx) + r.status / 100 - 1));
    worker_.stats().add(slot, Counter::request_bytes, r.bytes_in);
    worker_.stats().add(slot, Counter::response_bytes, r.bytes_out);
    if (r.times.connect >= 0) worker_.stats().observe(slot, Histogram::connect_time, r.times.connect);
    if (r.times.first_byte >= 0) worker_.stats().observe(slot, Histogram::first_byte_time, r.times.first_byte);
    worker_.stats().observe(slot, Histogram::exchange_time, r.total);
    // Only an answer that came from the server speaks for its health.
    if (r.times.first_byte >= 0) note_server_answer(r.group, r.server, r.status);
  } else {
    worker_.stats().add(Counter::responses_4xx_local);
  }
  auto* log = worker_.access_log();
  if (!log) return;
  std::string_view upstream = config().upstreams[r.group].name;
  std::string_view server = r.has_server ? std::string_view(pools_[r.group]->address(r.server).text) : "-";
  log->info("{}", format_access(r, config().log.access_format, upstream, server));
}

ServerPick Generation::pick_server(std::size_t group, const MessageHead& request, std::string_view client_ip,
                               std::optional<std::size_t> avoid, std::optional<std::size_t> prefer) {
  const auto& u = config().upstreams[group];
  auto& pool = *pools_[group];
  const auto now = LoopClock::now();
  // One server without max_conns (the common shape): there is nothing to
  // balance and no slot to contend for, so only its health is read. A server
  // that is out takes the full path below, which says why.
  if (u.servers.size() == 1 && u.balancing.max_conns == 0 && why_out(group, 0, now) == OutBecause::in &&
      pool.reserve(0))
    return {std::size_t{0}, false, {}};
  auto& table = worker_.health();
  candidates_.assign(u.servers.size(), Candidate{});
  std::size_t eligible = 0, ejected = 0, checked = 0, full = 0;
  for (std::size_t i = 0; i < candidates_.size(); ++i) {
    auto& c = candidates_[i];
    const auto slot = pool.slot(i);
    c.weight = u.balancing.weights[i];
    c.active = table.active(slot);
    switch (why_out(group, i, now)) {
      case OutBecause::in: ++eligible; break;
      case OutBecause::checked_down: ++checked, c.eligible = false; break;
      case OutBecause::ejected: ++ejected, c.eligible = false; break;
      case OutBecause::at_max_conns: ++full, c.eligible = false; break;
    }
  }
  // Never the same server twice in a row while another one can take it.
  if (avoid && candidates_[*avoid].eligible && eligible > 1) candidates_[*avoid].eligible = false;
  // A keep-alive-race retry stays with its server while that one takes traffic.
  if (prefer && candidates_[*prefer].eligible && pool.reserve(*prefer)) return {prefer, false, {}};
  std::string_view key;
  if (u.balancing.policy == BalancePolicy::hash) key = request_hash_key(u.balancing.hash_key, request, client_ip);
  // The count read above may be stale by now: the slot is taken for real by
  // a compare-and-swap, and a server whose last slot another worker took in
  // between is out like a full one. Each pass rules out one server.
  for (std::size_t pass = 0; eligible > 0 && pass < candidates_.size(); ++pass) {
    auto chosen = balancers_[group]->pick({candidates_, key});
    if (!chosen) break;
    if (pool.reserve(*chosen)) return {chosen, false, {}};
    candidates_[*chosen].eligible = false;
    ++full;
  }
  ServerPick none;
  none.at_capacity = full > 0;
  none.why = fmt::format("all {} server(s) of upstream '{}' are out: {} failing health checks, {} ejected after "
                         "failures, {} at max_conns",
                         u.servers.size(), u.name, checked, ejected, full);
  return none;
}

bool Generation::has_alternative(std::size_t group, std::size_t server) const {
  const auto now = LoopClock::now();
  for (std::size_t i = 0; i < config().upstreams[group].servers.size(); ++i)
    if (i != server && why_out(group, i, now) == OutBecause::in) return true;
  return false;
}

Generation::OutBecause Generation::why_out(std::size_t group, std::size_t server, HealthClock::time_point now) const {
  const auto slot = pools_[group]->slot(server);
  const auto max_conns = config().upstreams[group].balancing.max_conns;
  if (worker_.health().checked_down(slot)) return OutBecause::checked_down;
  if (worker_.health().ejected(slot, now)) return OutBecause::ejected;
  if (max_conns && worker_.health().active(slot) >= max_conns) return OutBecause::at_max_conns;
  return OutBecause::in;
}

void Generation::note_server_failure(std::size_t group, std::size_t server, ProxyError error, bool reused) {
  switch (error) {
    case ProxyError::connect_refused:
    case ProxyError::connect_timeout:
    case ProxyError::connect_failed:
    case ProxyError::read_timeout:
    case ProxyError::send_timeout:
      break;
    case ProxyError::closed_before_response:
    case ProxyError::send_failed:
      // On a reused connection this is the keep-alive race, not the server's fault.
      if (reused) return;
      break;
    default:
      return;
  }
  const auto& u = config().upstreams[group];
  // As nginx: with one server there is nowhere else to go, so it is never taken out.
  if (u.servers.size() < 2) return;
  balancers_[group]->report(server, PickOutcome::failure);
  Millis for_how_long{0};
  PassivePolicy policy{u.balancing.max_fails, u.balancing.fail_timeout, u.balancing.fail_timeout_max};
  auto change = worker_.health().note_failure(pools_[group]->slot(server), policy, LoopClock::now(), &for_how_long);
  log_health_change(group, server, change, for_how_long, describe(error).text);
}

void Generation::note_server_answer(std::size_t group, std::size_t server, int status) {
  const auto& u = config().upstreams[group];
  if (status >= 500 && u.balancing.fail_on_5xx && u.servers.size() > 1) {
    Millis for_how_long{0};
    PassivePolicy policy{u.balancing.max_fails, u.balancing.fail_timeout, u.balancing.fail_timeout_max};
    auto change = worker_.health().note_failure(pools_[group]->slot(server), policy, LoopClock::now(), &for_how_long);
    log_health_change(group, server, change, for_how_long, fmt::format("answered {}", status));
    return;
  }
  balancers_[group]->report(server, PickOutcome::success);
  log_health_change(group, server, worker_.health().note_success(pools_[group]->slot(server), LoopClock::now()), Millis(0),
                    "answered");
}

void Generation::log_health_change(std::size_t group, std::size_t server, HealthChange change, Millis ejected_for,
                               std::string_view cause) {
  if (change == HealthChange::none) return;
  const auto& u = config().upstreams[group];
  const auto slot = pools_[group]->slot(server);
  // Only the thread whose compare-and-swap made the change gets here: one line per change.
  if (change == HealthChange::ejected) {
    worker_.stats().add(slot, Counter::ejections);
    spdlog::warn("upstream '{}' server {} ejected for {} after consecutive failures (max_fails {}; last: {})",
                 u.name, u.servers[server].text, format_duration(ejected_for), u.balancing.max_fails, cause);
  } else {
    worker_.stats().add(slot, Counter::recoveries);
    spdlog::info("upstream '{}' server {} recovered: {} after its ejection", u.name, u.servers[server].text, cause);
  }
}

}  // namespace holdfast
