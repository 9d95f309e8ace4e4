// One TCP connection to one upstream server, with the bookkeeping the pool
// needs to decide whether it may be reused. It knows nothing of HTTP.
//
// Ownership: exactly one owner at a time. While idle it is held by the
// UpstreamPool (in its idle list); while leased it is held by the Exchange
// that sends a request on it. The hand-over is a std::unique_ptr move, and
// the current owner installs itself with set_owner() to receive the events.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "holdfast/duration.hpp"
#include "holdfast/stats.hpp"
#include "holdfast/stream.hpp"

namespace holdfast {

using Clock = std::chrono::steady_clock;

class UpstreamConnection final : private Stream::Handler {
 public:
  // Receives the connection's I/O events; implemented by the pool (idle) and
  // by the exchange (leased). `what` holds Stream::eof, error, timeout (with
  // reading/writing) or connected.
  class Owner {
   public:
    virtual ~Owner() = default;
    virtual void on_upstream_readable(UpstreamConnection& conn) = 0;
    // Output fell to the drain mark after having been held back.
    virtual void on_upstream_drained(UpstreamConnection& conn) = 0;
    virtual void on_upstream_event(UpstreamConnection& conn, short what) = 0;
  };

  // Starts a non-blocking connect. Returns nullptr (and sets `err` to errno)
  // when the socket could not even be created or the connect failed at once.
  static std::unique_ptr<UpstreamConnection> open(event_base* base, const sockaddr* addr, socklen_t len,
                                                  std::size_t server, std::uint64_t id, int& err);
  ~UpstreamConnection() override = default;
  UpstreamConnection(const UpstreamConnection&) = delete;
  UpstreamConnection& operator=(const UpstreamConnection&) = delete;

  void set_owner(Owner* owner) noexcept { owner_ = owner; }
  Stream& stream() noexcept { return stream_; }
  evbuffer* output() { return stream_.output(); }
  bool connected() const noexcept { return !stream_.is_connecting(); }

  // Non-blocking peek: true when the socket has neither pending bytes nor EOF
  // nor an error, i.e. it is safe to write a new request on it.
  bool quiet_and_open() const noexcept;

  // Closes the socket now (the object itself is deleted later by its owner).
  void close() { stream_.close(); }

  // Bookkeeping, read and written by the pool and the exchange.
  std::size_t server = 0;
  std::uint64_t id = 0;
  Clock::time_point created{};
  Clock::time_point last_used{};               // end of the last response
  Clock::time_point acquired_at{};             // when the pool last handed it out
  std::uint64_t requests = 0;                   // requests sent on it
  std::optional<std::uint64_t> requests_left;   // from the backend's max=
  std::optional<Millis> backend_idle_timeout;   // learned or declared
  // Which limit set the idle deadline now armed (pool bookkeeping).
  Counter idle_expiry = Counter::evict_idle_timeout;

 private:
  UpstreamConnection(event_base* base, int fd) : stream_(base, fd, true) { stream_.set_handler(this); }
  void on_stream_readable(Stream&) override;
  void on_stream_drained(Stream&) override;
  void on_stream_event(Stream&, short what) override;

  Stream stream_;
  Owner* owner_ = nullptr;
};

}  // namespace holdfast
