// Active health checks: one thread for the whole process (not one per
// worker) that sends `GET path` to every server of each upstream with a
// `health_check`, on keep-alive connections of its own that never enter the
// pools, and turns `fall` failed checks in a row into "down" and `rise`
// passed ones into "up" in the shared HealthTable.
//
// Checks run one after another within a round (each bounded by its timeout);
// a round starts every `interval` per upstream. The checker writes its own
// Stats (check failures, recoveries), which the Server merges with the
// workers' when it is read.
//
// Ownership: owned by the Server; started after the workers, stopped (and
// joined) before them.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "holdfast/config.hpp"
#include "holdfast/health.hpp"
#include "holdfast/stats.hpp"
#include "holdfast/upstream_pool.hpp"

namespace holdfast {

class HealthChecker {
 public:
  // `servers` are the resolved addresses per upstream, `layout` maps them to
  // slots of `table`. Nothing runs until start().
  HealthChecker(const Config& config, const std::vector<std::vector<ServerAddress>>& servers,
                const MetricsLayout& layout, HealthTable& table);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // True when some upstream has a health_check (otherwise no thread is started).
  bool enabled() const noexcept { return !targets_.empty(); }
  void start();
  void stop();  // thread-safe, idempotent
  const Stats& stats() const noexcept { return stats_; }

 private:
  struct Target {
    const UpstreamConfig* upstream;
    const HealthCheckConfig* check;
    const ServerAddress* address;
    std::size_t slot;
    int fd = -1;            // the kept-alive check connection, or -1
    bool up = true;
    unsigned passes = 0;    // in a row
    unsigned fails = 0;     // in a row
    HealthClock::time_point next{};
  };

  void run();
  // One check; true when it passed. `why` says what failed.
  bool check(Target& t, std::string& why);
  void record(Target& t, bool passed, const std::string& why);

  std::vector<Target> targets_;
  HealthTable& table_;
  Stats stats_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace holdfast
