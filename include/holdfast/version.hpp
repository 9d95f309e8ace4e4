// Configuration versions. A ConfigVersion is immutable once built: the
// validated Config with every server host name expanded to the addresses it
// resolved to, the routes, the resolved addresses and the metrics layout.
// The Server builds one at startup and one per reload or DNS change; workers
// switch to the newest at their next loop turn, while each exchange keeps the
// version it started with (it holds a shared_ptr) until it ends.
//
// Ownership: versions are shared (std::shared_ptr<const ConfigVersion>) by
// the Server, every worker's current generation, and exchanges in flight.
// The SlotRegistry is the Server's and is only used on its control thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "holdfast/config.hpp"
#include "holdfast/dns.hpp"
#include "holdfast/router.hpp"
#include "holdfast/stats.hpp"
#include "holdfast/upstream_pool.hpp"

namespace holdfast {

struct ConfigVersion {
  std::uint64_t id = 1;
  // As the operator wrote it: compared with the next file on reload, and
  // the source of the names the DNS watcher follows.
  Config declared;
  // `declared` with each server that names a host replaced by one server per
  // address (same weight); everything on the data path reads this one.
  Config config;
  Router router{{}};
  std::vector<std::vector<ServerAddress>> servers;  // per upstream, parallel to config.upstreams[g].servers
  MetricsLayout layout;
  NameTable names;  // the answers `config` was built with
};

// Gives each (upstream, server) the same Stats and health slot in every
// version, so a server kept across reloads keeps its counters and health.
// A slot no version uses any more is handed out again only after
// kSlotQuarantine, when exchanges that still counted on it have long ended
// (its figures and health are reset then). Control thread only; copied to
// try a version, kept only when the version is accepted.
class SlotRegistry {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kSlotQuarantine = std::chrono::minutes(15);

  // The slot of `server` of `upstream`: its own, a new one, or one released
  // long enough ago; nullopt when all kMaxSlots are taken.
  std::optional<std::size_t> slot(const std::string& upstream, const std::string& server, Clock::time_point now);
  // Slots handed out to a server for the first time since the last call
  // (new, or reused: their figures and health are not that server's).
  std::vector<std::size_t> take_fresh();
  // After a version is accepted: servers it does not hold give their slots up.
  void retain_only(const std::set<std::size_t>& in_use, Clock::time_point now);
  std::size_t used() const noexcept { return next_; }

 private:
  std::map<std::string, std::size_t> slots_;                // upstream '\n' server -> slot
  std::vector<std::pair<std::size_t, Clock::time_point>> released_;  // oldest first
  std::vector<std::size_t> fresh_;
  std::size_t next_ = 1;  // slot 0 is the worker-wide one
};

// Builds a version from a validated config and the answers for its host
// names. Throws ConfigError (FILE: upstreams.NAME: ...) when an address is
// missing from `names`, does not parse, or the slots are used up: a reload
// that cannot be built changes nothing.
std::shared_ptr<const ConfigVersion> build_version(std::uint64_t id, Config declared, const NameTable& names,
                                                   SlotRegistry& slots);

}  // namespace holdfast
