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
  const std::string& peer() const noexcept { return peer_; }
  // The address part of peer(), without brackets.
  std::string_view peer_ip() const noexcept;
  evbuffer* input() { return stream_.input(); }
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

  // Links and timestamp owned by the Worker's client lists.
  ListLink<ClientConnection> all_link;
  ListLink<ClientConnection> idle_link;
  ListLink<ClientConnection> resume_link;
  std::chrono::steady_clock::time_point idle_since{};

 private:
  enum class State { idle, reading_head, exchanging, discarding, tunnel, closing, lingering, closed };

  // Decoded chunks of a request body being discarded go nowhere.
  struct DiscardSink final : BodySink {
    void on_body_data(const char*, std::size_t) override {}
    void on_trailers(HeaderList&&) override {}
  };

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
  // decides whether the connection closes after it. Appended to `out`.
  void response_policy(std::string& out, bool must_close);
  void queue(const char* data, std::size_t n);

  Worker& worker_;
  Stream stream_;
  std::uint64_t id_;
  std::string peer_;  // "ip:port" or "[ip6]:port"
  std::unique_ptr<HttpParser> parser_;
  std::uint64_t version_ = 0;  // configuration version whose client settings apply
  std::unique_ptr<Exchange> exchange_;
  std::unique_ptr<Tunnel> tunnel_;    // after 101 Switching Protocols
  State state_ = State::idle;
  std::uint64_t served_ = 0;          // requests begun on this connection
  std::uint64_t response_bytes_ = 0;  // of the current answer
  bool close_after_response_ = false;
  bool linger_ = false;               // closing: half-close and drain reads first
  bool reading_paused_ = false;
  bool in_parse_ = false;             // parse_requests() is on the stack
  bool input_closed_ = false;         // the client shut down its sending side
  // The request being answered (for the response's framing).
  bool request_keep_alive_ = true;
  bool request_http11_ = true;
  bool request_head_ = false;         // HEAD: answers carry no body
  bool response_chunked_ = false;     // the current response is chunked to the client
  std::chrono::steady_clock::time_point deadline_{};  // head deadline, or end of lingering
  std::size_t lingered_ = 0;
  // discarding: Content-Length bytes left (nullopt: chunked, through the parser).
  std::optional<std::uint64_t> discard_left_;
  std::uint64_t discarded_ = 0;
  DiscardSink discard_sink_;
};

}  // namespace holdfast
