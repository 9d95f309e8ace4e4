#include "holdfast/server.hpp"

#include <spdlog/spdlog.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "holdfast/listener.hpp"
#include "holdfast/log.hpp"

namespace holdfast {

Server::Server(Config config) {
  auto access = setup_logging(config.log);
  // What the running version was loaded from: a file changed after this is a reload.
  last_text_ = read_text(config.source);
  NameTable names;
  std::string error;
  if (!resolve_names(config, names, error)) throw ConfigError(config.source + ": upstreams: cannot resolve " + error);
  auto version = build_version(1, std::move(config), names, slots_);
  shared_ = std::make_unique<SharedState>(SharedState{std::make_unique<HealthTable>(kMaxSlots), std::move(access)});
  set_initial_health(*version, slots_.take_fresh());
  const auto& cfg = version->config;

  // The kernel caps the backlog without a word; say so once, here.
  if (auto cap = kernel_somaxconn(); cap && *cap < cfg.listen_backlog)
    spdlog::warn("listen_backlog {} is above net.core.somaxconn ({}): the kernel uses {}", cfg.listen_backlog, *cap,
                 *cap);

  NewListeners sockets;
  if (!bind_new_listeners(cfg, cfg.workers, sockets, error)) throw ConfigError(cfg.source + ": listen: " + error);
  for (const auto& [key, actual] : sockets.bound) {
    listeners_[key] = actual;
    listening_.push_back(actual);
  }
  if (const auto& ep = cfg.admin.listen) {
    int fd = open_listen_socket(ep->host, ep->port, 128, error);
    if (fd < 0) {
      sockets.close_all();
      throw ConfigError(cfg.source + ": admin.listen: " + error);
    }
    admin_address_ = local_address(fd);
    admin_ = std::make_unique<Admin>(*this, fd);
  }
  version_ = version;
  for (unsigned w = 0; w < cfg.workers; ++w)
    workers_.push_back(std::make_unique<Worker>(*shared_, w, version, std::move(sockets.per_worker[w])));
  restart_checker(version);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  dns_ = std::make_unique<DnsWatcher>(
      [this](const std::string& name, const std::vector<std::string>& addresses) { on_dns_answer(name, addresses); });
  dns_->watch(version->declared, version->names);
}

Server::~Server() {
  if (dns_) dns_->stop();
  request_drain();
  wait();
  if (admin_) admin_->stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

bool Server::open_listener(const Endpoint& ep, unsigned workers, int backlog, std::vector<int>& fds,
                           std::string& actual, std::string& error) {
  // Worker 0 binds first (port 0 becomes a real port), the others bind the
  // same port with SO_REUSEPORT.
  std::uint16_t port = ep.port;
  for (unsigned w = 0; w < workers; ++w) {
    int fd = open_listen_socket(ep.host, port, backlog, error);
    if (fd < 0) {
      for (int f : fds) ::close(f);
      fds.clear();
      return false;
    }
    if (w == 0) {
      actual = local_address(fd);
      port = static_cast<std::uint16_t>(std::stoi(actual.substr(actual.rfind(':') + 1)));
    }
    fds.push_back(fd);
  }
  return true;
}

void Server::NewListeners::close_all() noexcept {
  for (auto& list : per_worker)
    for (auto& l : list) ::close(l.fd);
  per_worker.clear();
  bound.clear();
}

bool Server::bind_new_listeners(const Config& cfg, unsigned workers, NewListeners& out, std::string& error) {
  out.per_worker.assign(workers, {});
  for (const auto& ep : cfg.listen) {
    // An address listed twice is bound once.
    if (listeners_.count(ep.text) ||
        std::any_of(out.bound.begin(), out.bound.end(), [&](const auto& b) { return b.first == ep.text; }))
      continue;
    std::vector<int> fds;
    std::string actual;
    if (!open_listener(ep, workers, cfg.listen_backlog, fds, actual, error)) {
      out.close_all();
      return false;
    }
    out.bound.emplace_back(ep.text, actual);
    for (unsigned w = 0; w < workers; ++w) out.per_worker[w].push_back({ep.text, fds[w]});
  }
  return true;
}

void Server::set_initial_health(const ConfigVersion& v, const std::vector<std::size_t>& fresh) {
  for (std::size_t g = 0; g < v.config.upstreams.size(); ++g) {
    const auto& slots = v.layout.upstreams[g].slots;
    const auto& hc = v.config.upstreams[g].balancing.health_check;
    if (!hc) {
      // No checks any more (or never): nothing would ever bring a server
      // that checks took down back up.
      for (auto slot : slots) shared_->health->set_checked_down(slot, false);
    } else if (hc->start_down) {
      for (auto slot : slots)
        if (std::find(fresh.begin(), fresh.end(), slot) != fresh.end()) shared_->health->set_checked_down(slot, true);
    }
  }
}

void Server::restart_checker(std::shared_ptr<const ConfigVersion> v) {
  // The old checker ends first (a check in progress records its verdict), so
  // the new one starts from the table as the old one left it.
  std::unique_ptr<HealthChecker> old;
  {
    std::lock_guard<std::mutex> lock(checker_mutex_);
    old = std::move(checker_);
  }
  if (old) {
    old->stop();
    std::lock_guard<std::mutex> lock(checker_mutex_);
    checker_retired_ += old->stats().read();
  }
  old.reset();  // reads checker_version_: gone before it changes
  auto next = std::make_unique<HealthChecker>(v->config, v->servers, v->layout, *shared_->health);
  checker_version_ = std::move(v);
  std::lock_guard<std::mutex> lock(checker_mutex_);
  checker_ = std::move(next);
  if (started_ && !draining()) checker_->start();
}

void Server::start() {
  // The admin address is logged before "listening on": whoever waits for the
  // latter (scripts, tests) knows both.
  if (admin_) {
    admin_->start();
    spdlog::info("admin listener on {}", admin_address_);
  }
  for (auto& w : workers_) w->start();
  started_ = true;
  checker_->start();
  dns_->start();
  for (std::size_t i = 0; i < listening_.size(); ++i)
    spdlog::info("listening on {} ({} worker{})", listening_[i], workers_.size(), workers_.size() == 1 ? "" : "s");
}

void Server::request_drain() {
  draining_.store(true, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(checker_mutex_);
    if (checker_) checker_->stop();
  }
  for (auto& w : workers_) w->request_drain();
}

void Server::wait() {
  for (auto& w : workers_) w->join();
}

void Server::count(Counter c) { control_stats_.add(c); }

bool Server::reload(const std::string& cause) { return reload_from(cause, read_text(version()->declared.source)); }

bool Server::reload_from(const std::string& cause, std::optional<std::string> text) {
  const auto running = version();
  const auto& path = running->declared.source;
  // What was read is what a later touch is compared with, valid or not.
  last_text_ = text;
  Config next;
  try {
    if (!text) throw ConfigError(path + ": cannot open the file");
    next = load_config_text(*text, path);
  } catch (const ConfigError& e) {
    spdlog::error("reload failed ({}): {}; still running version {}", cause, e.what(), running->id);
    count(Counter::reloads_failed);
    return false;
  }
  auto restart = restart_required(running->declared, next);
  if (!restart.empty()) {
    for (const auto& r : restart) spdlog::error("reload failed ({}): {}: {}", cause, next.source, r);
    spdlog::error("reload failed ({}): still running version {}", cause, running->id);
    count(Counter::reloads_failed);
    return false;
  }
  NameTable names;
  std::string error;
  if (!resolve_names(next, names, error)) {
    // A name the running version knows keeps its last good answer, as
    // between reloads; only a new name that does not resolve is an error.
    for (const auto& [name, interval] : host_names(next)) {
      if (names.count(name)) continue;
      auto known = running->names.find(name);
      if (known == running->names.end()) {
        spdlog::error("reload failed ({}): {}: upstreams: cannot resolve {}; still running version {}", cause,
                      next.source, error, running->id);
        count(Counter::reloads_failed);
        return false;
      }
      spdlog::warn("reload ({}): {} did not resolve ({}); keeping its last answer", cause, name, error);
      names[name] = known->second;
    }
  }
  return apply(std::move(next), names, cause);
}

bool Server::apply(Config declared, const NameTable& names, const std::string& cause) {
  const auto running = version();
  // Tried on a copy: a version rejected below takes no slot.
  SlotRegistry trial = slots_;
  std::shared_ptr<const ConfigVersion> v;
  try {
    v = build_version(next_version_, std::move(declared), names, trial);
  } catch (const ConfigError& e) {
    spdlog::error("reload failed ({}): {}; still running version {}", cause, e.what(), running->id);
    count(Counter::reloads_failed);
    return false;
  }
  const auto& cfg = v->config;
  // Listeners: the same address as written keeps its sockets; new ones are
  // bound here, and a bind failure rejects the whole version.
  NewListeners add;
  std::string error;
  if (!bind_new_listeners(cfg, worker_count(), add, error)) {
    spdlog::error("reload failed ({}): {}: listen: {}; still running version {}", cause, cfg.source, error,
                  running->id);
    count(Counter::reloads_failed);
    return false;
  }
  std::set<std::string> wanted;
  for (const auto& ep : cfg.listen) wanted.insert(ep.text);
  std::vector<std::string> removed;
  for (const auto& [key, actual] : listeners_)
    if (!wanted.count(key)) removed.push_back(key);

  // Accepted. Slots new to their server start clean (a reused one keeps
  // nothing of the server it had); they start down when their checks say so.
  const auto fresh = trial.take_fresh();
  for (auto slot : fresh) shared_->health->reset(slot);
  {
    std::lock_guard<std::mutex> lock(checker_mutex_);
    for (auto slot : fresh) checker_retired_.clear_slot(slot);
  }
  set_initial_health(*v, fresh);
  std::set<std::size_t> in_use;
  for (const auto& u : v->layout.upstreams) in_use.insert(u.slots.begin(), u.slots.end());
  trial.retain_only(in_use, SlotRegistry::Clock::now());
  slots_ = std::move(trial);
  ++next_version_;
  std::atomic_store(&version_, v);
  auto announcement = std::make_shared<const ReloadAnnouncement>(v->id, cause);
  for (std::size_t w = 0; w < workers_.size(); ++w)
    workers_[w]->post_update({v, std::move(add.per_worker[w]), removed, fresh, announcement});
  for (const auto& key : removed) {
    spdlog::info("reload: no longer listening on {}", listeners_[key]);
    listeners_.erase(key);
  }
  for (const auto& [key, actual] : add.bound) {
    listeners_[key] = actual;
    spdlog::info("listening on {} ({} worker{})", actual, workers_.size(), workers_.size() == 1 ? "" : "s");
  }
  spdlog::set_level(spdlog::level::from_str(cfg.log.level));
  restart_checker(v);
  dns_->watch(v->declared, v->names);
  count(Counter::reloads_ok);
  // The line "version N active" comes when the last worker has switched
  // (or now, if they all have): see ReloadAnnouncement.
  return true;
}

void Server::on_dns_answer(const std::string& name, const std::vector<std::string>& addresses) {
  {
    std::lock_guard<std::mutex> lock(dns_mutex_);
    dns_pending_[name] = addresses;
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void Server::apply_dns_answers() {
  NameTable pending;
  {
    std::lock_guard<std::mutex> lock(dns_mutex_);
    pending.swap(dns_pending_);
  }
  const auto running = version();
  NameTable names = running->names;
  std::string what;
  for (auto& [name, addresses] : pending) {
    auto it = names.find(name);
    if (it == names.end() || it->second == addresses) continue;  // no longer used, or no change
    std::string list;
    for (const auto& a : addresses) list += (list.empty() ? "" : " ") + a;
    what += (what.empty() ? "" : "; ") + name + " -> " + list;
    it->second = addresses;
  }
  if (what.empty()) return;
  apply(running->declared, names, "DNS: " + what);
}

Snapshot Server::snapshot(std::size_t slots) const {
  Snapshot total(slots);
  for (const auto& w : workers_) total += w->stats().read(slots);
  total += control_stats_.read();
  total += dns_->stats().read();
  {
    std::lock_guard<std::mutex> lock(checker_mutex_);
    if (checker_) total += checker_->stats().read(slots);
    total += checker_retired_;
  }
  // Up or down is the shared table's, not any worker's.
  const auto now = HealthClock::now();
  for (std::size_t slot = 1; slot < slots; ++slot)
    total.gauges[slot * kGauges + static_cast<std::size_t>(Gauge::server_up)] = shared_->health->available(slot, now);
  return total;
}

bool Server::live() const noexcept {
  for (const auto& w : workers_)
    if (!w->running()) return false;
  return !workers_.empty();
}

}  // namespace holdfast
