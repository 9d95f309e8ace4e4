// Idle keep-alive client connections without an event of their own.
//
// Every open socket costs libevent a 128-byte struct event. A connection
// that has been idle for kParkAfter gives it up: its worker moves the socket
// from libevent's epoll set into a second epoll set, this lot's, which
// libevent watches as one descriptor, and the stream frees the event. When
// the socket stirs (a request, a FIN, an error) the lot hands the stream an
// event again and the socket returns to libevent's set, whose registration
// reports the readiness that woke it, so the bytes are read as usual. Any
// other use of a parked stream (a write, a deadline) takes it back too.
//
// Cost: an epoll_ctl on each set per park and per wake (four in all),
// paid only by connections that stayed idle longer than kParkAfter, for
// whom a few microseconds per request are nothing.
//
// Ownership: one lot per worker, used on that worker's thread only (it is
// that thread's current() lot). It borrows the parked streams; a stream
// closed while parked leaves the lot through forget() (closing the socket
// takes it out of the epoll set).
#pragma once

#include <event2/event.h>

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace holdfast {

class Stream;
class Stats;

class ParkingLot {
 public:
  // An idle connection parks once it has been idle this long.
  static constexpr std::chrono::milliseconds kParkAfter{100};

  // Parking is off (park() says no) when the epoll set cannot be made.
  ParkingLot(event_base* base, Stats& stats);
  ~ParkingLot();
  ParkingLot(const ParkingLot&) = delete;
  ParkingLot& operator=(const ParkingLot&) = delete;

  // Makes this the calling thread's lot (the worker's loop thread).
  void bind_to_thread() noexcept;
  static ParkingLot* current() noexcept;

  // Parks `s` when it can_park(); false leaves it as it was.
  bool park(Stream& s) noexcept;
  // Gives `s` its event back and takes its socket out of the set.
  void unpark(Stream& s);
  // `s`, parked, is closing: its socket leaves the set as it closes.
  static void forget(Stream& s) noexcept;
  std::size_t size() const noexcept { return parked_; }

 private:
  static void on_ready(evutil_socket_t, short, void* arg);
  void publish() noexcept;

  event_base* base_;
  Stats& stats_;
  int epfd_ = -1;
  event* watch_ = nullptr;  // libevent's read event on epfd_
  std::size_t parked_ = 0;
};

}  // namespace holdfast
