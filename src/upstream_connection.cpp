#include "holdfast/upstream_connection.hpp"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "holdfast/loop_clock.hpp"
#include "holdfast/sys_io.hpp"

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
  if (::connect(fd, addr, len) < 0 && errno != EINPROGRESS) {
    err = errno;
    ::close(fd);
    return nullptr;
  }
  // Connected at once (possible on loopback) or in progress: the stream
  // reports `connected` from the loop either way.
  std::unique_ptr<UpstreamConnection> c(new UpstreamConnection(base, fd));
  c->server = server;
  c->id = id;
  c->created = c->last_used = LoopClock::now();
  return c;
}

bool UpstreamConnection::quiet_and_open() const noexcept {
  if (stream_.is_closed() || stream_.input_length() != 0) return false;
  char byte;
  ssize_t n = sys::recv(stream_.fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return false;                        // EOF: the backend closed it
  if (n > 0) return false;                         // unsolicited bytes: framing is in doubt
  return errno == EAGAIN || errno == EWOULDBLOCK;  // anything else is an error
}

void UpstreamConnection::on_stream_readable(Stream&) {
  if (owner_) owner_->on_upstream_readable(*this);
}

void UpstreamConnection::on_stream_drained(Stream&) {
  if (owner_) owner_->on_upstream_drained(*this);
}

void UpstreamConnection::on_stream_event(Stream&, short what) {
  if (owner_) owner_->on_upstream_event(*this, what);
}

}  // namespace holdfast
