#include "holdfast/upstream_pool.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "holdfast/loop_clock.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

UpstreamPool::UpstreamPool(Worker& worker, const UpstreamConfig& config, const std::vector<ServerAddress>& servers,
                           const std::vector<std::size_t>& slots, UpstreamPool* previous)
    : worker_(worker),
      config_(config),
      // A slot may come free where this queue does not hear of it: on another
      // worker, or as a server ends its ejection or passes its health checks.
      // So it looks again every few milliseconds while anyone waits.
      queue_(worker.base(), config.balancing.queue.size, config.balancing.queue.timeout,
             std::optional<Millis>(kQueueRecheck)) {
  const bool same = previous && same_connection_settings(previous->config_, config);
  for (std::size_t i = 0; i < servers.size(); ++i) {
    addresses_.push_back(&servers[i]);
    std::shared_ptr<Server> kept;
    if (same)
      for (std::size_t j = 0; j < previous->servers_.size() && !kept; ++j)
        if (previous->servers_[j]->home == previous && previous->addresses_[j]->text == servers[i].text)
          kept = previous->servers_[j];
    if (!kept) kept = std::make_shared<Server>(worker, slots[i]);
    kept->home = this;
    kept->index = i;
    // Idle connections carry their index in the home pool's list.
    for (auto& c : kept->idle) c->server = i;
    servers_.push_back(std::move(kept));
  }
}

UpstreamPool::~UpstreamPool() {
  // Servers whose newest version this is close their idle connections now;
  // leased ones (held by exchanges of this version) close when handed back.
  drain_unadopted();
}

UpstreamPool::Server::~Server() {
  // Whatever this server still counted in the process-wide table and the
  // gauges leaves with it.
  worker.health().add_active(slot, -shared_active);
  worker.stats().adjust(slot, Gauge::upstream_idle, -published_idle);
  worker.stats().adjust(slot, Gauge::upstream_active, -published_active);
}

void UpstreamPool::drain_unadopted() {
  for (auto& s : servers_)
    if (s->home == this) {
      s->removed = true;
      close_idle_of(*s);
      s->home = nullptr;
    }
}

std::unique_ptr<UpstreamConnection> UpstreamPool::acquire(std::size_t server, bool idempotent, bool retryable) {
  auto& s = *servers_[server];
  const auto now = LoopClock::now();
  while (!s.idle.empty()) {
    std::unique_ptr<UpstreamConnection> conn = std::move(s.idle.back());
    s.idle.pop_back();
    conn->server = server;  // from here on it is this pool's (it may have idled in a newer version's)
    // The peek: a connection the backend closed (or wrote to) while idle is
    // dropped here at no cost to the request, before a byte is written.
    // It is skipped (one recv saved per reuse) only when it could tell
    // nothing newer than the event loop already knows: the socket's last
    // read drained it, and no edge of it was seen since or waits in this
    // turn's queue (see Stream::quiet_as_observed). A FIN that arrived after
    // this turn's epoll_wait (or after that read), or that did not fit in a
    // full epoll_wait batch, is then missed: the window is about a loop
    // turn, longer than the peek's. So only a request that would be sent
    // again whole on a fresh connection skips the peek (a missed FIN costs it
    // a retry); any other request always gets it. Connections idle for a
    // second or more keep it too: that is where backends' idle-timeout
    // closes land (none closes sooner, see IdleCloseEstimate::kShortest).
    const bool seen_quiet = retryable && now - conn->last_used < IdleCloseEstimate::kShortest &&
                            conn->stream().quiet_as_observed();
    if (!seen_quiet && !conn->quiet_and_open()) {
      worker_.stats().add(slot(server), Counter::evict_dead_at_checkout);
      // Retired first, so that the gauges observe_close() publishes no longer
      // count it; the object itself lives until the next loop turn.
      UpstreamConnection& dead = *conn;
      retire(std::move(conn));
      observe_close(dead, std::chrono::duration_cast<Millis>(now - dead.last_used), now);
      continue;
    }
    // The idle timer may not have run yet in this loop turn; and a request
    // that must not be sent twice keeps `margin` away from the backend's deadline.
    Counter why;
    if (!idle_budget(*conn, conn->last_used, now, &why)) {
      worker_.stats().add(slot(server), why);
      retire(std::move(conn));
      continue;
    }
    auto timeout = backend_timeout(*conn, now);
    if (!idempotent && timeout && now + config_.keepalive.margin >= conn->last_used + *timeout) {
      worker_.stats().add(slot(server), Counter::nonidempotent_skipped);
      retire(std::move(conn));
      continue;
    }
    conn->set_owner(nullptr);
    conn->acquired_at = now;
    worker_.stats().add(slot(server), Counter::upstream_reused);
    if (s.reserved > 0) --s.reserved;  // the slot is now this leased connection's
    publish(server);
    return conn;
  }
  return nullptr;
}

bool UpstreamPool::reserve(std::size_t server) {
  if (!worker_.health().try_add_active(slot(server), config_.balancing.max_conns)) return false;
  auto& s = *servers_[server];
  ++s.reserved;
  ++s.shared_active;  // already counted by try_add_active
  return true;
}

std::unique_ptr<UpstreamConnection> UpstreamPool::open(std::size_t server, int& err) {
  const auto& a = *addresses_[server];
  auto& s = *servers_[server];
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

std::optional<Millis> UpstreamPool::backend_timeout(const UpstreamConnection& conn, Clock::time_point now) const {
  const auto& ka = config_.keepalive;
  const auto& stated = conn.backend_idle_timeout;
  // An observation only matters below what would be used without it.
  Millis ceiling = stated ? *stated : ka.idle_timeout.value + ka.margin;
  auto seen = servers_[conn.server]->observed.value(now, ceiling);
  return seen ? seen : stated;
}

std::optional<Millis> UpstreamPool::idle_budget(const UpstreamConnection& conn, Clock::time_point idle_since,
                                                Clock::time_point now, Counter* why) const {
  const auto& ka = config_.keepalive;
  if (last_request(conn)) {
    *why = Counter::evict_max_requests;
    return std::nullopt;
  }
  auto end = idle_since + ka.idle_timeout.value;
  *why = Counter::evict_idle_timeout;
  if (auto timeout = backend_timeout(conn, now)) {
    // Give up `margin` before the backend does: its FIN may be in flight.
    if (*timeout <= ka.margin) {
      *why = Counter::evict_hint;
      return std::nullopt;
    }
    auto from_backend = idle_since + (*timeout - ka.margin);
    if (from_backend < end) {
      end = from_backend;
      *why = Counter::evict_hint;
    }
  }
  auto life_end = conn.created + ka.max_lifetime;
  if (life_end < end) {
    end = life_end;
    *why = Counter::evict_lifetime;
  }
  auto left = std::chrono::duration_cast<Millis>(end - now);
  if (left.count() <= 0) return std::nullopt;
  return left;
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
  const auto now = LoopClock::now();
  Counter why;
  auto budget = idle_budget(*conn, now, now, &why);
  if (!budget) {
    worker_.stats().add(slot(conn->server), why);
    retire(std::move(conn));
    return;
  }
  auto& s = *servers_[conn->server];
  if (s.removed) {
    // The server left the configuration: its connections close as they come back.
    worker_.stats().add(slot(conn->server), Counter::evict_not_reusable);
    retire(std::move(conn));
    return;
  }
  if (s.idle.size() >= config_.keepalive.max_idle) {
    // Keep the newest: drop the one that has waited longest.
    worker_.stats().add(slot(conn->server), Counter::evict_pool_full);
    auto oldest = std::move(s.idle.front());
    s.idle.erase(s.idle.begin());
    oldest->server = conn->server;
    retire(std::move(oldest));
  }
  conn->last_used = now;
  conn->idle_expiry = why;
  // Idle, it belongs to its server's entry, which reports to the newest
  // version's pool; it carries its index there.
  const auto server = conn->server;
  conn->server = s.index;
  conn->set_owner(&s);
  // Idle: the read event stays armed (EOF or bytes close it at once) and the
  // read deadline is the idle budget.
  conn->stream().set_write_timeout(std::nullopt);
  conn->stream().set_read_timeout(*budget);
  conn->stream().enable_read();
  s.idle.push_back(std::move(conn));
  publish(server);
}

void UpstreamPool::learn(UpstreamConnection& conn, const KeepAliveHint& hint) {
  auto& s = *servers_[conn.server];
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
  for (auto& s : servers_)
    if (s->home == this) close_idle_of(*s);
}

void UpstreamPool::close_idle_of(Server& s) {
  // One at a time, each off the list before retire() publishes the gauges
  // (and the shared active count) that read it.
  while (!s.idle.empty()) {
    auto c = std::move(s.idle.back());
    s.idle.pop_back();
    c->server = s.index;
    retire(std::move(c));
  }
}

void UpstreamPool::publish(std::size_t server) {
  auto& s = *servers_[server];
  auto idle = static_cast<std::int64_t>(s.idle.size());
  auto active = static_cast<std::int64_t>(s.open) - idle;
  // By difference: a server removed and added again has two entries on one
  // slot for a while (the old one draining), each counting only its own.
  worker_.stats().adjust(s.slot, Gauge::upstream_idle, idle - s.published_idle);
  worker_.stats().adjust(s.slot, Gauge::upstream_active, active - s.published_active);
  s.published_idle = idle;
  s.published_active = active;
  // least_conn, random_two and max_conns read the count over all workers;
  // it includes the slots reserved for a connection about to be leased or opened.
  const auto shared = active + static_cast<std::int64_t>(s.reserved);
  if (shared != s.shared_active) {
    worker_.health().add_active(slot(server), shared - s.shared_active);
    // A slot freed here goes to the oldest request waiting on this worker.
    if (shared < s.shared_active) queue_.notify();
    s.shared_active = shared;
  }
  // The observed timeout grows back with time; shown as it applies now. Until
  // a first observation the gauge stays 0, with no clock read per checkout.
  if (!s.observed.has_observation()) return;
  const auto& ka = config_.keepalive;
  auto seen = s.observed.value(LoopClock::now(), ka.idle_timeout.value + ka.margin);
  worker_.stats().set(slot(server), Gauge::observed_timeout_ms, seen ? seen->count() : 0);
}

bool UpstreamPool::evict(UpstreamConnection& conn, Counter why) {
  auto& idle = servers_[conn.server]->idle;
  auto it = std::find_if(idle.begin(), idle.end(), [&](const auto& p) { return p.get() == &conn; });
  if (it == idle.end()) return false;  // not ours: nothing to do
  std::unique_ptr<UpstreamConnection> owned = std::move(*it);
  idle.erase(it);
  worker_.stats().add(slot(conn.server), why);
  retire(std::move(owned));
  return true;
}

void UpstreamPool::retire(std::unique_ptr<UpstreamConnection> conn) {
  if (!conn) return;
  conn->set_owner(nullptr);
  conn->close();
  auto& s = *servers_[conn->server];
  if (s.open > 0) --s.open;
  publish(conn->server);
  // Possibly on this connection's own callback stack: free it next turn.
  worker_.defer_delete(std::move(conn));
}

void UpstreamPool::observe_idle_end(const UpstreamConnection& conn) {
  auto now = LoopClock::now();
  observe_close(conn, std::chrono::duration_cast<Millis>(now - conn.last_used), now);
}

void UpstreamPool::learn_from_race(const UpstreamConnection& conn) {
  auto now = LoopClock::now();
  // The race shows at once (the backend's FIN or reset answers the request);
  // a close long after sending is the backend failing on the request itself.
  if (now - conn.acquired_at > std::chrono::seconds(1)) return;
  observe_close(conn, std::chrono::duration_cast<Millis>(conn.acquired_at - conn.last_used), now);
}

void UpstreamPool::observe_close(const UpstreamConnection& conn, Millis idle, Clock::time_point now) {
  auto& s = *servers_[conn.server];
  // A backend closes its idle connections oldest first: while one idle for
  // longer is still open, this close was something else (a recycled worker,
  // one process restarted), not the backend's idle timeout.
  for (const auto& other : s.idle)
    if (other.get() != &conn && other->last_used < conn.last_used && other->quiet_and_open()) return;
  // Connections idle for different times closing together are a restart (a
  // deploy), not an idle timeout: each would otherwise teach a short bogus
  // timeout. The rest of that burst, handled after the list emptied, is
  // recognised by its time.
  constexpr auto kBurst = std::chrono::seconds(1);
  if (s.mass_close_at != Clock::time_point{} && now - s.mass_close_at < kBurst) return;
  for (const auto& other : s.idle) {
    if (other.get() == &conn || other->quiet_and_open()) continue;
    auto apart = other->last_used > conn.last_used ? other->last_used - conn.last_used : conn.last_used - other->last_used;
    if (apart > kBurst) {
      s.mass_close_at = now;
      spdlog::info("upstream {} ({}): idle connections of different ages closed together; a restart, not an idle "
                   "timeout",
                   config_.name, addresses_[conn.server]->text);
      return;
    }
  }
  if (!s.observed.observe(idle, now)) return;
  auto estimate = s.observed.value(now, Millis::max()).value_or(Millis(0));
  worker_.stats().add(slot(conn.server), Counter::idle_closes_learned);
  publish(conn.server);
  spdlog::info("upstream {} ({}): backend closed connection {} after {} idle; taking its idle timeout as {}",
               config_.name, addresses_[conn.server]->text, conn.id, format_duration(idle),
               format_duration(estimate));
  rearm_idle(conn.server, now);
}

void UpstreamPool::rearm_idle(std::size_t server, Clock::time_point now) {
  auto& s = *servers_[server];
  // Collected first: evict() changes the list. Idle connections carry their
  // index in the home pool, which may be a newer version's: for the look-ups
  // below they carry this pool's while they are handled here.
  std::vector<UpstreamConnection*> expired;
  for (auto& c : s.idle) {
    c->server = server;
    Counter why;
    auto budget = idle_budget(*c, c->last_used, now, &why);
    if (!budget) {
      expired.push_back(c.get());
      continue;
    }
    c->idle_expiry = why;
    c->stream().set_read_timeout(*budget);
    c->server = s.index;
  }
  for (auto* c : expired) evict(*c, Counter::evict_hint);
}

void UpstreamPool::on_upstream_readable(UpstreamConnection& conn) {
  // A backend has nothing to say on an idle connection; bytes now mean the
  // framing is in doubt (or an unsolicited 408 before its idle close).
  // Either way it cannot be reused.
  // Evicted first, so that the shorter deadlines then given to the others
  // do not count this one under another reason.
  if (evict(conn, Counter::evict_closed_by_backend)) observe_idle_end(conn);
}

void UpstreamPool::on_upstream_drained(UpstreamConnection&) {}

void UpstreamPool::on_upstream_event(UpstreamConnection& conn, short what) {
  if (what & Stream::timeout) {
    evict(conn, conn.idle_expiry);
    return;
  }
  if (evict(conn, Counter::evict_closed_by_backend)) observe_idle_end(conn);
}

}  // namespace holdfast
