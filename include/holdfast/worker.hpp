// One worker: an event loop on its own thread, with its own listeners, pools,
// balancers and counters. Workers share nothing mutable; what they share is
// an immutable configuration version (config, routes, resolved addresses),
// replaced as a whole on reload, and the process-wide health table.
#pragma once

#include <event2/event.h>
#include <spdlog/logger.h>

#include <atomic>
#include <mutex>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "holdfast/access_log.hpp"
#include "holdfast/generation.hpp"
#include "holdfast/client_connection.hpp"
#include "holdfast/intrusive_list.hpp"
#include "holdfast/parking.hpp"
#include "holdfast/config.hpp"
#include "holdfast/errors.hpp"
#include "holdfast/health.hpp"
#include "holdfast/heap_trim.hpp"
#include "holdfast/listener.hpp"
#include "holdfast/router.hpp"
#include "holdfast/stats.hpp"
#include "holdfast/upstream_pool.hpp"

namespace holdfast {

// Process-wide state every worker shares, built once by the Server and
// owned by it: nothing here changes with a reload.
struct SharedState {
  // Server health, indexed by Stats slot; its atomics are written by every
  // worker and the health checker (see health.hpp).
  std::unique_ptr<HealthTable> health;
  std::shared_ptr<spdlog::logger> access_log;  // null when off
};

// A listening socket handed to a worker, with the address it was asked for
// as written in the config (what a reload compares).
struct ListenSocket {
  std::string key;
  int fd = -1;
};

// Logs "reload: version N active (cause)" when destroyed.
// Not copyable: each copy would say it again.
struct ReloadAnnouncement {
  ReloadAnnouncement(std::uint64_t v, std::string c) : version(v), cause(std::move(c)) {}
  ReloadAnnouncement(const ReloadAnnouncement&) = delete;
  ReloadAnnouncement& operator=(const ReloadAnnouncement&) = delete;
  ~ReloadAnnouncement();
  std::uint64_t version;
  std::string cause;
};

// What a reload tells one worker: the version to switch to, sockets it now
// listens on too, and the listeners it stops.
struct WorkerUpdate {
  std::shared_ptr<const ConfigVersion> version;
  std::vector<ListenSocket> add;
  std::vector<std::string> remove;
  // Slots handed to a server for the first time: this worker's figures in
  // them belonged to a server long gone, and are zeroed.
  std::vector<std::size_t> fresh_slots;
  // Shared by the updates of one reload and the Server while it posts them;
  // the last owner to let go says that the version is active, so the line
  // comes once every worker has switched (tests and operators wait for it).
  std::shared_ptr<const ReloadAnnouncement> announcement;
};

class Worker {
 public:
  // Takes ownership of the listening sockets (bound, listening, non-blocking).
  Worker(SharedState& shared, unsigned index, std::shared_ptr<const ConfigVersion> version,
         std::vector<ListenSocket> listeners);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void start();          // runs the loop on a new thread
  void join();
  // Thread-safe (async-signal-safe too): asks the worker to stop accepting and drain.
  void request_drain();
  // Thread-safe: the worker switches at its next loop turn (in the order posted).
  void post_update(WorkerUpdate update);

  // For objects of this worker only (called on its thread).
  event_base* base() const noexcept { return base_; }
  // The current version: new requests use it; exchanges keep their own.
  const std::shared_ptr<Generation>& generation() const noexcept { return current_; }
  const Config& config() const noexcept { return current_->config(); }
  const Router& router() const noexcept { return current_->router(); }
  UpstreamPool& pool(std::size_t group) { return current_->pool(group); }
  HealthTable& health() const noexcept { return *shared_.health; }
  spdlog::logger* access_log() const noexcept { return shared_.access_log.get(); }
  // Id of the version new requests use.
  std::uint64_t version_id() const noexcept { return current_->version().id; }
  Stats& stats() noexcept { return stats_; }
  // Any thread: the Stats are atomics written by this worker only.
  const Stats& stats() const noexcept { return stats_; }
  // Any thread: true while the event loop runs.
  bool running() const noexcept { return running_.load(std::memory_order_relaxed); }
  unsigned index() const noexcept { return index_; }
  // Tunnels open on this worker (the tunnels_active gauge).
  void adjust_tunnels(int delta) noexcept {
    tunnels_ += delta;
    stats_.set(0, Gauge::tunnels_active, tunnels_);
  }
  std::uint64_t next_id() noexcept { return (next_id_++ << 8) | index_; }
  bool draining() const noexcept { return draining_; }

  // Destroys `object` once the current event callback has returned (at the
  // end of its LoopClock::Turn, or on the next loop turn outside one), so
  // that nothing is freed while one of its own callbacks is on the stack.
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
  // The steady clock in milliseconds modulo 2^32: an idle connection's
  // timestamp in 4 bytes. Differences taken modulo 2^32 are right for any
  // idle time below 49 days, across the wrap too.
  static std::uint32_t clock_ms(Clock::time_point t) noexcept {
    return static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count());
  }
  void unmark_idle(ClientConnection* conn) {
    if (conn->listed_in == ClientConnection::ClientList::idle) move_to(conn, ClientConnection::ClientList::active);
    publish_client_gauges();
  }

  // Runs conn->resume_after_exchange() once the current event callback has
  // returned (as defer_delete), on a stack without the exchange's frames:
  // an exchange never starts the next one from inside itself.
  void post_resume(ClientConnection* conn);

 private:
  void run();
  void schedule_reaper();
  void begin_drain();
  void maybe_finish_drain();
  static void on_reap(evutil_socket_t, short, void*);
  // The worker's turn-end work (LoopClock::Turn): deletions, then resumes.
  static void finish_turn(void* arg) noexcept;
  void reap();
  void run_resumes();
  static void on_drain_request(evutil_socket_t, short, void*);
  static void on_drain_deadline(evutil_socket_t, short, void*);
  static void on_idle_timer(evutil_socket_t, short, void*);
  static void on_park_timer(evutil_socket_t, short, void*);
  static void on_trim_timer(evutil_socket_t, short, void*);
  void arm_park_timer();
  // How long `c` has been idle at `now_ms` (clock_ms).
  static std::chrono::milliseconds idle_for(const ClientConnection* c, std::uint32_t now_ms) noexcept {
    return std::chrono::milliseconds(static_cast<std::uint32_t>(now_ms - c->idle_since_ms));
  }
  static void add_timer(event* timer, std::chrono::milliseconds after) noexcept;  // after < 0: at once
  static void on_resume(evutil_socket_t, short, void*);
  std::chrono::milliseconds idle_limit() const noexcept;
  void arm_idle_timer();
  void on_accept(int fd, const sockaddr* addr, int len);
  void close_all_clients();
  void publish_client_gauges() noexcept;
  // Moves conn from the list that holds it to the end of `to` (none: out of all).
  void move_to(ClientConnection* conn, ClientConnection::ClientList to) noexcept;
  std::size_t client_count() const noexcept { return active_.size() + idle_.size() + resume_.size(); }
  // Client connections reading a request or in an exchange: active ones that are not tunnels.
  std::size_t busy_clients() const noexcept {
    auto active = active_.size() + resume_.size();
    auto tunnels = static_cast<std::size_t>(tunnels_);
    return active > tunnels ? active - tunnels : 0;
  }
  void apply_updates();

  SharedState& shared_;
  unsigned index_;
  event_base* base_ = nullptr;
  // Keyed by the address as written in the config.
  std::vector<std::pair<std::string, std::unique_ptr<Listener>>> listeners_;
  Stats stats_;
  std::shared_ptr<Generation> current_;
  std::mutex updates_mutex_;
  std::vector<WorkerUpdate> updates_;      // posted by the Server, taken by this worker
  std::atomic<bool> drain_requested_{false};
  std::uint64_t next_id_ = 1;
  std::int64_t tunnels_ = 0;
  bool draining_ = false;
  // Owned: each is deleted through remove_client (or at shutdown).
  // Every client connection is in exactly one of these (see ClientConnection::listed_in).
  using ClientLists = IntrusiveList<ClientConnection, &ClientConnection::list_link>;
  ClientLists active_;
  ClientLists idle_;
  ClientLists resume_;
  event* resume_event_ = nullptr;
  event* idle_timer_ = nullptr;
  bool idle_timer_armed_ = false;
  // Idle connections park (parking.hpp) in the order they became idle:
  // park_cursor_ is the first one in idle_ not yet tried, null when all were.
  std::unique_ptr<ParkingLot> lot_;
  ClientConnection* park_cursor_ = nullptr;
  event* park_timer_ = nullptr;
  bool park_timer_armed_ = false;
  // Gives the heap freed after a burst back to the system (heap_trim.hpp).
  HeapTrimPolicy trim_policy_;
  event* trim_timer_ = nullptr;
  std::vector<std::unique_ptr<void, void (*)(void*)>> retired_;
  std::vector<std::unique_ptr<void, void (*)(void*)>> reaping_;  // the batch on_reap is deleting
  event* reap_event_ = nullptr;
  event* drain_request_event_ = nullptr;
  int drain_fd_ = -1;            // eventfd: the only way other threads wake this worker (drain, updates)
  bool reap_scheduled_ = false;
  event* drain_deadline_event_ = nullptr;
  std::atomic<bool> running_{false};
  std::thread thread_;
};

}  // namespace holdfast
