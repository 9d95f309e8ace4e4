// Accepts client connections on one listening socket for one worker.
#pragma once

#include <event2/listener.h>

#include <cstdint>
#include <functional>
#include <string>

namespace holdfast {

class Listener {
 public:
  using AcceptFn = std::function<void(int fd, const sockaddr* addr, int len)>;
  // Takes ownership of `fd`, which must be bound, listening and non-blocking.
  Listener(event_base* base, int fd, AcceptFn on_accept);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  void stop();  // stop accepting; the socket is closed
  // Accepts every connection already queued on the socket (before stop()).
  void accept_pending();

 private:
  static void accept_cb(evconnlistener*, evutil_socket_t, sockaddr*, int, void*);
  static void error_cb(evconnlistener*, void*);
  evconnlistener* listener_ = nullptr;
  AcceptFn on_accept_;
};

// Opens a listening socket for `host:port` (SO_REUSEADDR, and SO_REUSEPORT so
// that each worker can have its own). Returns -1 and sets `error`.
int open_listen_socket(const std::string& host, std::uint16_t port, std::string& error);
// The local address of a socket, "127.0.0.1:8080" / "[::1]:8080".
std::string local_address(int fd);

}  // namespace holdfast
