// Shared by the unit suites that cross a real socket: a bounded way to run a
// worker's event loop from the test thread, a loopback listener standing in
// for a backend, the backend's end of one connection, and a Worker built from
// a small config whose one upstream group points at that listener.
//
// Every wait here is bounded twice: by a number of turns and by a wall-clock
// budget, so that a broken proxy fails an assertion instead of hanging.
#pragma once

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "holdfast/config.hpp"
#include "holdfast/router.hpp"
#include "holdfast/upstream_connection.hpp"
#include "holdfast/upstream_pool.hpp"
#include "holdfast/version.hpp"
#include "holdfast/worker.hpp"

namespace holdfast::test {

using namespace std::chrono_literals;
using TestClock = std::chrono::steady_clock;

// Runs `base` until `done()` holds or `budget` has passed. A guard timer
// bounds each EVLOOP_ONCE wait to 2 ms, so the budget is checked often even
// when no socket event comes. Returns done() as last seen.
template <typename Done>
bool run_until(event_base* base, Done done, std::chrono::milliseconds budget = 1000ms) {
  event* guard = evtimer_new(base, [](evutil_socket_t, short, void*) {}, nullptr);
  const auto deadline = TestClock::now() + budget;
  bool ok = done();
  for (int turn = 0; turn < 20000 && !ok && TestClock::now() < deadline; ++turn) {
    timeval tv{0, 2000};
    evtimer_add(guard, &tv);
    event_base_loop(base, EVLOOP_ONCE);
    ok = done();
  }
  event_free(guard);
  return ok;
}

// A few non-blocking turns: lets work already queued (a deferred delete, a
// loopback byte that is already in the receive queue) run without waiting.
inline void settle(event_base* base, int turns = 3) {
  for (int i = 0; i < turns; ++i) event_base_loop(base, EVLOOP_NONBLOCK);
}

// The backend's end of one accepted connection; non-blocking, closed on destruction.
class BackendSocket {
 public:
  BackendSocket() = default;
  explicit BackendSocket(int fd) : fd_(fd) {}
  BackendSocket(BackendSocket&& o) noexcept : fd_(std::exchange(o.fd_, -1)), received_(std::move(o.received_)) {}
  BackendSocket& operator=(BackendSocket&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
      received_ = std::move(o.received_);
    }
    return *this;
  }
  ~BackendSocket() { close(); }

  bool valid() const noexcept { return fd_ >= 0; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // Loopback sockets take a few kilobytes at once; a short write is a test bug.
  void send(std::string_view bytes) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(bytes.size())) throw std::runtime_error("short write to the proxy");
  }

  // Writes `bytes` one at a time, letting the proxy's loop read each byte
  // before the next is sent: every parser boundary gets exercised. Stops
  // where the proxy closed the connection (it may refuse a response midway);
  // returns how many bytes went out.
  std::size_t send_bytewise(event_base* base, std::string_view bytes) {
    std::size_t sent = 0;
    for (char c : bytes) {
      if (::send(fd_, &c, 1, MSG_NOSIGNAL) != 1) break;
      ++sent;
      settle(base, 2);
    }
    return sent;
  }

  // Appends whatever is readable now to received(); true when the peer closed.
  bool pull() {
    char buf[4096];
    for (int i = 0; i < 1024; ++i) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        received_.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) return true;
      return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;  // a reset counts as closed
    }
    return false;
  }

  // Runs the proxy's loop until `n` bytes arrived here (or the budget ran out).
  const std::string& read_at_least(event_base* base, std::size_t n) {
    run_until(base, [&] {
      pull();
      return received_.size() >= n;
    });
    return received_;
  }

  // Runs the proxy's loop until the proxy closed its end.
  bool wait_closed(event_base* base, std::chrono::milliseconds budget = 1000ms) {
    return run_until(base, [&] { return pull(); }, budget);
  }

  const std::string& received() const noexcept { return received_; }
  // What arrived so far, forgotten here: the next read starts empty.
  std::string take() { return std::exchange(received_, std::string()); }

 private:
  int fd_ = -1;
  std::string received_;
};

// 127.0.0.1, port chosen by the kernel.
class LoopbackListener {
 public:
  LoopbackListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 64) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("cannot listen on 127.0.0.1");
    addr_ = a;
  }
  ~LoopbackListener() { ::close(fd_); }
  LoopbackListener(const LoopbackListener&) = delete;
  LoopbackListener& operator=(const LoopbackListener&) = delete;

  std::uint16_t port() const noexcept { return ntohs(addr_.sin_port); }

  ServerAddress server_address() const {
    ServerAddress s;
    std::memcpy(&s.addr, &addr_, sizeof addr_);
    s.len = sizeof addr_;
    s.text = "127.0.0.1:" + std::to_string(port());
    return s;
  }

  // The kernel completes loopback handshakes without the proxy's loop, so a
  // plain bounded poll() is enough here. Invalid socket on timeout.
  BackendSocket accept_one(std::chrono::milliseconds budget = 1000ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(budget.count())) != 1) return BackendSocket();
    return BackendSocket(::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  }

 private:
  int fd_ = -1;
  sockaddr_in addr_{};
};

// A Worker whose upstream group 0 ("app") has one server: the listener.
// `upstream_extra` is YAML appended under the group (indented four spaces).
// The worker thread is never started; the test thread runs its base.
class WorkerHarness {
 public:
  explicit WorkerHarness(const std::string& upstream_extra = "") {
    std::string text = "listen: [\"127.0.0.1:0\"]\nupstreams:\n  app:\n    servers: [\"127.0.0.1:" +
                       std::to_string(listener.port()) + "\"]\n" + upstream_extra;
    Config config = load_config_text(text, "unit.yaml");
    auto version = build_version(1, std::move(config), {}, slots_);
    shared_ = std::make_unique<SharedState>(SharedState{std::make_unique<HealthTable>(kMaxSlots), nullptr});
    worker_ = std::make_unique<Worker>(*shared_, 0, version, std::vector<ListenSocket>{});
  }
  ~WorkerHarness() {
    worker_.reset();  // before the state it reads
  }

  Worker& worker() { return *worker_; }
  event_base* base() { return worker_->base(); }
  UpstreamPool& pool() { return worker_->pool(0); }
  // Summed over every slot: pool counters are kept per server.
  std::uint64_t count(Counter c) const { return worker_->stats().read().total(c); }

  struct Leg {
    std::unique_ptr<UpstreamConnection> conn;  // the proxy's end, as the pool hands it out
    BackendSocket backend;                     // the backend's end
  };

  // A new upstream connection and its accepted backend end. With
  // `wait_connected` the loop runs until the connect completed.
  Leg open(bool wait_connected = true) {
    int err = 0;
    Leg leg;
    leg.conn = pool().open(0, err);
    if (!leg.conn) throw std::runtime_error("connect to the loopback backend failed at once");
    leg.backend = listener.accept_one();
    if (!leg.backend.valid()) throw std::runtime_error("the backend accepted nothing");
    if (wait_connected) {
      UpstreamConnection* c = leg.conn.get();
      if (!run_until(base(), [c] { return c->connected(); })) throw std::runtime_error("connect never completed");
    }
    return leg;
  }

  LoopbackListener listener;

 private:
  SlotRegistry slots_;
  std::unique_ptr<SharedState> shared_;
  std::unique_ptr<Worker> worker_;
};

}  // namespace holdfast::test
