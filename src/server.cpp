#include "holdfast/server.hpp"

#include <netdb.h>
#include <spdlog/spdlog.h>
#include <string.h>
#include <unistd.h>

#include "holdfast/listener.hpp"
#include "holdfast/log.hpp"

namespace holdfast {

namespace {
ServerAddress resolve(const Endpoint& ep, const std::string& key) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  auto service = std::to_string(ep.port);
  int rc = getaddrinfo(ep.host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || !res) throw ConfigError(key + ": cannot resolve '" + ep.text + "': " + gai_strerror(rc));
  ServerAddress a;
  memcpy(&a.addr, res->ai_addr, res->ai_addrlen);
  a.len = static_cast<socklen_t>(res->ai_addrlen);
  a.text = ep.text;
  freeaddrinfo(res);
  return a;
}
}  // namespace

Server::Server(Config config) {
  auto access = setup_logging(config.log);
  std::vector<std::vector<ServerAddress>> servers;
  for (const auto& u : config.upstreams) {
    std::vector<ServerAddress> list;
    for (const auto& s : u.servers) list.push_back(resolve(s, config.source + ": upstreams." + u.name));
    servers.push_back(std::move(list));
  }
  Router router(config.routes);
  MetricsLayout layout = metrics_layout(config);
  auto health = std::make_unique<HealthTable>(layout.slots);
  for (std::size_t g = 0; g < config.upstreams.size(); ++g) {
    const auto& hc = config.upstreams[g].balancing.health_check;
    if (hc && hc->start_down)
      for (std::size_t i = 0; i < config.upstreams[g].servers.size(); ++i)
        health->set_checked_down(layout.upstreams[g].first_slot + i, true);
  }
  shared_ = std::make_unique<SharedState>(SharedState{std::move(config), std::move(router), std::move(servers), access,
                                                      std::move(layout), std::move(health)});

  // The kernel caps the backlog without a word; say so once, here.
  const int backlog = shared_->config.listen_backlog;
  if (auto cap = kernel_somaxconn(); cap && *cap < backlog)
    spdlog::warn("listen_backlog {} is above net.core.somaxconn ({}): the kernel uses {}", backlog, *cap, *cap);

  // Listening sockets: worker 0 binds first (port 0 becomes a real port),
  // the others bind the same port with SO_REUSEPORT.
  std::vector<std::vector<int>> fds(shared_->config.workers);
  for (const auto& ep : shared_->config.listen) {
    std::uint16_t port = ep.port;
    for (unsigned w = 0; w < shared_->config.workers; ++w) {
      std::string error;
      int fd = open_listen_socket(ep.host, port, backlog, error);
      if (fd < 0) {
        for (auto& list : fds)
          for (int f : list) ::close(f);
        throw ConfigError(shared_->config.source + ": listen: " + error);
      }
      if (w == 0) {
        auto actual = local_address(fd);
        listening_.push_back(actual);
        port = static_cast<std::uint16_t>(std::stoi(actual.substr(actual.rfind(':') + 1)));
      }
      fds[w].push_back(fd);
    }
  }
  if (const auto& ep = shared_->config.admin.listen) {
    std::string error;
    int fd = open_listen_socket(ep->host, ep->port, 128, error);
    if (fd < 0) {
      for (auto& list : fds)
        for (int f : list) ::close(f);
      throw ConfigError(shared_->config.source + ": admin.listen: " + error);
    }
    admin_address_ = local_address(fd);
    admin_ = std::make_unique<Admin>(*this, fd);
  }
  for (unsigned w = 0; w < shared_->config.workers; ++w)
    workers_.push_back(std::make_unique<Worker>(*shared_, w, std::move(fds[w])));
  checker_ = std::make_unique<HealthChecker>(shared_->config, shared_->servers, shared_->layout, *shared_->health);
}

Server::~Server() {
  request_drain();
  wait();
  if (admin_) admin_->stop();
}

void Server::start() {
  // The admin address is logged before "listening on": whoever waits for the
  // latter (scripts, tests) knows both.
  if (admin_) {
    admin_->start();
    spdlog::info("admin listener on {}", admin_address_);
  }
  for (auto& w : workers_) w->start();
  checker_->start();
  for (std::size_t i = 0; i < listening_.size(); ++i)
    spdlog::info("listening on {} ({} worker{})", listening_[i], workers_.size(), workers_.size() == 1 ? "" : "s");
}

void Server::request_drain() {
  draining_.store(true, std::memory_order_relaxed);
  if (checker_) checker_->stop();
  for (auto& w : workers_) w->request_drain();
}

void Server::wait() {
  for (auto& w : workers_) w->join();
}

Snapshot Server::snapshot() const {
  Snapshot total(shared_->layout.slots);
  for (const auto& w : workers_) total += w->stats().read();
  total += checker_->stats().read();
  // Up or down is the shared table's, not any worker's.
  const auto now = HealthClock::now();
  for (std::size_t slot = 1; slot < shared_->layout.slots; ++slot)
    total.gauges[slot * kGauges + static_cast<std::size_t>(Gauge::server_up)] = shared_->health->available(slot, now);
  return total;
}

bool Server::live() const noexcept {
  for (const auto& w : workers_)
    if (!w->running()) return false;
  return !workers_.empty();
}

}  // namespace holdfast
