// The composition root: builds everything from a validated Config (logging,
// resolved upstream addresses, routes, listening sockets, workers), runs the
// workers and drains them on request. Nothing else turns config into objects.
#pragma once

#include <memory>
#include <vector>

#include "holdfast/config.hpp"
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

  void start();
  void request_drain();  // thread-safe
  void wait();           // joins the workers
  Stats totals() const;  // after wait()

 private:
  std::unique_ptr<SharedState> shared_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::string> listening_;
};

}  // namespace holdfast
