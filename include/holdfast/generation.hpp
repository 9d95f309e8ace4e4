// One worker's view of one configuration version: the pools and balancers
// built for it, and the decisions that read them (which server takes an
// attempt, what a failure or an answer says about a server, the accounting
// of an ended exchange).
//
// Ownership: the Worker holds its current generation; every exchange and
// tunnel holds the generation it started on (std::shared_ptr), so a reload
// never changes the routes, servers or limits under a request in flight.
// Pools of servers kept across versions share those servers' connections
// (UpstreamPool's constructor adopts them); the rest drain as their
// exchanges end. A generation is used on its worker's thread only.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "holdfast/access_log.hpp"
#include "holdfast/balancer.hpp"
#include "holdfast/errors.hpp"
#include "holdfast/health.hpp"
#include "holdfast/http_message.hpp"
#include "holdfast/upstream_pool.hpp"
#include "holdfast/version.hpp"

namespace holdfast {

class Worker;

// What Generation::pick_server found.
struct ServerPick {
  std::optional<std::size_t> server;  // with a slot reserved on it (UpstreamPool::reserve)
  bool at_capacity = false;           // none: every server that could take it is at max_conns
  std::string why;                    // none: what kept each server out
};

class Generation {
 public:
  // `previous`: the worker's generation until now (its pools lend the
  // servers this version keeps), or null at startup.
  Generation(Worker& worker, std::shared_ptr<const ConfigVersion> version, Generation* previous);
  ~Generation();
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  const ConfigVersion& version() const noexcept { return *version_; }
  const Config& config() const noexcept { return version_->config; }
  const Router& router() const noexcept { return version_->router; }
  UpstreamPool& pool(std::size_t group) { return *pools_[group]; }

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
  // An exchange ended: counts it for its server and writes the access log line.
  void finish_exchange(const ExchangeRecord& record);

  // The next generation was built from this one: servers it did not keep drain.
  void drain_unadopted();
  void close_idle();

 private:
  enum class OutBecause { in, checked_down, ejected, at_max_conns };
  OutBecause why_out(std::size_t group, std::size_t server, HealthClock::time_point now) const;
  // The server answered `status`: passive health success, or failure for a
  // 5xx when the upstream says fail_on_5xx.
  void note_server_answer(std::size_t group, std::size_t server, int status);
  void log_health_change(std::size_t group, std::size_t server, HealthChange change, Millis ejected_for,
                         std::string_view cause);

  Worker& worker_;
  std::shared_ptr<const ConfigVersion> version_;
  std::vector<std::unique_ptr<UpstreamPool>> pools_;
  std::vector<std::unique_ptr<Balancer>> balancers_;
  std::vector<Candidate> candidates_;  // scratch for pick_server
};

}  // namespace holdfast
