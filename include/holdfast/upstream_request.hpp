// One request sent upstream and its response read back, over a leased pooled
// (or new) connection. It owns the lease, the request encoder with its replay
// copy, and the response decoder (1xx loop, body framing, Keep-Alive hint);
// it alone decides whether the connection may go back to the pool.
//
// It reports upward through Events (implemented by the Exchange): the final
// head, body bytes, the end, and failures with their retry class. It never
// finishes the exchange itself and never deletes anything.
//
// Ownership: a member of its Exchange. While attached, the UpstreamConnection
// is owned here (conn_) and leaves in exactly one place, release().
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "holdfast/errors.hpp"
#include "holdfast/http_message.hpp"
#include "holdfast/retry.hpp"
#include "holdfast/splice.hpp"
#include "holdfast/upstream_connection.hpp"

namespace holdfast {

class UpstreamPool;

class UpstreamRequest final : public UpstreamConnection::Owner {
 public:
  enum class BodyMode { none, length, chunked, until_close };

  class Events {
   public:
    virtual ~Events() = default;
    virtual void on_upstream_connected() = 0;
    // The request output fell to the low mark: the client may send more.
    virtual void on_request_drained() = 0;
    // The client cannot take more right now; reading pauses until resume_response().
    virtual bool response_congested() = 0;
    virtual void on_interim_response(const MessageHead& head) = 0;
    // 101 to a request that asked for an upgrade: take_connection() hands
    // the connection over (bytes after the head stay in its input).
    virtual void on_switching_protocols(const MessageHead& head) = 0;
    // The final head, validated in full before any byte of it was relayed.
    virtual void on_response_head(const MessageHead& head, BodyMode mode) = 0;
    virtual void on_response_data(evbuffer* from, std::size_t n) = 0;
    virtual void on_response_data(const char* data, std::size_t n) = 0;
    virtual void on_response_end(const HeaderList& trailers) = 0;
    // One pass over what arrived is done: write what it produced.
    virtual void flush_response() = 0;
    // The attempt failed; the connection is already given up.
    virtual void on_upstream_error(ProxyError error, const char* detail, RetryClass retry) = 0;
    // Where the response body may go by splice(2) (upstream_splice.cpp): the
    // client's stream, or nullptr for the buffered path. `length`: the
    // Content-Length; nullopt for a close-delimited body.
    virtual Stream* response_splice_target(std::optional<std::uint64_t>) { return nullptr; }
    // True when a large response body could go by splice: its head is then
    // read in small steps (kHeadReadSize) so that the body stays in the socket.
    virtual bool response_may_splice() { return false; }
    // Body bytes that reached the client (response) or the backend (request) by splice.
    virtual void on_response_spliced(std::size_t) {}
    virtual void on_request_spliced(std::size_t) {}
  };

  struct Options {
    bool idempotent = false;
    bool head_request = false;      // the response has no body whatever its head says
    bool upgrade = false;           // the request asked to switch protocols
    std::size_t retry_buffer = 0;   // replay copy limit (head and body)
  };

  UpstreamRequest(Events& events, UpstreamPool& pool, Options options);
  ~UpstreamRequest() override;
  UpstreamRequest(const UpstreamRequest&) = delete;
  UpstreamRequest& operator=(const UpstreamRequest&) = delete;

  // --- Request encoder ---
  // The head to send; kept for a replay while it fits in retry_buffer.
  void set_head(std::string head);
  // An empty string to encode a head into: the storage of an earlier
  // request's head on this worker when one is spare (see upstream_request.cpp).
  static std::string spare_head();
  // True when the head and `body` more bytes fit in retry_buffer, so that the
  // whole request could be sent again on a fresh connection.
  bool can_replay(std::uint64_t body) const noexcept {
    return replay_complete_ && replay_.size() <= options_.retry_buffer && body <= options_.retry_buffer - replay_.size();
  }
  // Takes the lease and queues everything held so far (head, and on a retry
  // the body sent before). Nothing is written until flush().
  void attach(std::unique_ptr<UpstreamConnection> conn, bool reused);
  bool attached() const noexcept { return conn_ != nullptr; }
  // Moves `n` body bytes out of `from` (Content-Length framing).
  void send_body(evbuffer* from, std::size_t n);
  void send_body(const char* data, std::size_t n);
  // One decoded chunk of a chunked request body, re-framed.
  void send_chunk(const char* data, std::size_t n);
  // The request is complete; `trailers` ends a chunked body (nullptr otherwise).
  void end_request(const HeaderList* trailers);
  bool request_complete() const noexcept { return request_complete_; }
  // The upstream output is above its high mark even after a write.
  bool congested();
  void flush();

  // --- Request body by splice(2) (upstream_splice.cpp) ---
  struct SpliceStep {
    std::uint64_t taken = 0;  // body bytes read from the client's socket by this call
    bool blocked = false;     // the backend cannot take more: pause the client's reading
    bool fallback = false;    // splice cannot be used: relay through buffers
  };
  // Moves Content-Length body bytes (at most `left`) from the client's socket
  // `from` straight to the backend's once the connection is up. Precondition:
  // no body byte waits in from.input(). The replay copy is given up (the
  // caller splices only bodies larger than retry_buffer).
  SpliceStep splice_body(Stream& from, std::uint64_t left);

  // --- Response decoder ---
  void resume_response();

  // --- Lease ---
  bool reused() const noexcept { return reused_; }
  // Timings of the last attempt (negative: did not happen): seconds to
  // connect a new connection, and when the first response byte arrived.
  double connect_seconds() const noexcept { return connect_seconds_; }
  Clock::time_point first_byte_at() const noexcept { return first_byte_at_; }
  unsigned attempts() const noexcept { return attempts_; }
  std::uint64_t connection_id() const noexcept { return conn_id_; }
  // The reuse verdict: both halves complete, framing exactly consumed, no
  // close token, no surplus bytes either way, no failure.
  bool reusable() const noexcept;
  // Hands the connection back to the pool with the verdict (idempotent).
  void release();
  // After on_switching_protocols: the connection leaves for a tunnel.
  std::unique_ptr<UpstreamConnection> take_connection();

  // UpstreamConnection::Owner
  void on_upstream_readable(UpstreamConnection& conn) override;
  void on_upstream_drained(UpstreamConnection& conn) override;
  void on_upstream_event(UpstreamConnection& conn, short what) override;

 private:
  // Decoded chunks of a chunked response go up as body data.
  struct ChunkRelay final : BodySink {
    UpstreamRequest* self = nullptr;
    HeaderList trailers;
    void on_body_data(const char* data, std::size_t len) override { self->events_.on_response_data(data, len); }
    void on_trailers(HeaderList&& t) override { trailers = std::move(t); }
  };

  void queue(const char* data, std::size_t n);
  // Queues what is held (head, and on a retry the body so far); `last`: the
  // connection's last request, which asks for the close.
  void queue_held(bool last);
  void keep_for_replay(const char* data, std::size_t n);
  void arm_timeouts();
  void process_response();
  bool handle_head();
  bool feed_chunked(Stream& in);
  // n body bytes from the front of the backend's input to the client.
  void forward_body(Stream& in, std::size_t n);
  void complete_response();
  void fail(ProxyError error, const char* detail);
  Phase attempt_phase() const noexcept;
  // splice(2) relays (upstream_splice.cpp).
  void pump_response_splice();
  // Reading the response's head (upstream_splice.cpp): small steps when its
  // body may be spliced; choose_response_splice() once the head is in.
  void read_head();
  void choose_response_splice();
  void continue_request_splice();
  void stop_splicing() noexcept;

  Events& events_;
  UpstreamPool& pool_;
  Options options_;
  std::unique_ptr<UpstreamConnection> conn_;
  std::uint64_t conn_id_ = 0;
  unsigned attempts_ = 0;
  bool reused_ = false;
  double connect_seconds_ = -1;
  Clock::time_point first_byte_at_{};

  // Request
  std::string replay_;               // head and body so far, while it fits
  bool replay_complete_ = true;
  bool request_complete_ = false;
  std::uint64_t queued_ = 0;         // bytes added to this connection's output

  // Response (reset by attach)
  std::unique_ptr<HttpParser> parser_;  // from HttpParser::take, given back when this ends
  ChunkRelay relay_;
  BodyMode mode_ = BodyMode::none;
  std::uint64_t remaining_ = 0;
  bool head_seen_ = false;           // the final head arrived
  bool bytes_seen_ = false;          // any response byte arrived
  bool response_complete_ = false;
  bool backend_close_ = false;       // close token, or close-delimited body
  bool paused_ = false;              // reading stopped for the client's backpressure
  bool failed_ = false;
  unsigned interim_ = 0;             // 1xx answers so far (bounded: see handle_head)

  // splice(2) relays; each exists only while its body moves, and both end
  // before the connection leaves (stop_splicing).
  Stream* splice_to_ = nullptr;      // the client's stream when the response body may be spliced
  std::unique_ptr<SplicePump> response_splice_;
  std::unique_ptr<SplicePump> request_splice_;
};

}  // namespace holdfast
