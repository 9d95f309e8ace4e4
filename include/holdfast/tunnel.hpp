// A byte tunnel between a client connection and an upstream connection,
// after a 101 Switching Protocols (WebSocket and other Upgrade protocols).
//
// Each direction moves bytes from one Stream's input to the other's output
// with backpressure (reading stops while the other side's output is above
// kHighWater), so memory per tunnel is bounded whatever the traffic. A FIN
// from one side becomes a shutdown of writing on the other once everything
// before it is written; the tunnel ends when both directions are done,
// either side fails, or nothing moved for tunnel_timeout.
//
// Ownership: owned by its ClientConnection (which forwards the client
// Stream's events here). The upstream connection is owned here and is
// closed at the end: a connection that carried a tunnel never goes back to
// a pool.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "holdfast/duration.hpp"
#include "holdfast/upstream_connection.hpp"

namespace holdfast {

class ClientConnection;
class Generation;
class Worker;

// What the tunnel's access-log record needs from the exchange that opened it.
struct TunnelOrigin {
  std::string method;
  std::string target;
  int version_major = 1;
  int version_minor = 1;
  std::size_t group = 0;
  std::size_t server = 0;
  bool reused = false;
  std::uint64_t request_bytes = 0;   // the upgrade request, as read from the client
  std::uint64_t response_bytes = 0;  // the 101 head, as written to the client
  std::chrono::steady_clock::time_point started{};
  // The version the upgrade request was routed on (the tunnel's server and
  // pool are that version's).
  std::shared_ptr<Generation> generation;
};

class Tunnel final : public UpstreamConnection::Owner {
 public:
  Tunnel(ClientConnection& client, Stream& client_stream, std::unique_ptr<UpstreamConnection> upstream,
         Millis idle_timeout, TunnelOrigin origin);
  ~Tunnel() override;
  Tunnel(const Tunnel&) = delete;
  Tunnel& operator=(const Tunnel&) = delete;

  // Moves what both sides already sent (bytes that came with the upgrade
  // request or after the 101 head) and starts reading both ways.
  void start();

  // Client Stream events, forwarded by the ClientConnection.
  void on_client_readable() { pump(up_); }
  void on_client_drained() { on_drained(down_); }
  void on_client_event(short what) { on_event(up_, what); }

  // UpstreamConnection::Owner
  void on_upstream_readable(UpstreamConnection&) override { pump(down_); }
  void on_upstream_drained(UpstreamConnection&) override { on_drained(up_); }
  void on_upstream_event(UpstreamConnection&, short what) override { on_event(down_, what); }

  // Ends the tunnel now (the client connection is closing, or shutdown).
  void close(const char* reason);

 private:
  enum class End { client, backend, idle_timeout, error, shutdown };
  struct Direction {
    Stream* from = nullptr;
    Stream* to = nullptr;
    const char* from_name = "";
    std::uint64_t bytes = 0;
    bool eof = false;       // `from` sent FIN
    bool shut = false;      // FIN passed on to `to`
    bool paused = false;    // `from` not read: `to` is full
  };

  void pump(Direction& d);
  void on_drained(Direction& d);
  void on_event(Direction& d, short what);
  void end(End why, const char* detail);

  ClientConnection& client_;
  Worker& worker_;
  std::unique_ptr<UpstreamConnection> upstream_;
  Millis idle_timeout_;
  TunnelOrigin origin_;
  Direction up_;    // client -> backend
  Direction down_;  // backend -> client
  std::chrono::steady_clock::time_point last_activity_;
  const char* first_fin_ = nullptr;
  bool ended_ = false;
};

}  // namespace holdfast
