// The keep-alive pool of one worker for one upstream group: idle connections
// per server, handed out newest first (LIFO) and taken back only when the
// caller vouches that the exchange ended exactly framed. It does not parse a
// byte of HTTP; the exchange tells it what the backend advertised.
//
// While a connection is idle the pool owns it and watches it: its read event
// stays armed, so EOF, unexpected bytes or the idle deadline close it at once.
//
// Connection slots (max_conns): a connection counts as active from the
// reserve() that precedes it until it goes idle or closes; reserve() takes
// the slot with a compare-and-swap on the process-wide count, so workers
// together never pass the cap. Requests that found every server at its cap
// wait in the pool's queue(), which hears of each slot freed here.
#pragma once

#include <sys/socket.h>

#include <memory>
#include <optional>
#include <vector>

#include "holdfast/config.hpp"
#include "holdfast/errors.hpp"
#include "holdfast/headers.hpp"
#include "holdfast/idle_estimate.hpp"
#include "holdfast/stats.hpp"
#include "holdfast/upstream_connection.hpp"
#include "holdfast/wait_queue.hpp"

namespace holdfast {

class Worker;

struct ServerAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text;       // as shown in logs and metrics ("10.0.0.5:80", or "api.local:80=10.0.0.5")
  std::string authority;  // host:port as written in the config: the default Host towards this server
};

class UpstreamPool final : public UpstreamConnection::Owner {
 public:
  // `slots`: the Stats slot of each server (MetricsLayout). `previous`: the
  // same upstream's pool in the worker's previous version, or null; each of
  // its servers with the same address and the same connection settings
  // (same_connection_settings) is adopted with its idle connections and what
  // was learned about it.
  UpstreamPool(Worker& worker, const UpstreamConfig& config, const std::vector<ServerAddress>& servers,
               const std::vector<std::size_t>& slots, UpstreamPool* previous = nullptr);
  ~UpstreamPool() override;
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // An idle connection to `server` that is quiet and open right now, or
  // nullptr. Dead ones met on the way are closed and counted, and so are
  // ones past their safe idle time. When `idempotent` is false, connections
  // within `margin` of the backend's known idle deadline (stated, declared or
  // observed) are skipped (closed) too: a POST must not race the backend.
  // `retryable`: the request would be sent again, whole, were the connection
  // found closed after it went out (it may then skip the liveness peek).
  // The caller owns what is returned and must set_owner() before the next
  // loop turn.
  std::unique_ptr<UpstreamConnection> acquire(std::size_t server, bool idempotent, bool retryable = false);

  // True when `conn`, its request count just updated, carries its last request.
  bool last_request(const UpstreamConnection& conn) const noexcept {
    return conn.requests >= config_.keepalive.max_requests || (conn.requests_left && *conn.requests_left == 0);
  }

  // Takes one active-connection slot on `server` for the caller's next
  // acquire() or open(): acquire() uses it up when it returns a connection,
  // open() always (a failed open gives it back). false: the server is at
  // max_conns over all workers. Without max_conns it always succeeds.
  bool reserve(std::size_t server);

  // A new connection, connecting. nullptr with `err` set when it failed at once.
  std::unique_ptr<UpstreamConnection> open(std::size_t server, int& err);

  // Takes a connection back after an exchange. `reusable` is the exchange's
  // verdict on framing and close tokens; the pool adds its own limits
  // (requests, lifetime, learned deadline, max_idle) and closes otherwise.
  void release(std::unique_ptr<UpstreamConnection> conn, bool reusable);

  // What the backend said in `Keep-Alive: timeout=N, max=M` on `conn`'s last
  // response. Both apply to `conn`; only timeout= is also remembered for new
  // connections to its server. max= is the number of requests left on that one
  // connection (Apache counts it down response by response and starts every
  // new connection afresh), so carrying it over would cut a fresh connection
  // short with another connection's spent budget.
  void learn(UpstreamConnection& conn, const KeepAliveHint& hint);

  // A request sent on `conn` after it was idle met the backend's close
  // before any response byte: the keep-alive race itself, which shows the
  // backend's idle timeout as well as an idle close does.
  void learn_from_race(const UpstreamConnection& conn);

  // An exchange on `server` failed with `error`: connect failures are counted
  // by reason and mark the server as failing until a connection to it works.
  void note_failure(std::size_t server, ProxyError error);

  // Closes every idle connection (shutdown).
  void close_idle();

  // After the next version's pools were built from this one: servers none
  // of them adopted are drained (idle connections close now, leased ones
  // when their exchange ends).
  void drain_unadopted();

  // Requests of this worker waiting for a slot of this group (max_conns).
  WaitQueue& queue() noexcept { return queue_; }

  const UpstreamConfig& config() const noexcept { return config_; }
  std::size_t server_count() const noexcept { return servers_.size(); }
  const ServerAddress& address(std::size_t server) const { return *addresses_[server]; }
  std::size_t idle_count(std::size_t server) const { return servers_[server]->idle.size(); }
  std::size_t slot(std::size_t server) const noexcept { return servers_[server]->slot; }

  // UpstreamConnection::Owner, for idle connections.
  void on_upstream_readable(UpstreamConnection& conn) override;
  void on_upstream_drained(UpstreamConnection& conn) override;
  void on_upstream_event(UpstreamConnection& conn, short what) override;

 private:
  // One server's connections and what was learned about it. Shared by the
  // pools of consecutive versions that keep the server with the same
  // connection settings; idle connections are owned here and report to the
  // pool of the newest version that holds the server (`home`).
  struct Server final : UpstreamConnection::Owner {
    Server(Worker& worker, std::size_t slot) : worker(worker), slot(slot) {}
    ~Server() override;
    void on_upstream_readable(UpstreamConnection& conn) override { home->on_upstream_readable(conn); }
    void on_upstream_drained(UpstreamConnection& conn) override { home->on_upstream_drained(conn); }
    void on_upstream_event(UpstreamConnection& conn, short what) override { home->on_upstream_event(conn, what); }

    Worker& worker;
    std::size_t slot;
    UpstreamPool* home = nullptr;  // null once no version holds it (then `idle` is empty)
    std::size_t index = 0;         // its index in home's list; idle connections carry it
    bool removed = false;          // drained: connections handed back close
    std::vector<std::unique_ptr<UpstreamConnection>> idle;  // back() is the newest
    std::optional<Millis> learned_timeout;  // the server's, for its new connections
    IdleCloseEstimate observed;             // from the server's own closes of idle connections
    std::size_t open = 0;  // connections opened here and not yet retired (idle or leased)
    std::size_t reserved = 0;  // slots taken by reserve() not yet used by acquire() or open()
    std::int64_t shared_active = 0;  // this server's share of the HealthTable's active count
    std::int64_t published_idle = 0;    // its share of the worker's upstream_idle gauge
    std::int64_t published_active = 0;  // and of upstream_active
    Clock::time_point mass_close_at{};  // connections of different ages closed at once (a restart)
  };

  // The backend's idle timeout for `conn` as far as holdfast knows it at
  // `now`: what it stated (or the operator declared), capped by what it was
  // seen to do; nullopt when neither is known.
  std::optional<Millis> backend_timeout(const UpstreamConnection& conn, Clock::time_point now) const;
  // How long `conn`, idle since `idle_since`, may stay idle from `now`, or
  // nullopt if it must not be pooled (any more); `why` names the limit.
  std::optional<Millis> idle_budget(const UpstreamConnection& conn, Clock::time_point idle_since,
                                    Clock::time_point now, Counter* why) const;
  // `conn` was closed by its backend after `idle` of idleness (found while
  // idle, at checkout, or by the request sent on it): what that says about
  // the backend's timeout.
  void observe_close(const UpstreamConnection& conn, Millis idle, Clock::time_point now);
  void observe_idle_end(const UpstreamConnection& conn);
  // The server's known timeout went down: idle connections get the shorter deadline.
  void rearm_idle(std::size_t server, Clock::time_point now);
  // Closes `conn` if it is in an idle list (false when it is not the pool's).
  bool evict(UpstreamConnection& conn, Counter why);
  void retire(std::unique_ptr<UpstreamConnection> conn);
  void close_idle_of(Server& s);
  // Publishes `server`'s active and idle gauges after its lists changed.
  void publish(std::size_t server);

  Worker& worker_;
  const UpstreamConfig& config_;
  std::vector<const ServerAddress*> addresses_;
  std::vector<std::shared_ptr<Server>> servers_;
  WaitQueue queue_;
};

}  // namespace holdfast
