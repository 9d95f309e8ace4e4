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

#include <string>

namespace holdfast {

Listener::Listener(event_base* base, int fd, AcceptFn on_accept) : on_accept_(std::move(on_accept)) {
  listener_ = evconnlistener_new(base, &accept_cb, this, LEV_OPT_CLOSE_ON_FREE, -1, fd);
  if (listener_) evconnlistener_set_error_cb(listener_, &error_cb);
}

Listener::~Listener() { stop(); }

void Listener::stop() {
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

void Listener::error_cb(evconnlistener*, void*) {
  // EMFILE and friends: libevent keeps the listener; say why connections wait.
  spdlog::error("accept failed: {}", strerror(errno));
}

int open_listen_socket(const std::string& host, std::uint16_t port, std::string& error) {
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
  if (::bind(fd, res->ai_addr, res->ai_addrlen) < 0 || ::listen(fd, 4096) < 0) {
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
