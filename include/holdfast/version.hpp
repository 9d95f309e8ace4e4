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

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "holdfast/config.hpp"
#include "holdfast/router.hpp"
#include "holdfast/stats.hpp"
#include "holdfast/upstream_pool.hpp"

namespace holdfast {

// Numeric addresses ("127.0.0.2", "::1") each server host name resolved to,
// sorted and unique. IP literals need no entry.
using NameTable = std::map<std::string, std::vector<std::string>>;

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
class SlotRegistry {
 public:
  // The slot of `server` of `upstream`, taken now if never seen; nullopt
  // when kMaxSlots are used up.
  std::optional<std::size_t> slot(const std::string& upstream, const std::string& server);
  std::size_t used() const noexcept { return next_; }
  // Whether `slot` was handed out before this version (its health state is
  // that server's own).
  bool known(std::size_t slot, std::size_t before) const noexcept { return slot < before; }

 private:
  std::map<std::string, std::size_t> slots_;
  std::size_t next_ = 1;  // slot 0 is the worker-wide one
};

// True when `host` is an IPv4 or IPv6 literal (no resolution needed).
bool is_ip_literal(const std::string& host);

// Builds a version from a validated config and the answers for its host
// names. Throws ConfigError (FILE: upstreams.NAME: ...) when an address is
// missing from `names`, does not parse, or the slots are used up: a reload
// that cannot be built changes nothing.
std::shared_ptr<const ConfigVersion> build_version(std::uint64_t id, Config declared, const NameTable& names,
                                                   SlotRegistry& slots);

}  // namespace holdfast
