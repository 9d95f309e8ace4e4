// Accepts client connections on one listening socket for one worker.
//
// When accept() fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM)
// the pending connections stay in the kernel's queue and the socket stays
// readable: re-arming at once would spin the loop and log every turn. The
// listener instead stops accepting for kAcceptPause, then tries again (nginx
// disables its accept events for accept_mutex_delay the same way). An outage
// is logged when it starts, every kStreakReminder while it lasts and once
// accepts have worked for kSettle: a handful of lines, not one per try.
#pragma once

#include <event2/event.h>
#include <event2/listener.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace holdfast {

class Listener {
 public:
  using AcceptFn = std::function<void(int fd, const sockaddr* addr, int len)>;
  static constexpr std::chrono::milliseconds kAcceptPause{250};
  static constexpr std::chrono::milliseconds kSettle{1000};
  static constexpr std::chrono::seconds kStreakReminder{10};

  // Takes ownership of `fd`, which must be bound, listening (its backlog set by
  // open_listen_socket) and non-blocking. `on_accept` owns each accepted fd.
  Listener(event_base* base, int fd, AcceptFn on_accept);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  void stop();  // stop accepting; the socket is closed
  // Accepts every connection already queued on the socket (before stop()).
  void accept_pending();

 private:
  using Clock = std::chrono::steady_clock;
  enum class State { accepting, paused, probing };
  static void accept_cb(evconnlistener*, evutil_socket_t, sockaddr*, int, void*);
  static void error_cb(evconnlistener*, void*);
  static void on_timer(evutil_socket_t, short, void*);
  // The one place where state_ changes; `err` is accept()'s errno when pausing.
  void move_to(State next, int err);
  void arm_timer(std::chrono::milliseconds after);

  evconnlistener* listener_ = nullptr;
  event* timer_ = nullptr;         // armed while paused (resume) or probing (settle)
  AcceptFn on_accept_;
  std::string address_;            // for logs
  State state_ = State::accepting;
  Clock::time_point outage_start_{};  // first failure of the current outage
  Clock::time_point resumed_at_{};     // end of the last pause
  Clock::time_point last_logged_{};
  std::uint64_t pauses_ = 0;       // in the current outage
};

// Opens a listening socket for `host:port` with `backlog` (SO_REUSEADDR, and
// SO_REUSEPORT so that each worker can have its own). The kernel silently caps
// the backlog at net.core.somaxconn. Returns -1 and sets `error`.
int open_listen_socket(const std::string& host, std::uint16_t port, int backlog, std::string& error);
// net.core.somaxconn, or nullopt when it cannot be read.
std::optional<int> kernel_somaxconn();
// The local address of a socket, "127.0.0.1:8080" / "[::1]:8080".
std::string local_address(int fd);

}  // namespace holdfast
