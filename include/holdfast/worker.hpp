// One worker: an event loop on its own thread, with its own listeners, pools,
// balancers and counters. Workers share nothing mutable; what they share
// (config, routes, resolved addresses) is immutable after startup and owned
// by the Server.
#pragma once

#include <event2/event.h>
#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "holdfast/access_log.hpp"
#include "holdfast/balancer.hpp"
#include "holdfast/client_connection.hpp"
#include "holdfast/intrusive_list.hpp"
#include "holdfast/config.hpp"
#include "holdfast/errors.hpp"
#include "holdfast/health.hpp"
#include "holdfast/listener.hpp"
#include "holdfast/router.hpp"
#include "holdfast/stats.hpp"
#include "holdfast/upstream_pool.hpp"

namespace holdfast {

// Built once by the Server from the validated config; read-only afterwards.
struct SharedState {
  Config config;
  Router router;
  std::vector<std::vector<ServerAddress>> servers;  // per upstream group
  std::shared_ptr<spdlog::logger> access_log;       // null when off
  MetricsLayout layout;                             // which Stats slot is which server
  // Process-wide server health, indexed by Stats slot; its atomics are
  // written by every worker and the health checker (see health.hpp).
  std::unique_ptr<HealthTable> health;
};

// What Worker::pick_server found.
struct ServerPick {
  std::optional<std::size_t> server;  // with a slot reserved on it (UpstreamPool::reserve)
  bool at_capacity = false;           // none: every server that could take it is at max_conns
  std::string why;                    // none: what kept each server out
};

// One Stats slot per configured server, after the worker-wide slot 0.
MetricsLayout metrics_layout(const Config& config);

class Worker {
 public:
  // Takes ownership of `listen_fds` (bound, listening, non-blocking).
  Worker(const SharedState& shared, unsigned index, std::vector<int> listen_fds);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void start();          // runs the loop on a new thread
  void join();
  // Thread-safe (async-signal-safe too): asks the worker to stop accepting and drain.
  void request_drain();

  // For objects of this worker only (called on its thread).
  event_base* base() const noexcept { return base_; }
  const Config& config() const noexcept { return shared_.config; }
  const Router& router() const noexcept { return shared_.router; }
  UpstreamPool& pool(std::size_t group) { return *pools_[group]; }
  HealthTable& health() const noexcept { return *shared_.health; }
  // A server of `group` for the next attempt: an eligible one (up, not
  // ejected, under max_conns), never `avoid` while another is eligible. The
  // pick holds one slot on its server, which the caller's next acquire() or
  // open() on the group's pool uses up.
  ServerPick pick_server(std::size_t group, const MessageHead& request, std::string_view client_ip,
                         std::optional<std::size_t> avoid, std::optional<std::size_t> prefer = std::nullopt);
  // Whether a server of `group` other than `server` could take a request now.
  bool has_alternative(std::size_t group, std::size_t server) const;
  // Passive health: an attempt on `server` failed with `error` (only connect
  // errors and timeouts count against it).
  void note_server_failure(std::size_t group, std::size_t server, ProxyError error, bool reused);
  Stats& stats() noexcept { return stats_; }
  // Any thread: the Stats are atomics written by this worker only.
  const Stats& stats() const noexcept { return stats_; }
  // Any thread: true while the event loop runs.
  bool running() const noexcept { return running_.load(std::memory_order_relaxed); }
  // An exchange ended: counts it for its server and writes the access log line.
  void finish_exchange(const ExchangeRecord& record);
  unsigned index() const noexcept { return index_; }
  // Tunnels open on this worker (the tunnels_active gauge).
  void adjust_tunnels(int delta) noexcept {
    tunnels_ += delta;
    stats_.set(0, Gauge::tunnels_active, tunnels_);
  }
  std::uint64_t next_id() noexcept { return (next_id_++ << 8) | index_; }
  bool draining() const noexcept { return draining_; }

  // Destroys `object` on the next loop turn, so that nothing is freed while
  // one of its own callbacks is still on the stack.
  template <typename T>
  void defer_delete(std::unique_ptr<T> object) {
    if (!object) return;
    retired_.emplace_back(object.release(), [](void* p) { delete static_cast<T*>(p); });
    schedule_reaper();
  }

  // Client connections register themselves so drain and shutdown can reach them.
  void add_client(std::unique_ptr<ClientConnection> conn);
  // Hands the connection's ownership to the reaper (called by the connection).
  void remove_client(ClientConnection* conn);

  // Idle keep-alive client connections wait in one list in the order they
  // became idle; as they all share client.keepalive_timeout, that is also
  // the order of their deadlines, so one worker timer serves them all and an
  // idle connection carries no timer of its own.
  void mark_idle(ClientConnection* conn);
  void unmark_idle(ClientConnection* conn) {
    idle_.remove(conn);
    publish_client_gauges();
  }

  // Runs conn->resume_after_exchange() later in this loop iteration, on a
  // fresh stack: an exchange never starts the next one from inside itself.
  void post_resume(ClientConnection* conn);

 private:
  void run();
  void schedule_reaper();
  void begin_drain();
  void maybe_finish_drain();
  static void on_reap(evutil_socket_t, short, void*);
  static void on_drain_request(evutil_socket_t, short, void*);
  static void on_drain_deadline(evutil_socket_t, short, void*);
  static void on_idle_timer(evutil_socket_t, short, void*);
  static void on_resume(evutil_socket_t, short, void*);
  std::chrono::milliseconds idle_limit() const noexcept;
  void arm_idle_timer();
  void on_accept(int fd, const sockaddr* addr, int len);
  void close_all_clients();
  void publish_client_gauges() noexcept;
  // The server answered `status`: passive health success, or failure for a
  // 5xx when the upstream says fail_on_5xx.
  void note_server_answer(std::size_t group, std::size_t server, int status);
  enum class OutBecause { in, checked_down, ejected, at_max_conns };
  OutBecause why_out(std::size_t group, std::size_t server, HealthClock::time_point now) const;
  void log_health_change(std::size_t group, std::size_t server, HealthChange change, Millis ejected_for,
                         std::string_view cause);

  const SharedState& shared_;
  unsigned index_;
  event_base* base_ = nullptr;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::unique_ptr<UpstreamPool>> pools_;
  std::vector<std::unique_ptr<Balancer>> balancers_;
  std::vector<Candidate> candidates_;   // scratch for pick_server
  Stats stats_;
  std::uint64_t next_id_ = 1;
  std::int64_t tunnels_ = 0;
  bool draining_ = false;
  // Owned: each is deleted through remove_client (or at shutdown).
  IntrusiveList<ClientConnection, &ClientConnection::all_link> clients_;
  IntrusiveList<ClientConnection, &ClientConnection::idle_link> idle_;
  IntrusiveList<ClientConnection, &ClientConnection::resume_link> resume_;
  event* resume_event_ = nullptr;
  event* idle_timer_ = nullptr;
  bool idle_timer_armed_ = false;
  std::vector<std::unique_ptr<void, void (*)(void*)>> retired_;
  event* reap_event_ = nullptr;
  event* drain_request_event_ = nullptr;
  int drain_fd_ = -1;            // eventfd: the only way other threads talk to this worker
  bool reap_scheduled_ = false;
  event* drain_deadline_event_ = nullptr;
  std::atomic<bool> running_{false};
  std::thread thread_;
};

}  // namespace holdfast
