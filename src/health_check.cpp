#include "holdfast/health_check.hpp"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "holdfast/headers.hpp"
#include "holdfast/http_message.hpp"

namespace holdfast {

namespace {

using namespace std::chrono;

int ms_left(HealthClock::time_point deadline) {
  auto left = duration_cast<milliseconds>(deadline - HealthClock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// Waits for `events` on `fd` until `deadline`; false on timeout or error.
bool wait_for(int fd, short events, HealthClock::time_point deadline) {
  pollfd p{fd, events, 0};
  int n = ::poll(&p, 1, ms_left(deadline));
  return n == 1 && (p.revents & events);
}

int connect_to(const ServerAddress& a, HealthClock::time_point deadline, std::string& why) {
  int fd = ::socket(a.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    why = strerror(errno);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a.addr), a.len) < 0 && errno != EINPROGRESS) {
    why = std::string("connect: ") + strerror(errno);
    ::close(fd);
    return -1;
  }
  if (!wait_for(fd, POLLOUT, deadline)) {
    why = "connect timeout";
    ::close(fd);
    return -1;
  }
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err) {
    why = std::string("connect: ") + strerror(err);
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

HealthChecker::HealthChecker(const Config& config, const std::vector<std::vector<ServerAddress>>& servers,
                             const MetricsLayout& layout, HealthTable& table)
    : table_(table), stats_(kMaxSlots) {
  for (std::size_t g = 0; g < config.upstreams.size(); ++g) {
    const auto& u = config.upstreams[g];
    if (!u.balancing.health_check) continue;
    for (std::size_t i = 0; i < u.servers.size(); ++i) {
      Target t{&u, &*u.balancing.health_check, &servers[g][i], layout.upstreams[g].slots[i]};
      // A server kept across a reload keeps the verdict its checks reached.
      t.up = !table.checked_down(t.slot);
      targets_.push_back(t);
    }
  }
}

HealthChecker::~HealthChecker() {
  stop();
  for (auto& t : targets_)
    if (t.fd >= 0) ::close(t.fd);
}

void HealthChecker::start() {
  if (enabled()) thread_ = std::thread([this] { run(); });
}

void HealthChecker::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void HealthChecker::run() {
  for (auto& t : targets_) t.next = HealthClock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    auto next = HealthClock::time_point::max();
    for (auto& t : targets_) {
      if (stopping_) return;
      if (t.next <= HealthClock::now()) {
        lock.unlock();
        std::string why;
        bool passed = check(t, why);
        record(t, passed, why);
        lock.lock();
        t.next = HealthClock::now() + t.check->interval;
      }
      next = std::min(next, t.next);
    }
    wake_.wait_until(lock, next, [this] { return stopping_; });
  }
}

bool HealthChecker::check(Target& t, std::string& why) {
  const auto deadline = HealthClock::now() + t.check->timeout;
  // A kept connection that the server closed meanwhile is replaced once.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool kept = t.fd >= 0;
    if (!kept && (t.fd = connect_to(*t.address, deadline, why)) < 0) return false;
    const auto& host = t.check->host.empty() ? t.address->authority : t.check->host;
    std::string req = "GET " + t.check->path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: holdfast-health-check\r\n\r\n";
    bool sent = ::send(t.fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
    HttpParser parser(HttpParser::Kind::response, 64 * 1024);
    std::string body_left;
    bool head = false, eof = false;
    std::uint64_t remaining = 0;
    char buf[16384];
    // Bounded by the deadline: each wait ends at it.
    while (sent && !eof) {
      if (!wait_for(t.fd, POLLIN, deadline)) break;
      ssize_t n = ::recv(t.fd, buf, sizeof buf, 0);
      if (n <= 0) {
        eof = true;
        break;
      }
      std::size_t off = 0;
      if (!head) {
        auto r = parser.feed(buf, static_cast<std::size_t>(n));
        if (r.event == HttpParser::Event::error) break;
        if (r.event != HttpParser::Event::head_complete) continue;
        head = true;
        off = r.consumed;
        remaining = parser.head().has_content_length ? parser.head().content_length : 0;
      }
      std::size_t take = std::min<std::uint64_t>(remaining, static_cast<std::size_t>(n) - off);
      remaining -= take;
      if (remaining == 0) break;
    }
    if (head && remaining == 0) {
      const auto& h = parser.head();
      // Only a response framed by its length, without a close token, leaves the connection reusable.
      bool keep = h.has_content_length && h.keep_alive && !h.chunked;
      if (!keep) {
        ::close(t.fd);
        t.fd = -1;
      }
      if (h.status >= t.check->expect_min && h.status <= t.check->expect_max) return true;
      why = "answered " + std::to_string(h.status);
      return false;
    }
    ::close(t.fd);
    t.fd = -1;
    if (kept && !head && HealthClock::now() < deadline) continue;  // the server closed the kept connection
    why = head ? "response cut short" : HealthClock::now() >= deadline ? "timeout" : "no response";
    return false;
  }
  return false;
}

void HealthChecker::record(Target& t, bool passed, const std::string& why) {
  const auto& name = t.upstream->name;
  if (passed) {
    t.fails = 0;
    if (!t.up && ++t.passes >= t.check->rise) {
      t.up = true;
      t.passes = 0;
      if (table_.set_checked_down(t.slot, false)) {
        stats_.add(t.slot, Counter::recoveries);
        spdlog::info("upstream '{}' server {} is up: {} health check(s) in a row passed", name, t.address->text,
                     t.check->rise);
      }
    }
    return;
  }
  stats_.add(t.slot, Counter::check_failures);
  t.passes = 0;
  if (t.up && ++t.fails >= t.check->fall) {
    t.up = false;
    t.fails = 0;
    if (table_.set_checked_down(t.slot, true))
      spdlog::warn("upstream '{}' server {} is down: {} health check(s) in a row failed (last: {})", name,
                   t.address->text, t.check->fall, why);
  }
}

}  // namespace holdfast
