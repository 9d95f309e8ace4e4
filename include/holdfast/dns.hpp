// Host names of upstream servers: resolved once when a config version is
// built (resolve_names, on the main thread, blocking it is fine there) and
// again every resolve_interval by a DnsWatcher thread that reports address
// sets that changed. Both use libevent's evdns: A and AAAA, through the
// config's `resolver` list, or /etc/resolv.conf and /etc/hosts when that list
// is empty. Nothing here runs on a worker's loop.
//
// A lookup fails on a timeout, SERVFAIL, a refusal, NXDOMAIN or an answer with
// no A and no AAAA record; an empty address set is never an answer. One
// lookup ends within about 2 s (evdns: 1 s per try, 2 tries, A and AAAA
// in parallel).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "holdfast/config.hpp"
#include "holdfast/stats.hpp"

namespace holdfast {

// Host name -> the numeric addresses ("127.0.0.2", "::1") it resolved to:
// never empty, unique, IPv4 before IPv6, each family in numeric order.
using NameTable = std::map<std::string, std::vector<std::string>>;

// True for a literal IPv4 or IPv6 address (which is never looked up).
bool is_ip_literal(const std::string& host);

// Every host name among config.upstreams[*].servers[*].host that is not an
// IP literal, with the smallest resolve_interval of the upstreams using it.
std::map<std::string, Millis> host_names(const Config& config);

// Resolves every name of host_names(config), all in parallel, waiting at most
// `timeout` in all. Returns true with `out` holding every name's addresses
// and `error` empty; on the failure of any name returns false and sets
// `error` to "NAME: reason" for the first failed name (in name order), `out`
// then holding the names that did resolve. Blocks the caller: for startup
// and reload on the main thread, never on a worker loop.
bool resolve_names(const Config& config, NameTable& out, std::string& error, Millis timeout = Millis(5000));

// Re-resolves names periodically on its own thread, with its own event_base
// and evdns_base; never blocks a worker. Each name is looked up again its
// interval after the previous lookup ended. A failed lookup keeps the last
// good answer, is logged as a warning naming the name and the reason, and is
// counted; it is never reported.
//
// Ownership: whoever builds config versions (the server) owns the watcher;
// start() after the first watch(), stop() or the destructor before the
// callback's target goes away.
class DnsWatcher {
 public:
  // Called on the watcher's thread when a name's address set differs from
  // the last one known (the one given to watch(), or the last change
  // reported): sorted, non-empty. The callback must not call back into the
  // watcher except watch() and the readers below.
  using OnChange = std::function<void(const std::string& name, const std::vector<std::string>& addresses)>;

  explicit DnsWatcher(OnChange on_change);
  ~DnsWatcher();  // stops and joins
  DnsWatcher(const DnsWatcher&) = delete;
  DnsWatcher& operator=(const DnsWatcher&) = delete;

  // Thread-safe. Replaces what is watched: each name of host_names(config)
  // with its interval, starting from `current` (the answers the running
  // config version was built with; a name missing there is looked up at
  // once), through config.resolver. Called after startup and after each
  // reload; every name's next lookup is then its interval away, and
  // resolv.conf and hosts are read again.
  void watch(const Config& config, const NameTable& current);
  void start();
  void stop();  // thread-safe, idempotent, final; a lookup in flight is abandoned

  // Any thread. The last good answer of every watched name.
  NameTable answers() const;
  // Any thread. Slot 0 only: dns_resolutions (lookups that ended, failed
  // ones included), dns_failures, dns_changes. Merge with a Snapshot of
  // more slots through Snapshot::operator+=.
  const Stats& stats() const noexcept { return stats_; }

 private:
  struct Impl;  // the watcher thread's state (event_base, evdns_base, timers)

  void run();

  OnChange on_change_;
  Stats stats_;
  mutable std::mutex mutex_;
  // Guarded by mutex_: the latest watch() not yet taken by the thread, and
  // the answers the thread keeps up to date for answers().
  bool pending_ = false;
  std::map<std::string, Millis> next_names_;
  std::vector<Endpoint> next_resolver_;
  NameTable next_current_;
  NameTable answers_;
  bool stopping_ = false;
  int wake_fd_ = -1;  // eventfd: watch() and stop() wake the thread's loop
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
};

}  // namespace holdfast
