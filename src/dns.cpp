#include "holdfast/dns.hpp"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <set>

namespace holdfast {

namespace {

using Clock = std::chrono::steady_clock;

struct Result {
  bool ok = false;
  std::vector<std::string> addresses;  // when ok
  std::string reason;                  // when not
};

// One evdns_getaddrinfo in flight. It owns itself: evdns calls on_addrinfo
// exactly once for it (answer, error, cancel, or evdns_base_free with
// fail_requests), which deletes it. `live` counts the lookups not yet called
// back, so that their owner knows when its event_base may be freed.
struct Lookup {
  std::string name;
  Clock::time_point started = Clock::now();
  std::function<void(Result)> done;
  int* live;
  Lookup(std::string n, std::function<void(Result)> d, int* l) : name(std::move(n)), done(std::move(d)), live(l) { ++*live; }
  ~Lookup() { --*live; }
};

std::string join(const std::vector<std::string>& list) {
  if (list.empty()) return "nothing";
  std::string out;
  for (const auto& a : list) out += (out.empty() ? "" : ",") + a;
  return out;
}

// Unique, IPv4 before IPv6, each family in numeric order.
std::vector<std::string> sorted_addresses(const evutil_addrinfo* res) {
  std::set<std::pair<int, std::string>> raw;  // (0 for v4 / 1 for v6, network-order bytes)
  for (const auto* ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
      raw.emplace(0, std::string(reinterpret_cast<const char*>(&sin->sin_addr), sizeof sin->sin_addr));
    } else if (ai->ai_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(ai->ai_addr);
      raw.emplace(1, std::string(reinterpret_cast<const char*>(&sin6->sin6_addr), sizeof sin6->sin6_addr));
    }
  }
  std::vector<std::string> out;
  for (const auto& [family, bytes] : raw) {
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(family == 0 ? AF_INET : AF_INET6, bytes.data(), text, sizeof text)) out.emplace_back(text);
  }
  return out;
}

std::string reason_of(int rc, Clock::duration took) {
  auto ms = std::chrono::duration_cast<Millis>(took).count();
  switch (rc) {
    case EVUTIL_EAI_NONAME: return "no such name (NXDOMAIN)";
    case EVUTIL_EAI_NODATA: return "no A or AAAA record";
    // evdns folds timeouts, SERVFAIL and refusals into one code; the time
    // taken tells a timeout apart.
    case EVUTIL_EAI_FAIL: return "no answer (timeout, SERVFAIL or refused) after " + std::to_string(ms) + " ms";
    case EVUTIL_EAI_AGAIN: return "timed out after " + std::to_string(ms) + " ms";
    default: return evutil_gai_strerror(rc);
  }
}

void on_addrinfo(int rc, evutil_addrinfo* res, void* arg) {
  std::unique_ptr<Lookup> lookup(static_cast<Lookup*>(arg));
  Result r;
  if (rc == 0) r.addresses = sorted_addresses(res);
  if (res) evutil_freeaddrinfo(res);
  r.ok = rc == 0 && !r.addresses.empty();
  if (!r.ok) r.reason = rc == 0 ? "no A or AAAA record" : reason_of(rc, Clock::now() - lookup->started);
  lookup->done(std::move(r));
}

// `done` may run before this returns (a name of /etc/hosts, a malformed name).
void start_lookup(evdns_base* dns, const std::string& name, int* live, std::function<void(Result)> done) {
  auto* lookup = new Lookup(name, std::move(done), live);
  evutil_addrinfo hints{};
  hints.ai_family = AF_UNSPEC;        // A and AAAA in parallel
  hints.ai_socktype = SOCK_STREAM;    // one entry per address
  evdns_getaddrinfo(dns, name.c_str(), nullptr, &hints, on_addrinfo, lookup);
}

// evdns's own messages (a nameserver down or back up) go to the main log.
void log_evdns(int severity, const char* msg) {
  if (severity >= EVENT_LOG_WARN) spdlog::warn("dns: {}", msg);
  else if (severity == EVENT_LOG_MSG) spdlog::info("dns: {}", msg);
  else spdlog::debug("dns: {}", msg);
}

// An evdns_base on `base` that asks `resolver`, or the system's resolvers and
// hosts file when it is empty; nullptr with `error` set when it cannot be made.
evdns_base* make_evdns(event_base* base, const std::vector<Endpoint>& resolver, std::string& error) {
  static std::once_flag log_once;
  std::call_once(log_once, [] { evdns_set_log_fn(log_evdns); });
  evdns_base* dns = evdns_base_new(base, 0);
  if (!dns) {
    error = "cannot create a DNS resolver";
    return nullptr;
  }
  if (resolver.empty()) {
    // 1: no resolv.conf, 6: no nameserver in it; evdns then asks 127.0.0.1
    // as the C library would.
    int rc = evdns_base_resolv_conf_parse(dns, DNS_OPTIONS_ALL, "/etc/resolv.conf");
    if (rc != 0 && rc != 1 && rc != 6) {
      error = "cannot read /etc/resolv.conf (evdns error " + std::to_string(rc) + ")";
      evdns_base_free(dns, 0);
      return nullptr;
    }
  }
  for (const auto& ep : resolver) {
    auto at = ep.host.find(':') == std::string::npos ? ep.host : "[" + ep.host + "]";
    at += ":" + std::to_string(ep.port);
    if (evdns_base_nameserver_ip_add(dns, at.c_str()) != 0) {
      error = "resolver " + ep.text + ": not an IP address and port";
      evdns_base_free(dns, 0);
      return nullptr;
    }
  }
  // After resolv.conf, whose `options` line would set them too: one lookup
  // ends within about 2 s; once A or AAAA has answered, the other gets 1 s more.
  evdns_base_set_option(dns, "timeout", "1");
  evdns_base_set_option(dns, "attempts", "2");
  evdns_base_set_option(dns, "getaddrinfo-allow-skew", "1");
  return dns;
}

// Fails what is still in flight on `dns`, frees it, and runs `base` until
// every lookup has been called back (evdns defers those calls to the loop).
void free_evdns(event_base* base, evdns_base* dns, const int& live) {
  if (dns) evdns_base_free(dns, 1);
  for (int turn = 0; live > 0 && turn < 100; ++turn) event_base_loop(base, EVLOOP_NONBLOCK);
  if (live > 0) spdlog::warn("dns: {} lookup(s) not called back at shutdown", live);
}

}  // namespace

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::map<std::string, Millis> host_names(const Config& config) {
  std::map<std::string, Millis> names;
  for (const auto& u : config.upstreams)
    for (const auto& s : u.servers) {
      if (is_ip_literal(s.host)) continue;
      auto [it, added] = names.emplace(s.host, u.resolve_interval);
      if (!added) it->second = std::min(it->second, u.resolve_interval);
    }
  return names;
}

bool resolve_names(const Config& config, NameTable& out, std::string& error, Millis timeout) {
  out.clear();
  error.clear();
  auto names = host_names(config);
  if (names.empty()) return true;
  event_base* base = event_base_new();
  if (!base) {
    error = "cannot create an event loop for DNS";
    return false;
  }
  std::string why;
  evdns_base* dns = make_evdns(base, config.resolver, why);
  if (!dns) {
    event_base_free(base);
    error = names.begin()->first + ": " + why;
    return false;
  }
  std::map<std::string, Result> results;
  bool closing = false;  // lookups failed by free_evdns are not results
  int live = 0;
  for (const auto& [name, interval] : names)
    start_lookup(dns, name, &live, [&results, &closing, name = name](Result r) {
      if (!closing) results[name] = std::move(r);
    });
  bool expired = false;
  event* timer = evtimer_new(base, [](evutil_socket_t, short, void* arg) { *static_cast<bool*>(arg) = true; }, &expired);
  timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  evtimer_add(timer, &tv);
  while (live > 0 && !expired) event_base_loop(base, EVLOOP_ONCE);
  closing = true;
  free_evdns(base, dns, live);
  event_free(timer);
  event_base_free(base);

  for (const auto& [name, interval] : names) {
    auto it = results.find(name);
    if (it != results.end() && it->second.ok) out[name] = it->second.addresses;
    else if (error.empty())
      error = name + ": " + (it != results.end() ? it->second.reason : "no answer within " + format_duration(timeout));
  }
  return out.size() == names.size();
}

// The watcher thread's state. Everything here is touched by that thread only
// (and by the destructor once the thread has ended).
struct DnsWatcher::Impl {
  struct Entry {
    Impl* impl = nullptr;
    std::string name;
    Millis interval{0};
    std::vector<std::string> addresses;  // last good answer; empty until one
    event* timer = nullptr;
    ~Entry() {
      if (timer) event_free(timer);
    }
  };

  DnsWatcher& owner;
  event_base* base = nullptr;
  event* wake = nullptr;
  evdns_base* dns = nullptr;
  int live = 0;
  // Lookups of the current watch() report while *valid holds; clear() turns
  // it off so that answers for entries already gone are dropped.
  std::shared_ptr<bool> valid = std::make_shared<bool>(true);
  std::vector<std::unique_ptr<Entry>> entries;

  explicit Impl(DnsWatcher& o) : owner(o) {
    event_config* cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);  // one thread uses it
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    wake = event_new(base, owner.wake_fd_, EV_READ | EV_PERSIST, on_wake, this);
    event_add(wake, nullptr);
  }
  ~Impl() {
    clear();
    free_evdns(base, nullptr, live);
    event_free(wake);
    event_base_free(base);
  }

  void clear() {
    *valid = false;
    valid = std::make_shared<bool>(true);
    entries.clear();
    if (dns) evdns_base_free(dns, 1);  // their callbacks run on a later turn
    dns = nullptr;
  }

  void arm(Entry& e, Millis after) {
    timeval tv{static_cast<time_t>(after.count() / 1000), static_cast<suseconds_t>(after.count() % 1000 * 1000)};
    evtimer_add(e.timer, &tv);
  }

  void apply(const std::map<std::string, Millis>& names, const std::vector<Endpoint>& resolver, const NameTable& current) {
    clear();
    NameTable answers;
    if (!names.empty()) {
      std::string error;
      dns = make_evdns(base, resolver, error);
      if (!dns) spdlog::error("dns: {}; host names are not resolved again until the next reload", error);
    }
    for (const auto& [name, interval] : names) {
      auto e = std::make_unique<Entry>();
      e->impl = this;
      e->name = name;
      e->interval = interval;
      if (auto it = current.find(name); it != current.end()) e->addresses = it->second;
      if (!e->addresses.empty()) answers[name] = e->addresses;
      e->timer = evtimer_new(base, on_timer, e.get());
      if (dns) arm(*e, e->addresses.empty() ? Millis(0) : interval);
      entries.push_back(std::move(e));
    }
    std::lock_guard lock(owner.mutex_);
    owner.answers_ = std::move(answers);
  }

  void finished(Entry& e, Result r) {
    owner.stats_.add(Counter::dns_resolutions);
    if (!r.ok) {
      owner.stats_.add(Counter::dns_failures);
      spdlog::warn("dns: {}: {}; keeping {}", e.name, r.reason, join(e.addresses));
    } else if (r.addresses != e.addresses) {
      spdlog::info("dns: {} now resolves to {} (was {})", e.name, join(r.addresses), join(e.addresses));
      e.addresses = std::move(r.addresses);
      {
        std::lock_guard lock(owner.mutex_);
        owner.answers_[e.name] = e.addresses;
      }
      owner.stats_.add(Counter::dns_changes);
      if (owner.on_change_) owner.on_change_(e.name, e.addresses);
    }
    arm(e, e.interval);
  }

  static void on_timer(evutil_socket_t, short, void* arg) {
    auto& e = *static_cast<Entry*>(arg);
    Impl& self = *e.impl;
    std::weak_ptr<bool> valid = self.valid;
    start_lookup(self.dns, e.name, &self.live, [&self, &e, valid](Result r) {
      if (auto v = valid.lock(); v && *v) self.finished(e, std::move(r));
    });
  }

  static void on_wake(evutil_socket_t fd, short, void* arg) {
    auto& self = *static_cast<Impl*>(arg);
    std::uint64_t n;
    [[maybe_unused]] auto got = ::read(fd, &n, sizeof n);
    std::map<std::string, Millis> names;
    std::vector<Endpoint> resolver;
    NameTable current;
    {
      std::lock_guard lock(self.owner.mutex_);
      if (self.owner.stopping_) {
        event_base_loopbreak(self.base);
        return;
      }
      if (!self.owner.pending_) return;
      self.owner.pending_ = false;
      names.swap(self.owner.next_names_);
      resolver.swap(self.owner.next_resolver_);
      current.swap(self.owner.next_current_);
    }
    self.apply(names, resolver, current);
  }
};

DnsWatcher::DnsWatcher(OnChange on_change) : on_change_(std::move(on_change)), stats_(1) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  impl_ = std::make_unique<Impl>(*this);
}

DnsWatcher::~DnsWatcher() {
  stop();
  impl_.reset();
  ::close(wake_fd_);
}

void DnsWatcher::watch(const Config& config, const NameTable& current) {
  {
    std::lock_guard lock(mutex_);
    pending_ = true;
    next_names_ = host_names(config);
    next_resolver_ = config.resolver;
    next_current_ = current;
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto put = ::write(wake_fd_, &one, sizeof one);
}

void DnsWatcher::start() {
  std::lock_guard lock(mutex_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { run(); });
}

void DnsWatcher::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto put = ::write(wake_fd_, &one, sizeof one);
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

NameTable DnsWatcher::answers() const {
  std::lock_guard lock(mutex_);
  return answers_;
}

void DnsWatcher::run() { event_base_dispatch(impl_->base); }

}  // namespace holdfast
