// One client (downstream) HTTP/1 connection: reads requests with llhttp,
// runs one Exchange at a time (pipelined requests wait in the input buffer and
// are answered in order), and is that exchange's DownstreamSink: it writes
// response heads, chunk framing and error answers, and applies holdfast's own
// keep-alive policy.
//
// Ownership: the Worker owns every ClientConnection (remove_client() hands it
// to the worker's deferred-delete list). A ClientConnection owns its current
// Exchange; a finished Exchange is deleted on a later loop turn, and the next
// pipelined request starts from the worker's resume queue, never from inside
// the previous exchange's stack.
#pragma once

#include <event2/buffer.h>
#include <netinet/in.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "holdfast/downstream.hpp"
#include "holdfast/errors.hpp"
#include "holdfast/http_message.hpp"
#include "holdfast/intrusive_list.hpp"
#include "holdfast/peer_address.hpp"
#include "holdfast/stream.hpp"

namespace holdfast {

class Worker;
class Exchange;

// Memory bounds for one connection's buffers: reading from one side stops
// while the other side's output is above kHighWater, resumes below kLowWater.
inline constexpr std::size_t kHighWater = 256 * 1024;
inline constexpr std::size_t kLowWater = 64 * 1024;
inline constexpr std::size_t kReadChunk = 64 * 1024;

// Lingering close (nginx's lingering_close): after a final answer to a client
// that may still be sending, holdfast shuts down its sending side and reads
// and discards for a while, so that the kernel does not answer the client's
// late bytes with a reset that could destroy the answer in flight.
inline constexpr std::chrono::milliseconds kLingerReadTimeout{2000};
inline constexpr std::chrono::milliseconds kLingerTime{10'000};
inline constexpr std::size_t kLingerBytes = 64 * 1024 * 1024;

// After an answer that came before the request body was read in full (an
// early 401 or 413), the rest of the body is read and discarded so that the
// connection stays usable, as nginx does; past these bounds it is closed.
inline constexpr std::uint64_t kDiscardBytes = 1024 * 1024;
inline constexpr std::chrono::milliseconds kDiscardTime{5000};

// While draining, how long an idle keep-alive connection is left open for a
// request its client may be sending at that moment.
inline constexpr std::chrono::milliseconds kDrainIdleGrace{1000};

class ClientConnection final : private Stream::Handler, public DownstreamSink {
 public:
  ClientConnection(Worker& worker, int fd, const sockaddr* addr, int addrlen);
  ~ClientConnection() override;
  ClientConnection(const ClientConnection&) = delete;
  ClientConnection& operator=(const ClientConnection&) = delete;

  void start();

  // --- For the Exchange ---
  Worker& worker() const noexcept { return worker_; }
  std::uint64_t id() const noexcept { return id_; }
  // The client's address as text ("ip:port", and .ip() without the port),
  // made on each call: an Exchange takes it once.
  PeerAddress::Text peer() const noexcept { return peer_.text(); }
  // The socket itself, for a request body moved by splice(2).
  Stream& stream() noexcept { return stream_; }
  // Exists from the first byte of a request head until the connection is
  // idle again; an idle connection carries no parser.
  HttpParser& parser() noexcept { return *parser_; }
  void pause_reading();
  void resume_reading();
  // The request body has been read in full: stop parsing (pipelined bytes wait).
  void on_request_complete();
  // The exchange ended with an answer; the client carries on from the
  // worker's resume queue (same loop iteration, fresh stack).
  void on_exchange_finished();

  // DownstreamSink (client_response.cpp)
  void send_interim(const MessageHead& head) override;
  void send_head(const MessageHead& head, Framing framing, bool request_complete) override;
  void send_data(evbuffer* from, std::size_t n) override;
  void send_data(const char* data, std::size_t n) override;
  void end(const HeaderList& trailers) override;
  void send_error(int status, std::string_view text, bool request_complete) override;
  void start_tunnel(const MessageHead& head, std::unique_ptr<UpstreamConnection> upstream, TunnelOrigin origin,
                    Millis idle_timeout) override;
  void abort() override;
  void flush() override { stream_.flush(); }
  bool congested() override;
  std::uint64_t response_bytes() const noexcept override { return response_bytes_; }
  Stream* splice_target() override { return response_chunked_ ? nullptr : &stream_; }
  void note_spliced(std::size_t n) override { response_bytes_ += n; }

  // --- For the Worker ---
  // The tunnel ended (it already closed its upstream side).
  void on_tunnel_closed() { close_now(); }
  // Continues after a finished exchange (from the resume queue).
  void resume_after_exchange();
  // Draining: the next response says Connection: close; idle connections are
  // closed by the worker once idle for the drain grace.
  void drain();
  bool idle() const noexcept { return state_ == State::idle; }
  // The idle deadline ran out (called by the worker). `gracefully`: half-close
  // and linger, for a client that may be sending right now (draining).
  void close_idle(bool gracefully);

  // Link, list tag (listed_in, below) and timestamp owned by the Worker's
  // client lists. A connection is in exactly one of them: idle between
  // requests, resume between an exchange's end and the next request, active
  // otherwise; so one link serves all three, and `listed_in` says which
  // holds it (none: not, or no longer, the worker's).
  enum class ClientList : std::uint8_t { none, active, idle, resume };
  ListLink<ClientConnection> list_link;

 private:
  enum class State : std::uint8_t { idle, reading_head, exchanging, discarding, tunnel, closing, lingering, closed };

  // Decoded chunks of a request body being discarded go nowhere.
  struct DiscardSink final : BodySink {
    void on_body_data(const char*, std::size_t) override {}
    void on_trailers(HeaderList&&) override {}
  };
  // State of the rare endings, made on first use (client_discard.cpp,
  // client_close.cpp): an idle connection does not carry it.
  struct Ending {
    // discarding: Content-Length bytes left (nullopt: chunked, through the parser).
    std::optional<std::uint64_t> discard_left;
    std::uint64_t discarded = 0;
    std::size_t lingered = 0;
    DiscardSink discard_sink;
  };
  Ending& ending();

  void on_stream_readable(Stream&) override;
  void on_stream_drained(Stream&) override;
  void on_stream_event(Stream&, short what) override;
  void on_timeout(bool reading);
  void on_input_closed();

  void parse_requests();
  void begin_exchange();
  // The current version's client.* limits (input, send timeout).
  void apply_client_settings();
  void reject(ProxyError error, const char* detail);
  // Writes what is pending, then closes; `linger` when the client may still be sending.
  void close_after_output(bool linger);
  void start_lingering();
  void close_now();
  void enter_idle();
  // After an exchange, idle again: parses what is pipelined, or waits.
  void continue_after_request();
  // The answer went out before the request body was read (client_discard.cpp).
  bool can_discard_request_body() const;
  void start_discarding(std::optional<std::uint64_t> left);
  void discard_request_body();
  // Connection and Keep-Alive fields for the answer now being written; also
  // decides whether the connection closes after it. Written at `p`, which
  // has kPolicyRoom bytes of room; returns where they end.
  static constexpr std::size_t kPolicyRoom = 96;
  char* write_response_policy(char* p, bool must_close);
  void queue(const char* data, std::size_t n);

  // Every byte here is paid once per idle keep-alive connection: what only
  // a request in flight or a rare ending needs is made on use (parser_,
  // exchange_, tunnel_, ending_), and the small fields share the tail.
  Worker& worker_;
  Stream stream_;
  std::uint64_t id_;
  std::unique_ptr<HttpParser> parser_;
  std::unique_ptr<Exchange> exchange_;
  std::unique_ptr<Tunnel> tunnel_;    // after 101 Switching Protocols
  std::unique_ptr<Ending> ending_;    // discarding or lingering (see Ending)
  std::uint64_t served_ = 0;          // requests begun on this connection
  std::uint64_t response_bytes_ = 0;  // of the current answer
  std::chrono::steady_clock::time_point deadline_{};  // head deadline, or end of lingering or discarding
  PeerAddress peer_;
  // Low 32 bits of the configuration version whose client settings apply
  // (only compared for equality with the current one).
  std::uint32_t version_ = 0;
  State state_ = State::idle;
  bool close_after_response_ : 1 = false;
  bool linger_ : 1 = false;               // closing: half-close and drain reads first
  bool reading_paused_ : 1 = false;
  bool in_parse_ : 1 = false;             // parse_requests() is on the stack
  bool input_closed_ : 1 = false;         // the client shut down its sending side
  // The request being answered (for the response's framing).
  bool request_keep_alive_ : 1 = true;
  bool request_http11_ : 1 = true;
  bool request_head_ : 1 = false;         // HEAD: answers carry no body
  bool response_chunked_ : 1 = false;     // the current response is chunked to the client

 public:
  ClientList listed_in = ClientList::none;  // owned by the Worker
  // When the connection became idle, in Worker::clock_ms() units.
  std::uint32_t idle_since_ms = 0;
};

}  // namespace holdfast
