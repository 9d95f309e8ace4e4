// The composition root: builds everything from a validated Config (logging,
// resolved upstream addresses, routes, listening sockets, workers), runs the
// workers, applies reloads and drains them on request. Nothing else turns
// config into objects.
//
// Reload: a new file (SIGHUP, or a change seen by inotify with
// reload_on_change) or a new DNS answer becomes a new immutable
// ConfigVersion, handed to every worker, which switches at its next loop
// turn. Anything wrong with it (a config error, a setting that needs a
// restart, a name that does not resolve, an address that cannot be bound)
// rejects it as a whole: the running version stays. All of this happens on
// the thread that calls run() (the control thread); the admin thread only
// reads.
#pragma once

#include <signal.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "holdfast/admin.hpp"
#include "holdfast/config.hpp"
#include "holdfast/dns.hpp"
#include "holdfast/health_check.hpp"
#include "holdfast/stats.hpp"
#include "holdfast/version.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

class Server {
 public:
  // Throws ConfigError when a name cannot be resolved or an address bound:
  // these are startup failures, reported like config errors.
  explicit Server(Config config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The addresses actually listened on ("127.0.0.1:43121"), port 0 resolved,
  // at startup.
  const std::vector<std::string>& listening() const { return listening_; }
  // The admin listener's address, empty when admin is off.
  const std::string& admin_address() const { return admin_address_; }

  void start();
  // Control thread: until SIGTERM or SIGINT (which must be blocked in every
  // thread, as must SIGHUP), reloads on SIGHUP, on config file changes when
  // reload_on_change is set, and on DNS answers that changed; then drains.
  // Returns the signal that ended it.
  int run(const sigset_t& signals);
  // Control thread: reads the config file again and applies it. false: the
  // running version stays (every error is logged).
  bool reload(const std::string& cause);
  // Thread-safe: marks the server draining at once (/ready answers 503 from
  // here on), then asks each worker to drain at its next loop turn.
  void request_drain();
  void wait();           // joins the workers

  // Thread-safe: read by the admin thread while the workers run.
  std::shared_ptr<const ConfigVersion> version() const { return std::atomic_load(&version_); }
  Snapshot snapshot(std::size_t slots) const;  // every worker's figures, merged
  Snapshot snapshot() const { return snapshot(version()->layout.slots); }
  bool draining() const noexcept { return draining_.load(std::memory_order_relaxed); }
  bool live() const noexcept;  // every worker's event loop runs
  unsigned worker_count() const noexcept { return static_cast<unsigned>(workers_.size()); }

 private:
  // Resolves, builds, binds and publishes `declared` with `names`; on any
  // failure logs it and changes nothing. Control thread.
  bool apply(Config declared, const NameTable& names, const std::string& cause);
  // Opens one socket per worker for `ep`; false (and nothing left open) on error.
  bool open_listener(const Endpoint& ep, unsigned workers, int backlog, std::vector<int>& fds, std::string& actual,
                     std::string& error);
  // Sockets bound for the listen addresses a version adds: each worker's,
  // and (address as written, address bound) of each. Owned here until
  // handed to the workers.
  struct NewListeners {
    std::vector<std::vector<ListenSocket>> per_worker;
    std::vector<std::pair<std::string, std::string>> bound;
    void close_all() noexcept;
  };
  // Binds every address of `cfg.listen` that has no socket yet (at startup:
  // all); false with `error`, and nothing left open, when one cannot be bound.
  bool bind_new_listeners(const Config& cfg, unsigned workers, NewListeners& out, std::string& error);
  // Health of a version's servers: slots new to their server start down when
  // their checks say so, and without checks nothing keeps a server down.
  void set_initial_health(const ConfigVersion& v, const std::vector<std::size_t>& fresh);
  // Control thread: the config file's directory is watched (reload_on_change).
  void watch_config(int inotify_fd);
  // Reads the config file into `text` (nullopt when it cannot be opened);
  // true when that differs from what was last loaded.
  bool config_changed(std::optional<std::string>& text);
  static std::optional<std::string> read_text(const std::string& path);
  // reload() with the file's text already read (nullopt: it could not be opened).
  bool reload_from(const std::string& cause, std::optional<std::string> text);
  void restart_checker(std::shared_ptr<const ConfigVersion> v);
  void on_dns_answer(const std::string& name, const std::vector<std::string>& addresses);
  void apply_dns_answers();
  void count(Counter c);

  std::unique_ptr<SharedState> shared_;
  SlotRegistry slots_;                             // control thread only
  std::shared_ptr<const ConfigVersion> version_;   // read with atomic_load by other threads
  std::uint64_t next_version_ = 2;
  std::optional<std::string> last_text_;           // the file as last read, to ignore touches
  std::vector<int> config_watches_;                // inotify watches of the control thread
  std::map<std::string, std::string> listeners_;   // key as written -> address bound
  std::vector<std::unique_ptr<Worker>> workers_;
  mutable std::mutex checker_mutex_;               // checker_ and checker_retired_, swapped on reload
  // The one active health checker (idle when no upstream has health_check);
  // it reads the version it was built from and the shared health table.
  std::unique_ptr<HealthChecker> checker_;
  std::shared_ptr<const ConfigVersion> checker_version_;
  Snapshot checker_retired_{kMaxSlots};            // figures of checkers replaced by reloads
  Stats control_stats_{1};                         // written by the control thread only
  std::vector<std::string> listening_;
  std::string admin_address_;
  std::atomic<bool> draining_{false};
  bool started_ = false;                           // control thread: start() ran
  // DNS: answers that changed arrive on the watcher's thread and wait here
  // for the control thread, which the eventfd wakes.
  std::mutex dns_mutex_;
  NameTable dns_pending_;
  int wake_fd_ = -1;
  std::unique_ptr<DnsWatcher> dns_;
  // Declared last so it is destroyed first: its thread reads the workers.
  std::unique_ptr<Admin> admin_;
};

}  // namespace holdfast
