// One request/response exchange: takes the parsed request head from the
// client connection, leases an upstream connection from the pool (or opens
// one), streams the request body up and the response down with
// backpressure, and decides at the exact end of the message whether the
// upstream connection may go back to the pool.
//
// Ownership: owned by its ClientConnection. While leased, the upstream
// connection is owned here (`upstream_`) and goes back to the pool (or is
// closed) in exactly one place, finish_upstream().
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "holdfast/access_log.hpp"  // metrics: ExchangeTimes
#include "holdfast/errors.hpp"
#include "holdfast/http_message.hpp"
#include "holdfast/upstream_connection.hpp"

namespace holdfast {

class ClientConnection;
class Worker;
class UpstreamPool;

class Exchange final : public UpstreamConnection::Owner {
 public:
  // `request` is the head just parsed on `client`; `group` the routed upstream.
  Exchange(ClientConnection& client, MessageHead&& request, std::size_t group);
  ~Exchange() override;
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  void start();
  // Moves request body bytes from the client's input upward, as far as
  // backpressure allows. Called by the client when bytes arrive.
  void pump_request();
  bool request_complete() const noexcept { return request_done_; }
  // The client's output fell below the low watermark.
  void on_client_drained();
  // The client went away mid-exchange.
  void on_client_gone(const char* why);
  // A head the client cannot be answered about (e.g. after the client
  // connection closed) must not linger: drop the upstream side.
  bool response_started() const noexcept { return response_started_; }

  // UpstreamConnection::Owner
  void on_upstream_readable(UpstreamConnection& conn) override;
  void on_upstream_drained(UpstreamConnection& conn) override;
  void on_upstream_event(UpstreamConnection& conn, short what) override;

 private:
  enum class BodyMode { none, length, chunked, until_close };

  // Decodes a chunked body from one side and re-frames it on the other.
  struct ChunkedRelay final : BodySink {
    evbuffer* out = nullptr;
    bool rechunk = true;      // false: pass decoded bytes raw (HTTP/1.0 client, close-delimited)
    HeaderList trailers;
    // Request side only: the re-framed body is also kept for a retry while
    // it fits in copy_limit.
    std::string* copy = nullptr;
    bool* copy_ok = nullptr;
    std::size_t copy_limit = 0;
    void on_body_data(const char* data, std::size_t len) override;
    void on_trailers(HeaderList&& t) override { trailers = std::move(t); }
  };

  void build_upstream_head();
  void connect_upstream();
  void attach(std::unique_ptr<UpstreamConnection> conn, bool reused, bool replay);
  evbuffer* request_sink() const;
  void request_body_done();
  void process_response();
  bool handle_response_head();
  void response_done();
  void fail(ProxyError error, const char* detail);
  bool try_retry(ProxyError error);
  void finish_upstream(bool reusable);
  void write_access_log(int status);
  void arm_upstream_timeouts();
  std::size_t feed_chunked(HttpParser& parser, evbuffer* from, ChunkedRelay& relay, bool& done, bool& bad);

  ClientConnection& client_;
  Worker& worker_;
  UpstreamPool& pool_;
  MessageHead request_;
  std::size_t group_;
  std::size_t server_ = 0;
  std::chrono::steady_clock::time_point started_;

  // Request side
  BodyMode request_body_ = BodyMode::none;
  std::uint64_t request_remaining_ = 0;
  bool request_done_ = false;
  bool idempotent_ = false;
  bool expect_continue_ = false;
  bool upstream_started_ = false;
  evbuffer* pending_ = nullptr;        // request bytes produced before an upstream was attached
  std::string replay_;                 // head and body kept for a retry
  bool replay_complete_ = true;        // false once the body outgrew retry_buffer
  std::uint64_t queued_up_ = 0;        // bytes added to the current upstream output
  std::uint64_t bytes_in_ = 0;
  ChunkedRelay request_relay_;

  // Upstream
  std::unique_ptr<UpstreamConnection> upstream_;
  bool reused_ = false;
  bool retried_ = false;
  bool upstream_bytes_seen_ = false;
  bool upstream_read_paused_ = false;  // backpressure from the client side

  // Response side
  HttpParser response_parser_;
  BodyMode response_body_ = BodyMode::none;
  std::uint64_t response_remaining_ = 0;
  bool response_started_ = false;
  bool response_done_ = false;
  bool backend_close_ = false;
  bool client_chunked_ = false;
  int status_ = 0;
  std::uint64_t bytes_out_ = 0;
  ChunkedRelay response_relay_;
  bool finished_ = false;
  ExchangeTimes times_;  // metrics: connect and first-byte times for the record
};

}  // namespace holdfast
