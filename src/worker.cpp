#include "holdfast/worker.hpp"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "holdfast/client_connection.hpp"

namespace holdfast {

MetricsLayout metrics_layout(const Config& config) {
  MetricsLayout layout;
  for (const auto& u : config.upstreams) {
    MetricsLayout::Upstream entry{u.name, layout.slots, {}};
    for (const auto& s : u.servers) entry.servers.push_back(s.text);
    layout.slots += u.servers.size();
    layout.upstreams.push_back(std::move(entry));
  }
  return layout;
}

Worker::Worker(const SharedState& shared, unsigned index, std::vector<int> listen_fds)
    : shared_(shared), index_(index), stats_(shared.layout.slots) {
  // Each base is used by its own thread only, so libevent runs without locks;
  // the one cross-thread message (drain) arrives through an eventfd.
  event_config* cfg = event_config_new();
  event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
  event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  base_ = event_base_new_with_config(cfg);
  event_config_free(cfg);
  drain_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  for (std::size_t g = 0; g < shared.config.upstreams.size(); ++g) {
    pools_.push_back(std::make_unique<UpstreamPool>(*this, shared.config.upstreams[g], shared.servers[g],
                                                    shared.layout.upstreams[g].first_slot));
    // Workers start their round robin at different servers so that a burst
    // spread over workers does not land on the first server of each.
    balancers_.push_back(make_balancer(shared.config.upstreams[g], index));
  }
  for (int fd : listen_fds)
    listeners_.push_back(std::make_unique<Listener>(base_, fd, [this](int cfd, const sockaddr* a, int l) { on_accept(cfd, a, l); }));
  reap_event_ = event_new(base_, -1, 0, &Worker::on_reap, this);
  drain_request_event_ = event_new(base_, drain_fd_, EV_READ | EV_PERSIST, &Worker::on_drain_request, this);
  event_add(drain_request_event_, nullptr);
  drain_deadline_event_ = evtimer_new(base_, &Worker::on_drain_deadline, this);
  idle_timer_ = evtimer_new(base_, &Worker::on_idle_timer, this);
  resume_event_ = event_new(base_, -1, 0, &Worker::on_resume, this);
}

Worker::~Worker() {
  listeners_.clear();
  // Client connections first (they may hand upstream connections back to the
  // pools), then whatever they retired, then the pools.
  close_all_clients();
  retired_.clear();
  for (auto& p : pools_) p->close_idle();
  retired_.clear();
  pools_.clear();
  retired_.clear();
  event_free(reap_event_);
  event_free(drain_request_event_);
  event_free(drain_deadline_event_);
  event_free(idle_timer_);
  event_free(resume_event_);
  event_base_free(base_);
  ::close(drain_fd_);
}

void Worker::start() {
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run() {
  running_.store(true, std::memory_order_relaxed);
  event_base_dispatch(base_);
  running_.store(false, std::memory_order_relaxed);
  // Whatever is still open when the loop ends (drain timeout) is closed here,
  // on the worker's own thread.
  close_all_clients();
  retired_.clear();
  for (auto& p : pools_) p->close_idle();
  retired_.clear();
}

void Worker::request_drain() {
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(drain_fd_, &one, sizeof one);
}

void Worker::on_drain_request(evutil_socket_t fd, short, void* arg) {
  std::uint64_t value;
  [[maybe_unused]] auto n = ::read(fd, &value, sizeof value);
  static_cast<Worker*>(arg)->begin_drain();
}

void Worker::begin_drain() {
  if (draining_) return;
  draining_ = true;
  event_del(drain_request_event_);
  // Connections already in the accept queue may carry a request: take them
  // (they are answered with Connection: close) before the socket closes.
  for (auto& l : listeners_) {
    l->accept_pending();
    l->stop();
  }
  timeval tv{static_cast<time_t>(config().drain_timeout.count() / 1000),
             static_cast<suseconds_t>((config().drain_timeout.count() % 1000) * 1000)};
  evtimer_add(drain_deadline_event_, &tv);
  clients_.for_each([](ClientConnection* c) { c->drain(); });
  // Idle connections now close after the drain grace instead of
  // keepalive_timeout, counted from the drain: each gets the full grace.
  auto now = Clock::now();
  idle_.for_each([now](ClientConnection* c) { c->idle_since = now; });
  if (idle_timer_armed_) event_del(idle_timer_);
  arm_idle_timer();
  for (auto& p : pools_) p->close_idle();
  maybe_finish_drain();
}

void Worker::maybe_finish_drain() {
  if (draining_ && clients_.empty()) event_base_loopexit(base_, nullptr);
}

void Worker::on_drain_deadline(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  spdlog::warn("worker {}: drain_timeout reached with {} connection(s) still open; closing them", self->index_,
               self->clients_.size());
  event_base_loopbreak(self->base_);
}

void Worker::on_accept(int fd, const sockaddr* addr, int len) {
  auto conn = std::make_unique<ClientConnection>(*this, fd, addr, len);
  auto* raw = conn.get();
  add_client(std::move(conn));
  raw->start();
}

void Worker::add_client(std::unique_ptr<ClientConnection> conn) {
  clients_.push_back(conn.release());
  publish_client_gauges();
}

void Worker::publish_client_gauges() noexcept {
  auto idle = static_cast<std::int64_t>(idle_.size());
  stats_.set(0, Gauge::client_idle, idle);
  stats_.set(0, Gauge::client_active, static_cast<std::int64_t>(clients_.size()) - idle);
}

void Worker::finish_exchange(const ExchangeRecord& r) {
  if (r.has_server) {
    auto slot = pools_[r.group]->slot(r.server);
    if (r.status >= 100 && r.status < 600)
      stats_.add(slot, static_cast<Counter>(static_cast<std::size_t>(Counter::responses_1xx) + r.status / 100 - 1));
    stats_.add(slot, Counter::request_bytes, r.bytes_in);
    stats_.add(slot, Counter::response_bytes, r.bytes_out);
    if (r.times.connect >= 0) stats_.observe(slot, Histogram::connect_time, r.times.connect);
    if (r.times.first_byte >= 0) stats_.observe(slot, Histogram::first_byte_time, r.times.first_byte);
    stats_.observe(slot, Histogram::exchange_time, r.total);
    // Only an answer that came from the server speaks for its health.
    if (r.times.first_byte >= 0) note_server_answer(r.group, r.server, r.status);
  } else {
    stats_.add(Counter::responses_4xx_local);
  }
  auto* log = shared_.access_log.get();
  if (!log) return;
  std::string_view upstream = config().upstreams[r.group].name;
  std::string_view server = r.has_server ? std::string_view(pools_[r.group]->address(r.server).text) : "-";
  log->info("{}", format_access(r, config().log.access_format, upstream, server));
}

void Worker::close_all_clients() {
  clients_.for_each([this](ClientConnection* c) {
    clients_.remove(c);
    idle_.remove(c);
    resume_.remove(c);
    delete c;
  });
  publish_client_gauges();
}

void Worker::mark_idle(ClientConnection* conn) {
  idle_.remove(conn);
  conn->idle_since = Clock::now();
  idle_.push_back(conn);
  publish_client_gauges();
  if (!idle_timer_armed_) arm_idle_timer();
}

std::chrono::milliseconds Worker::idle_limit() const noexcept {
  // While draining, a keep-alive client gets a short grace to send the
  // request it may be about to send (answered with Connection: close), then
  // a half-close; a busy client thus loses no request to the drain.
  // Otherwise the advertised timeout plus a grace: a client that honours
  // Keep-Alive: timeout=N stops reusing the connection at N, before holdfast
  // closes it, so the two never cross.
  const auto& cl = config().client;
  return draining_ ? std::min(cl.keepalive_timeout.value, kDrainIdleGrace) : cl.keepalive_timeout.value + cl.keepalive_grace;
}

void Worker::arm_idle_timer() {
  idle_timer_armed_ = false;
  if (idle_.empty()) return;
  auto deadline = idle_.front()->idle_since + idle_limit();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now()).count();
  if (us < 0) us = 0;
  timeval tv{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
  event_add(idle_timer_, &tv);
  idle_timer_armed_ = true;
}

void Worker::on_idle_timer(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  self->idle_timer_armed_ = false;
  auto now = Clock::now();
  auto timeout = self->idle_limit();
  // keepalive_timeout: the ordinary end of an idle connection.
  while (!self->idle_.empty() && self->idle_.front()->idle_since + timeout <= now) {
    auto* c = self->idle_.front();
    self->idle_.remove(c);
    c->close_idle(self->draining_);
  }
  self->arm_idle_timer();
}

void Worker::post_resume(ClientConnection* conn) {
  if (!resume_.contains(conn)) resume_.push_back(conn);
  event_active(resume_event_, EV_READ, 0);
}

void Worker::on_resume(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  while (!self->resume_.empty()) {
    auto* c = self->resume_.front();
    self->resume_.remove(c);
    c->resume_after_exchange();
  }
}

void Worker::remove_client(ClientConnection* conn) {
  idle_.remove(conn);
  resume_.remove(conn);
  if (clients_.contains(conn)) {
    clients_.remove(conn);
    defer_delete(std::unique_ptr<ClientConnection>(conn));
  }
  publish_client_gauges();
  maybe_finish_drain();
}

void Worker::schedule_reaper() {
  if (!reap_scheduled_) {
    reap_scheduled_ = true;
    event_active(reap_event_, EV_READ, 0);
  }
}

void Worker::on_reap(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  self->reap_scheduled_ = false;
  // Deleting may retire more objects (an exchange hands back its upstream
  // connection): loop until nothing is left.
  while (!self->retired_.empty()) {
    auto batch = std::move(self->retired_);
    self->retired_.clear();
    batch.clear();
  }
}

ServerPick Worker::pick_server(std::size_t group, const MessageHead& request, std::string_view client_ip,
                               std::optional<std::size_t> avoid, std::optional<std::size_t> prefer) {
  const auto& u = config().upstreams[group];
  auto& pool = *pools_[group];
  const auto now = HealthClock::now();
  // One server without max_conns (the common shape): there is nothing to
  // balance and no slot to contend for, so only its health is read. A server
  // that is out takes the full path below, which says why.
  if (u.servers.size() == 1 && u.balancing.max_conns == 0 && why_out(group, 0, now) == OutBecause::in &&
      pool.reserve(0))
    return {std::size_t{0}, false, {}};
  auto& table = health();
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

bool Worker::has_alternative(std::size_t group, std::size_t server) const {
  const auto now = HealthClock::now();
  for (std::size_t i = 0; i < config().upstreams[group].servers.size(); ++i)
    if (i != server && why_out(group, i, now) == OutBecause::in) return true;
  return false;
}

Worker::OutBecause Worker::why_out(std::size_t group, std::size_t server, HealthClock::time_point now) const {
  const auto slot = pools_[group]->slot(server);
  const auto max_conns = config().upstreams[group].balancing.max_conns;
  if (health().checked_down(slot)) return OutBecause::checked_down;
  if (health().ejected(slot, now)) return OutBecause::ejected;
  if (max_conns && health().active(slot) >= max_conns) return OutBecause::at_max_conns;
  return OutBecause::in;
}

void Worker::note_server_failure(std::size_t group, std::size_t server, ProxyError error, bool reused) {
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
  auto change = health().note_failure(pools_[group]->slot(server), policy, HealthClock::now(), &for_how_long);
  log_health_change(group, server, change, for_how_long, describe(error).text);
}

void Worker::note_server_answer(std::size_t group, std::size_t server, int status) {
  const auto& u = config().upstreams[group];
  if (status >= 500 && u.balancing.fail_on_5xx && u.servers.size() > 1) {
    Millis for_how_long{0};
    PassivePolicy policy{u.balancing.max_fails, u.balancing.fail_timeout, u.balancing.fail_timeout_max};
    auto change = health().note_failure(pools_[group]->slot(server), policy, HealthClock::now(), &for_how_long);
    log_health_change(group, server, change, for_how_long, fmt::format("answered {}", status));
    return;
  }
  balancers_[group]->report(server, PickOutcome::success);
  log_health_change(group, server, health().note_success(pools_[group]->slot(server), HealthClock::now()), Millis(0),
                    "answered");
}

void Worker::log_health_change(std::size_t group, std::size_t server, HealthChange change, Millis ejected_for,
                               std::string_view cause) {
  if (change == HealthChange::none) return;
  const auto& u = config().upstreams[group];
  const auto slot = pools_[group]->slot(server);
  // Only the thread whose compare-and-swap made the change gets here: one line per change.
  if (change == HealthChange::ejected) {
    stats_.add(slot, Counter::ejections);
    spdlog::warn("upstream '{}' server {} ejected for {} after consecutive failures (max_fails {}; last: {})",
                 u.name, u.servers[server].text, format_duration(ejected_for), u.balancing.max_fails, cause);
  } else {
    stats_.add(slot, Counter::recoveries);
    spdlog::info("upstream '{}' server {} recovered: {} after its ejection", u.name, u.servers[server].text, cause);
  }
}

}  // namespace holdfast
