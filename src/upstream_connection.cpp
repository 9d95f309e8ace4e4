#include "holdfast/upstream_connection.hpp"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

namespace holdfast {

std::unique_ptr<UpstreamConnection> UpstreamConnection::open(event_base* base, const sockaddr* addr, socklen_t len,
                                                             std::size_t server, std::uint64_t id, int& err) {
  err = 0;
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = errno;
    return nullptr;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::unique_ptr<UpstreamConnection> c(new UpstreamConnection());
  c->bev_ = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!c->bev_) {
    ::close(fd);
    err = ENOMEM;
    return nullptr;
  }
  c->server = server;
  c->id = id;
  c->created = c->last_used = Clock::now();
  bufferevent_setcb(c->bev_, &read_cb, &write_cb, &event_cb, c.get());
  // Larger single reads and writes than libevent's 16k default: fewer loop
  // turns per large body.
  bufferevent_set_max_single_read(c->bev_, 64 * 1024);
  bufferevent_set_max_single_write(c->bev_, 64 * 1024);
  int rc = ::connect(fd, addr, len);
  if (rc < 0 && errno != EINPROGRESS) {
    err = errno;
    return nullptr;
  }
  // Connected (rare on loopback) or in progress: libevent reports CONNECTED
  // through the event callback either way once we ask it to.
  if (bufferevent_socket_connect(c->bev_, nullptr, 0) < 0) {
    err = errno ? errno : ECONNREFUSED;
    return nullptr;
  }
  return c;
}

UpstreamConnection::~UpstreamConnection() {
  if (bev_) {
    bufferevent_setcb(bev_, nullptr, nullptr, nullptr, nullptr);
    bufferevent_free(bev_);
  }
}

bool UpstreamConnection::quiet_and_open() const noexcept {
  if (evbuffer_get_length(bufferevent_get_input(bev_)) != 0) return false;
  char byte;
  ssize_t n = ::recv(fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return false;                     // EOF: the backend closed it
  if (n > 0) return false;                      // unsolicited bytes: framing is in doubt
  return errno == EAGAIN || errno == EWOULDBLOCK;  // anything else is an error
}

void UpstreamConnection::set_timeouts(std::optional<Millis> read, std::optional<Millis> write) {
  timeval rtv{}, wtv{};
  if (read) {
    rtv.tv_sec = read->count() / 1000;
    rtv.tv_usec = (read->count() % 1000) * 1000;
  }
  if (write) {
    wtv.tv_sec = write->count() / 1000;
    wtv.tv_usec = (write->count() % 1000) * 1000;
  }
  bufferevent_set_timeouts(bev_, read ? &rtv : nullptr, write ? &wtv : nullptr);
}

void UpstreamConnection::read_cb(bufferevent*, void* arg) {
  auto* self = static_cast<UpstreamConnection*>(arg);
  if (self->owner_) self->owner_->on_upstream_readable(*self);
}

void UpstreamConnection::write_cb(bufferevent*, void* arg) {
  auto* self = static_cast<UpstreamConnection*>(arg);
  if (self->owner_) self->owner_->on_upstream_drained(*self);
}

void UpstreamConnection::event_cb(bufferevent*, short what, void* arg) {
  auto* self = static_cast<UpstreamConnection*>(arg);
  if (what & BEV_EVENT_CONNECTED) self->connected = true;
  if (self->owner_) self->owner_->on_upstream_event(*self, what);
}

}  // namespace holdfast
