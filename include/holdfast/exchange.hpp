// One request/response exchange, as orchestration only: it takes the parsed
// request head from the client connection, picks a server and leases a
// connection for its UpstreamRequest, moves request body bytes up and
// response events down to the client's DownstreamSink, retries when that is
// safe, and ends in exactly one place, finish().
//
// Its progress is one Phase (see phase.hpp), changed only by enter(), plus
// one small struct per direction. When every server that could take the
// request is at max_conns, it waits in its pool's queue (a SlotWaiter), still
// in Phase::buffering, until a slot frees, the queue times out or the client
// goes away.
//
// Ownership: owned by its ClientConnection, which deletes it on a later loop
// turn; finish() never calls back into the client on its own stack.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "holdfast/access_log.hpp"
#include "holdfast/downstream.hpp"
#include "holdfast/errors.hpp"
#include "holdfast/free_list.hpp"
#include "holdfast/http_message.hpp"
#include "holdfast/peer_address.hpp"
#include "holdfast/phase.hpp"
#include "holdfast/upstream_request.hpp"
#include "holdfast/wait_queue.hpp"

namespace holdfast {

class ClientConnection;
class Worker;
class UpstreamPool;
class Generation;

class Exchange final : private UpstreamRequest::Events, private SlotWaiter {
 public:
  // `request` is the head just parsed on `client`; `group` the routed upstream.
  Exchange(ClientConnection& client, DownstreamSink& sink, MessageHead&& request, std::size_t group);
  ~Exchange() override;
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;
  // One per request: the worker reuses the memory of finished ones.
  static void* operator new(std::size_t n) { return FreeList<Exchange>::allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { FreeList<Exchange>::release(p, n); }

  void start();
  // Moves request body bytes from the client's input upward, as far as
  // backpressure allows. Called by the client when bytes arrive.
  void pump_request();
  bool request_complete() const noexcept { return request_.done; }
  // Request body bytes still to come from the client: the Content-Length
  // left, or nullopt for a chunked body (its end is the parser's to find).
  std::optional<std::uint64_t> request_body_left() const noexcept {
    if (request_.mode == BodyMode::chunked) return std::nullopt;
    return request_.remaining;
  }
  // The client asked for 100-continue: it may never send the body.
  bool expects_continue() const noexcept { return expect_continue_; }
  // A head (or an error answer) has gone to the client.
  bool response_started() const noexcept { return response_.started; }
  Phase phase() const noexcept { return phase_; }

  // The client's output fell below the low watermark.
  void on_client_drained();
  // The client went away (or must be dropped) mid-exchange: no answer.
  void on_client_gone(const char* why);
  // The request body stalled past body_timeout before any answer: 408.
  void on_client_body_timeout();

 private:
  enum class BodyMode { none, length, chunked };
  struct RequestProgress {
    BodyMode mode = BodyMode::none;
    std::uint64_t remaining = 0;  // Content-Length bytes still to move
    std::uint64_t bytes = 0;      // read from the client, head included
    bool done = false;
  };
  struct ResponseProgress {
    int status = 0;
    bool started = false;
  };
  // How the exchange ended, for finish().
  struct Outcome {
    int status;
    bool tell_client;             // false when the client connection is going away
    bool log = true;              // false: a tunnel logs when it ends
  };
  // Decoded chunks of a chunked request body go to the upstream request.
  struct ChunkForwarder final : BodySink {
    UpstreamRequest* upstream = nullptr;
    HeaderList trailers;
    void on_body_data(const char* data, std::size_t len) override { upstream->send_chunk(data, len); }
    void on_trailers(HeaderList&& t) override { trailers = std::move(t); }
  };

  void enter(Phase next);
  void finish(const Outcome& outcome);
  // Picks a server (not `avoid` while another is eligible) and leases a
  // pooled connection (unless `fresh`) or opens one. false: the exchange
  // ended, or it waits in the queue for a slot (first attempt only).
  // `prefer`: that server, when it can take the request (a race retry).
  bool connect_upstream(std::optional<std::size_t> avoid = std::nullopt, bool fresh = false,
                        std::optional<std::size_t> prefer = std::nullopt);
  // Every server is at max_conns: joins (or stays in) the queue, or answers
  // 503 when it is full.
  void wait_for_slot(const std::string& why);
  bool queued() const noexcept;
  // Spends one unit of the failover budget (retries, retry_timeout) if any is left.
  bool may_fail_over();
  void move_to(Phase next) {
    if (phase_ != next) enter(next);
  }
  void request_body_done();
  void fail(ProxyError error, const char* detail);
  bool try_retry(ProxyError error, RetryClass retry);
  void write_access_log(int status);

  // SlotWaiter
  void on_slot_free() override;
  void on_queue_timeout() override;

  // UpstreamRequest::Events
  void on_upstream_connected() override;
  void on_request_drained() override;
  bool response_congested() override;
  void on_interim_response(const MessageHead& head) override;
  void on_switching_protocols(const MessageHead& head) override;
  void on_response_head(const MessageHead& head, UpstreamRequest::BodyMode mode) override;
  void on_response_data(evbuffer* from, std::size_t n) override;
  void on_response_data(const char* data, std::size_t n) override;
  void on_response_end(const HeaderList& trailers) override;
  void flush_response() override;
  void on_upstream_error(ProxyError error, const char* detail, RetryClass retry) override;
  // splice(2) (exchange_splice.cpp): which bodies qualify, and the counting.
  Stream* response_splice_target(std::optional<std::uint64_t> length) override;
  bool response_may_splice() override;
  void on_response_spliced(std::size_t n) override;
  void on_request_spliced(std::size_t n) override;
  // Called when no request body byte is buffered: moves a large
  // Content-Length body on from the client's socket by splice, when it qualifies.
  void splice_request_body();

  ClientConnection& client_;
  DownstreamSink& sink_;
  Worker& worker_;
  // The client's address, written out once per exchange (the connection
  // keeps it in binary form).
  PeerAddress::Text peer_;
  // The version this exchange started on: its routes, servers and limits
  // hold until it ends, whatever reloads happen meanwhile.
  std::shared_ptr<Generation> generation_;
  UpstreamPool& pool_;
  MessageHead head_;
  std::size_t group_;
  std::size_t server_ = 0;
  std::chrono::steady_clock::time_point started_;
  Phase phase_ = Phase::buffering;
  RequestProgress request_;
  ResponseProgress response_;
  bool idempotent_ = false;
  bool expect_continue_ = false;
  bool retried_ = false;          // the free retry after a reused connection failed was taken
  bool server_chosen_ = false;    // server_ names a real choice (for the log and per-server figures)
  bool splice_refused_ = false;   // the request body goes through the buffers
  unsigned failovers_ = 0;        // attempts moved on after a failure that reached no backend
  std::optional<Counter> retry_reason_;  // a retry to count once its connection is up
  const std::string_view* upgrade_;    // the Upgrade value this request may switch to, in head_
  ChunkForwarder forwarder_;
  UpstreamRequest upstream_;
};

}  // namespace holdfast
