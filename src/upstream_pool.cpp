#include "holdfast/upstream_pool.hpp"

#include <algorithm>

#include "holdfast/worker.hpp"

namespace holdfast {

UpstreamPool::UpstreamPool(Worker& worker, const UpstreamConfig& config, const std::vector<ServerAddress>& servers,
                           std::size_t first_slot)
    : worker_(worker),
      config_(config),
      servers_(servers.size()),
      first_slot_(first_slot),
      // With several workers a slot may be freed by another one, which cannot
      // wake this queue: it looks again every few milliseconds while non-empty.
      queue_(worker.base(), config.balancing.queue.size, config.balancing.queue.timeout,
             worker.config().workers > 1 ? std::optional<Millis>(kQueueRecheck) : std::nullopt) {
  for (const auto& s : servers) addresses_.push_back(&s);
}

UpstreamPool::~UpstreamPool() {
  close_idle();
  // Whatever this pool still counted in the process-wide table leaves with it.
  for (std::size_t i = 0; i < servers_.size(); ++i) worker_.health().add_active(slot(i), -servers_[i].shared_active);
}

std::unique_ptr<UpstreamConnection> UpstreamPool::acquire(std::size_t server, bool idempotent) {
  auto& s = servers_[server];
  const auto now = Clock::now();
  while (!s.idle.empty()) {
    std::unique_ptr<UpstreamConnection> conn = std::move(s.idle.back());
    s.idle.pop_back();
    // The peek: a connection the backend closed (or wrote to) while idle is
    // dropped here at no cost to the request, before a byte is written.
    if (!conn->quiet_and_open()) {
      worker_.stats().add(slot(server), Counter::evict_dead_at_checkout);
      retire(std::move(conn));
      continue;
    }
    if (!idempotent && conn->backend_idle_timeout) {
      auto deadline = conn->last_used + *conn->backend_idle_timeout;
      if (now + config_.keepalive.margin >= deadline) {
        worker_.stats().add(slot(server), Counter::nonidempotent_skipped);
        retire(std::move(conn));
        continue;
      }
    }
    conn->set_owner(nullptr);
    worker_.stats().add(slot(server), Counter::upstream_reused);
    if (s.reserved > 0) --s.reserved;  // the slot is now this leased connection's
    publish(server);
    return conn;
  }
  return nullptr;
}

bool UpstreamPool::reserve(std::size_t server) {
  if (!worker_.health().try_add_active(slot(server), config_.balancing.max_conns)) return false;
  auto& s = servers_[server];
  ++s.reserved;
  ++s.shared_active;  // already counted by try_add_active
  return true;
}

std::unique_ptr<UpstreamConnection> UpstreamPool::open(std::size_t server, int& err) {
  const auto& a = *addresses_[server];
  auto& s = servers_[server];
  if (s.reserved > 0) --s.reserved;  // becomes the new connection's, or is given back below
  auto conn = UpstreamConnection::open(worker_.base(), reinterpret_cast<const sockaddr*>(&a.addr), a.len, server,
                                       worker_.next_id(), err);
  if (!conn) {
    publish(server);
    return nullptr;
  }
  worker_.stats().add(slot(server), Counter::upstream_connects);
  ++s.open;
  publish(server);
  // What the backend said on earlier connections holds for this one until it
  // says otherwise; failing that, what the operator declared.
  if (s.learned_timeout) conn->backend_idle_timeout = s.learned_timeout;
  else if (config_.backend_keepalive_timeout) conn->backend_idle_timeout = config_.backend_keepalive_timeout;
  return conn;
}

std::optional<Millis> UpstreamPool::idle_budget(const UpstreamConnection& conn, Clock::time_point now,
                                                Counter* why) const {
  const auto& ka = config_.keepalive;
  if (conn.requests >= ka.max_requests || (conn.requests_left && *conn.requests_left == 0)) {
    *why = Counter::evict_max_requests;
    return std::nullopt;
  }
  auto life_left = std::chrono::duration_cast<Millis>(conn.created + ka.max_lifetime - now);
  if (life_left.count() <= 0) {
    *why = Counter::evict_lifetime;
    return std::nullopt;
  }
  Millis budget = ka.idle_timeout.value;
  *why = Counter::evict_idle_timeout;
  if (conn.backend_idle_timeout) {
    // Give up `margin` before the backend does: its FIN may be in flight.
    if (*conn.backend_idle_timeout <= ka.margin) {
      *why = Counter::evict_hint;
      return std::nullopt;
    }
    Millis from_backend = *conn.backend_idle_timeout - ka.margin;
    if (from_backend < budget) {
      budget = from_backend;
      *why = Counter::evict_hint;
    }
  }
  if (life_left < budget) {
    budget = life_left;
    *why = Counter::evict_lifetime;
  }
  return budget;
}

void UpstreamPool::release(std::unique_ptr<UpstreamConnection> conn, bool reusable) {
  // A connection that connected proves the server reachable again.
  if (conn->connected() && conn->requests > 0) worker_.stats().set(slot(conn->server), Gauge::connect_failing, 0);
  if (!reusable || worker_.draining() || config_.keepalive.max_idle == 0) {
    // A connect that failed is counted as such, not as a pooling decision.
    if (conn->connected()) worker_.stats().add(slot(conn->server), Counter::evict_not_reusable);
    retire(std::move(conn));
    return;
  }
  const auto now = Clock::now();
  Counter why;
  auto budget = idle_budget(*conn, now, &why);
  if (!budget) {
    worker_.stats().add(slot(conn->server), why);
    retire(std::move(conn));
    return;
  }
  auto& s = servers_[conn->server];
  if (s.idle.size() >= config_.keepalive.max_idle) {
    // Keep the newest: drop the one that has waited longest.
    worker_.stats().add(slot(conn->server), Counter::evict_pool_full);
    retire(std::move(s.idle.front()));
    s.idle.erase(s.idle.begin());
  }
  conn->last_used = now;
  conn->idle_expiry = why;
  conn->set_owner(this);
  // Idle: the read event stays armed (EOF or bytes close it at once) and the
  // read deadline is the idle budget.
  conn->stream().set_write_timeout(std::nullopt);
  conn->stream().set_read_timeout(*budget);
  conn->stream().enable_read();
  auto server = conn->server;
  s.idle.push_back(std::move(conn));
  publish(server);
}

void UpstreamPool::learn(UpstreamConnection& conn, const KeepAliveHint& hint) {
  auto& s = servers_[conn.server];
  if (hint.timeout) {
    conn.backend_idle_timeout = hint.timeout;
    if (s.learned_timeout != hint.timeout) {
      s.learned_timeout = hint.timeout;
      worker_.stats().add(slot(conn.server), Counter::hints_learned);
      worker_.stats().set(slot(conn.server), Gauge::learned_timeout_ms, hint.timeout->count());
    }
  }
  if (hint.max) conn.requests_left = hint.max;
}

void UpstreamPool::note_failure(std::size_t server, ProxyError error) {
  Counter c;
  switch (error) {
    case ProxyError::connect_refused: c = Counter::connect_refused; break;
    case ProxyError::connect_timeout: c = Counter::connect_timeout; break;
    case ProxyError::connect_failed: c = Counter::connect_error; break;
    default: return;
  }
  worker_.stats().add(slot(server), c);
  worker_.stats().set(slot(server), Gauge::connect_failing, 1);
}

void UpstreamPool::close_idle() {
  for (std::size_t i = 0; i < servers_.size(); ++i) {
    // Moved out first: retire() publishes gauges that read the list.
    auto idle = std::move(servers_[i].idle);
    servers_[i].idle.clear();
    for (auto& c : idle) retire(std::move(c));
  }
}

void UpstreamPool::publish(std::size_t server) {
  auto& s = servers_[server];
  auto idle = static_cast<std::int64_t>(s.idle.size());
  auto active = static_cast<std::int64_t>(s.open) - idle;
  worker_.stats().set(slot(server), Gauge::upstream_idle, idle);
  worker_.stats().set(slot(server), Gauge::upstream_active, active);
  // least_conn, random_two and max_conns read the count over all workers;
  // it includes the slots reserved for a connection about to be leased or opened.
  const auto shared = active + static_cast<std::int64_t>(s.reserved);
  if (shared != s.shared_active) {
    worker_.health().add_active(slot(server), shared - s.shared_active);
    // A slot freed here goes to the oldest request waiting on this worker.
    if (shared < s.shared_active) queue_.notify();
    s.shared_active = shared;
  }
}

void UpstreamPool::evict(UpstreamConnection& conn, Counter why) {
  auto& idle = servers_[conn.server].idle;
  auto it = std::find_if(idle.begin(), idle.end(), [&](const auto& p) { return p.get() == &conn; });
  if (it == idle.end()) return;  // not ours: nothing to do
  std::unique_ptr<UpstreamConnection> owned = std::move(*it);
  idle.erase(it);
  worker_.stats().add(slot(conn.server), why);
  retire(std::move(owned));
}

void UpstreamPool::retire(std::unique_ptr<UpstreamConnection> conn) {
  if (!conn) return;
  conn->set_owner(nullptr);
  conn->close();
  auto& s = servers_[conn->server];
  if (s.open > 0) --s.open;
  publish(conn->server);
  // Possibly on this connection's own callback stack: free it next turn.
  worker_.defer_delete(std::move(conn));
}

void UpstreamPool::on_upstream_readable(UpstreamConnection& conn) {
  // A backend has nothing to say on an idle connection; bytes now mean the
  // framing is in doubt (or an unsolicited 408). Either way it cannot be reused.
  evict(conn, Counter::evict_closed_by_backend);
}

void UpstreamPool::on_upstream_drained(UpstreamConnection&) {}

void UpstreamPool::on_upstream_event(UpstreamConnection& conn, short what) {
  if (what & Stream::timeout) evict(conn, conn.idle_expiry);
  else evict(conn, Counter::evict_closed_by_backend);
}

}  // namespace holdfast
