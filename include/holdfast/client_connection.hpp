// One client (downstream) connection: reads requests with llhttp, runs one
// Exchange at a time (pipelined requests wait in the input buffer and are
// answered in order), and applies holdfast's own keep-alive policy.
//
// Ownership: the Worker owns every ClientConnection (remove_client() hands it
// to the worker's deferred-delete list). A ClientConnection owns its current
// Exchange; a finished Exchange is deleted on the next loop turn.
#pragma once

#include <event2/buffer.h>
#include <netinet/in.h>

#include <chrono>
#include <memory>
#include <string>

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

class ClientConnection final : private Stream::Handler {
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
  evbuffer* output() { return stream_.output(); }
  // Writes what the exchange put in output() (now, as far as the socket takes it).
  void flush() { stream_.flush(); }
  // Exists from the first byte of a request head until the connection is
  // idle again; an idle connection carries no parser.
  HttpParser& parser() noexcept { return *parser_; }
  void pause_reading();
  void resume_reading();
  // The request body has been read in full: stop parsing (pipelined bytes wait).
  void on_request_complete();
  // Connection and Keep-Alive fields for the response now being written; also
  // decides whether the connection closes after it. `must_close` when the
  // response's framing needs the close.
  std::string response_policy(bool must_close);
  // The exchange wrote its whole response (or an error page).
  void on_exchange_finished();
  // The response cannot be completed: drop the connection without ending it
  // as if the response were whole.
  void abort();

  // Worker is draining: close now if idle, else close after the current response.
  void drain();
  bool idle() const noexcept { return state_ == State::idle; }
  // keepalive_timeout ran out while idle (called by the worker).
  void close_idle() { close_now(); }

  // Links and timestamp owned by the Worker's client lists.
  ListLink<ClientConnection> all_link;
  ListLink<ClientConnection> idle_link;
  std::chrono::steady_clock::time_point idle_since{};

 private:
  enum class State { idle, reading_head, exchanging, closing, closed };

  void on_stream_readable(Stream&) override;
  void on_stream_drained(Stream&) override;
  void on_stream_event(Stream&, short what) override;

  void parse_requests();
  void begin_exchange();
  void reject(ProxyError error, const char* detail);
  void finish_or_close();
  void close_now();
  void enter_idle();
  void set_read_timeout(std::optional<std::chrono::milliseconds> t);

  Worker& worker_;
  Stream stream_;
  std::uint64_t id_;
  std::string peer_;  // "ip:port" or "[ip6]:port"
  std::unique_ptr<HttpParser> parser_;
  std::unique_ptr<Exchange> exchange_;
  State state_ = State::idle;
  std::uint64_t served_ = 0;          // responses begun on this connection
  bool close_after_response_ = false;
  bool reading_paused_ = false;
  bool in_parse_ = false;             // parse_requests() is on the stack
  bool request_keep_alive_ = true;    // the current request allows a persistent connection
  std::chrono::steady_clock::time_point head_deadline_{};
};

}  // namespace holdfast
