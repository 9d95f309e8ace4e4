#include "holdfast/listener.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace holdfast {

namespace {
double seconds_between(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}
}  // namespace

Listener::Listener(event_base* base, int fd, AcceptFn on_accept)
    : on_accept_(std::move(on_accept)), address_(local_address(fd)) {
  // Backlog 0: the socket already listens with the configured backlog. Any
  // other value makes libevent call listen() again (-1 means 128), which
  // would silently replace ours.
  listener_ = evconnlistener_new(base, &accept_cb, this, LEV_OPT_CLOSE_ON_FREE, 0, fd);
  if (!listener_) {
    spdlog::error("listener {}: cannot watch the socket", address_);
    ::close(fd);
    return;
  }
  evconnlistener_set_error_cb(listener_, &error_cb);
  timer_ = evtimer_new(base, &Listener::on_timer, this);
}

Listener::~Listener() {
  stop();
  if (timer_) event_free(timer_);
}

void Listener::stop() {
  if (timer_) evtimer_del(timer_);
  if (listener_) {
    evconnlistener_free(listener_);
    listener_ = nullptr;
  }
}

void Listener::accept_pending() {
  if (!listener_) return;
  int lfd = evconnlistener_get_fd(listener_);
  for (int i = 0; i < 100000; ++i) {  // bounded by the backlog in practice
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN: the queue is empty (or accept failed: nothing more to take)
    on_accept_(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<int>(len));
  }
}

void Listener::accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int len, void* arg) {
  static_cast<Listener*>(arg)->on_accept_(fd, addr, len);
}

void Listener::error_cb(evconnlistener*, void* arg) {
  // libevent calls this for the errors it does not retry by itself (EINTR,
  // EAGAIN and ECONNABORTED it does); errno is still accept()'s. Every such
  // error pauses, not only EMFILE/ENFILE: the socket stays readable whatever
  // the reason, so an immediate retry could only spin.
  int err = errno;
  static_cast<Listener*>(arg)->move_to(State::paused, err);
}

void Listener::on_timer(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Listener*>(arg);
  if (!self->listener_) return;
  self->move_to(self->state_ == State::paused ? State::probing : State::accepting, 0);
}

//   from       to         when                          log
//   accepting  paused     accept fails                  outage starts
//   paused     probing    pause over: accept again      -
//   probing    paused     accept fails again            reminder, every kStreakReminder
//   probing    accepting  kSettle without a failure     outage over
// Near the limit, a resumed listener often accepts a few connections and
// fails again; probing keeps that inside one outage instead of logging its
// end and a new start every pause.
void Listener::move_to(State next, int err) {
  const auto now = Clock::now();
  switch (next) {
    case State::paused:
      evconnlistener_disable(listener_);
      arm_timer(kAcceptPause);
      if (state_ == State::accepting) {
        outage_start_ = last_logged_ = now;
        pauses_ = 0;
        spdlog::error("listener {}: accept failed: {}; pausing accepts for {}ms at a time until they succeed",
                      address_, strerror(err), kAcceptPause.count());
      } else if (now - last_logged_ >= kStreakReminder) {
        last_logged_ = now;
        spdlog::error("listener {}: accept still failing after {:.1f}s ({} pauses): {}", address_,
                      seconds_between(outage_start_, now), pauses_, strerror(err));
      }
      ++pauses_;
      break;
    case State::probing:
      // Pending connections waited in the kernel's queue meanwhile.
      evconnlistener_enable(listener_);
      arm_timer(kSettle);
      resumed_at_ = now;
      break;
    case State::accepting:
      spdlog::warn("listener {}: accepting again after {:.1f}s of failed accepts ({} pause{})", address_,
                   seconds_between(outage_start_, resumed_at_), pauses_, pauses_ == 1 ? "" : "s");
      break;
  }
  state_ = next;
}

void Listener::arm_timer(std::chrono::milliseconds after) {
  timeval tv{static_cast<time_t>(after.count() / 1000), static_cast<suseconds_t>((after.count() % 1000) * 1000)};
  evtimer_add(timer_, &tv);  // re-adding replaces a pending deadline
}

std::optional<int> kernel_somaxconn() {
  std::ifstream in("/proc/sys/net/core/somaxconn");
  int value = 0;
  if (in >> value && value > 0) return value;
  return std::nullopt;
}

int open_listen_socket(const std::string& host, std::uint16_t port, int backlog, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    error = std::string("cannot resolve '") + host + "': " + gai_strerror(rc);
    return -1;
  }
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = strerror(errno);
    freeaddrinfo(res);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (res->ai_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd, res->ai_addr, res->ai_addrlen) < 0 || ::listen(fd, backlog) < 0) {
    error = std::string("cannot listen on ") + host + ":" + service + ": " + strerror(errno);
    ::close(fd);
    freeaddrinfo(res);
    return -1;
  }
  freeaddrinfo(res);
  return fd;
}

std::string local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return "?";
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    return std::string("[") + buf + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
  return std::string(buf) + ":" + std::to_string(ntohs(a->sin_port));
}

}  // namespace holdfast
