// The composition root: builds everything from a validated Config (logging,
// resolved upstream addresses, routes, listening sockets, workers), runs the
// workers and drains them on request. Nothing else turns config into objects.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "holdfast/admin.hpp"
#include "holdfast/config.hpp"
#include "holdfast/health_check.hpp"
#include "holdfast/stats.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

class Server {
 public:
  // Throws ConfigError when an address cannot be resolved or bound: these are
  // startup failures, reported like config errors.
  explicit Server(Config config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The addresses actually listened on ("127.0.0.1:43121"), port 0 resolved.
  const std::vector<std::string>& listening() const { return listening_; }
  // The admin listener's address, empty when admin is off.
  const std::string& admin_address() const { return admin_address_; }

  void start();
  // Thread-safe: marks the server draining at once (/ready answers 503 from
  // here on), then asks each worker to drain at its next loop turn.
  void request_drain();
  void wait();           // joins the workers

  // Thread-safe: read by the admin thread while the workers run.
  Snapshot snapshot() const;  // every worker's figures, merged
  bool draining() const noexcept { return draining_.load(std::memory_order_relaxed); }
  bool live() const noexcept;  // every worker's event loop runs
  const MetricsLayout& layout() const noexcept { return shared_->layout; }
  unsigned worker_count() const noexcept { return static_cast<unsigned>(workers_.size()); }

 private:
  std::unique_ptr<SharedState> shared_;
  std::vector<std::unique_ptr<Worker>> workers_;
  // The one active health checker (idle when no upstream has health_check);
  // it reads shared_, so it is declared after it and destroyed before it.
  std::unique_ptr<HealthChecker> checker_;
  std::vector<std::string> listening_;
  std::string admin_address_;
  std::atomic<bool> draining_{false};
  // Declared last so it is destroyed first: its thread reads the workers.
  std::unique_ptr<Admin> admin_;
};

}  // namespace holdfast
