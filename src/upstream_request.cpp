#include "holdfast/upstream_request.hpp"

#include <errno.h>
#include <string.h>

#include <cstdio>
#include <vector>

#include "holdfast/client_connection.hpp"
#include "holdfast/http1_encode.hpp"
#include "holdfast/loop_clock.hpp"
#include "holdfast/spare_stack.hpp"
#include "holdfast/upstream_pool.hpp"

namespace holdfast {

namespace {
// More than this many 1xx answers before the final one is a broken backend.
constexpr unsigned kMaxInterim = 16;

// The head (and the body kept for a replay) is one string per request. Its
// storage outlives the request in a per-thread stash (workers share
// nothing), so that the next head on this worker is written there instead of
// costing a malloc and a free. Storage larger than kKeptHeadBytes (a replay
// copy of a body) is freed. Under AddressSanitizer nothing is kept
// (kKeepSpares), so that a use after free is still caught.
constexpr std::size_t kKeepHeads = kKeepSpares ? 32 : 0;
constexpr std::size_t kKeptHeadBytes = 16 * 1024;

// Set when the thread's stash is gone (the thread is ending): requests
// destroyed after that free their storage. Trivially destructible, so
// readable then.
thread_local bool t_heads_gone = false;

struct SpareHeads {
  std::vector<std::string> held;
  SpareHeads() { held.reserve(kKeepHeads); }  // giving back never allocates
  ~SpareHeads() { t_heads_gone = true; }
};

SpareHeads* spare_heads() noexcept {
  if (kKeepHeads == 0 || t_heads_gone) return nullptr;
  thread_local SpareHeads heads;
  return &heads;
}

void keep_spare_head(std::string& s) noexcept {
  SpareHeads* heads = spare_heads();
  // A string without storage of its own (short, or given up) is not worth keeping.
  if (!heads || heads->held.size() >= kKeepHeads || s.capacity() < 64 || s.capacity() > kKeptHeadBytes) return;
  s.clear();
  heads->held.push_back(std::move(s));
}
}  // namespace

std::string UpstreamRequest::spare_head() {
  SpareHeads* heads = spare_heads();
  if (!heads || heads->held.empty()) return {};
  std::string s = std::move(heads->held.back());
  heads->held.pop_back();
  return s;
}

UpstreamRequest::UpstreamRequest(Events& events, UpstreamPool& pool, Options options)
    : events_(events), pool_(pool), options_(options), parser_(HttpParser::take(HttpParser::Kind::response, 64 * 1024)) {
  relay_.self = this;
}

UpstreamRequest::~UpstreamRequest() {
  release();
  HttpParser::give_back(std::move(parser_));
  keep_spare_head(replay_);
}

void UpstreamRequest::set_head(std::string head) { replay_ = std::move(head); }

void UpstreamRequest::attach(std::unique_ptr<UpstreamConnection> conn, bool reused) {
  stop_splicing();
  conn_ = std::move(conn);
  conn_->set_owner(this);
  conn_id_ = conn_->id;
  reused_ = reused;
  // A new attempt reads a new response; the first one's parser is as the
  // constructor made it.
  if (attempts_ > 0) parser_->reset();
  ++attempts_;
  conn_->requests++;
  if (conn_->requests_left && *conn_->requests_left > 0) --*conn_->requests_left;
  relay_.trailers.clear();
  mode_ = BodyMode::none;
  remaining_ = 0;
  head_seen_ = bytes_seen_ = response_complete_ = backend_close_ = paused_ = failed_ = false;
  interim_ = 0;
  connect_seconds_ = -1;
  first_byte_at_ = {};
  queued_ = 0;
  queue_held(pool_.last_request(*conn_));
  // The head is always sent; it is kept for a replay only while it fits.
  if (attempts_ == 1 && replay_.size() > options_.retry_buffer) {
    replay_complete_ = false;
    std::string().swap(replay_);
  }
  read_head();
  arm_timeouts();
}

void UpstreamRequest::queue_held(bool last) {
  // The last request a connection may carry says so: the backend then closes
  // after answering rather than keeping a connection nobody will reuse.
  static constexpr std::string_view ask = "\r\nConnection: keep-alive\r\n";
  std::string_view held = replay_;
  auto at = last ? held.find(ask) : std::string_view::npos;
  if (at == std::string_view::npos || at > held.find("\r\n\r\n")) {
    queue(held.data(), held.size());
    return;
  }
  static constexpr std::string_view close = "\r\nConnection: close\r\n";
  queue(held.data(), at);
  queue(close.data(), close.size());
  held.remove_prefix(at + ask.size());
  queue(held.data(), held.size());
}

void UpstreamRequest::queue(const char* data, std::size_t n) {
  conn_->stream().add_output(data, n);
  queued_ += n;
}

void UpstreamRequest::keep_for_replay(const char* data, std::size_t n) {
  if (!replay_complete_) return;
  if (replay_.size() + n > options_.retry_buffer) {
    replay_complete_ = false;
    std::string().swap(replay_);
    return;
  }
  replay_.append(data, n);
}

void UpstreamRequest::send_body(const char* data, std::size_t n) {
  keep_for_replay(data, n);
  queue(data, n);
}

void UpstreamRequest::send_body(evbuffer* from, std::size_t n) {
  if (replay_complete_) {
    if (replay_.size() + n > options_.retry_buffer) {
      replay_complete_ = false;
      std::string().swap(replay_);
    } else {
      std::size_t old = replay_.size();
      replay_.resize(old + n);
      evbuffer_copyout(from, replay_.data() + old, n);
    }
  }
  evbuffer_remove_buffer(from, conn_->output(), n);
  queued_ += n;
}

void UpstreamRequest::send_chunk(const char* data, std::size_t n) {
  if (n == 0) return;
  char frame[24];
  auto len = static_cast<std::size_t>(std::snprintf(frame, sizeof frame, "%zx\r\n", n));
  queue(frame, len);
  queue(data, n);
  queue("\r\n", 2);
  keep_for_replay(frame, len);
  keep_for_replay(data, n);
  keep_for_replay("\r\n", 2);
}

void UpstreamRequest::end_request(const HeaderList* trailers) {
  if (trailers) {
    // The replay copy ends exactly as the original did, trailers included.
    std::string last;
    append_last_chunk(last, *trailers);
    if (conn_) queue(last.data(), last.size());
    keep_for_replay(last.data(), last.size());
  }
  request_complete_ = true;
  if (conn_) arm_timeouts();
}

bool UpstreamRequest::congested() {
  if (!conn_) return true;
  if (conn_->stream().output_length() < kHighWater) return false;
  conn_->stream().flush();
  return conn_ && conn_->stream().output_length() >= kHighWater;
}

void UpstreamRequest::flush() {
  if (!conn_) return;
  conn_->stream().flush();
  // The last request byte just went out: the wait for the answer starts.
  if (conn_ && request_complete_ && !head_seen_ && conn_->connected() && conn_->stream().output_length() == 0)
    arm_timeouts();
}

void UpstreamRequest::arm_timeouts() {
  const auto& cfg = pool_.config();
  auto& s = conn_->stream();
  if (!conn_->connected()) {
    s.set_read_timeout(std::nullopt);
    s.set_write_timeout(cfg.connect_timeout);
    return;
  }
  // The read timeout starts once the whole request has been written (or an
  // early answer began): a slow upload is governed by the client's
  // body_timeout and the send timeout, not by the backend's silence.
  bool waiting = head_seen_ || (request_complete_ && s.output_length() == 0 && !request_splice_);
  s.set_read_timeout(waiting ? std::optional<Millis>(cfg.read_timeout) : std::nullopt);
  s.set_write_timeout(cfg.send_timeout);
}

bool UpstreamRequest::reusable() const noexcept {
  return conn_ && !failed_ && response_complete_ && request_complete_ && !backend_close_ &&
         mode_ != BodyMode::until_close && conn_->stream().input_length() == 0 &&
         conn_->stream().output_length() == 0 && !request_splice_ && !response_splice_;
}

void UpstreamRequest::release() {
  if (!conn_) return;
  bool verdict = reusable();
  stop_splicing();
  conn_->set_owner(nullptr);
  pool_.release(std::move(conn_), verdict);
}

std::unique_ptr<UpstreamConnection> UpstreamRequest::take_connection() {
  if (conn_) conn_->set_owner(nullptr);
  response_complete_ = true;
  return std::move(conn_);
}

void UpstreamRequest::resume_response() {
  if (!conn_ || !paused_) return;
  paused_ = false;
  conn_->stream().enable_read();
  process_response();
}

void UpstreamRequest::on_upstream_readable(UpstreamConnection& conn) {
  if (!bytes_seen_ && conn.stream().input_length() > 0) {
    bytes_seen_ = true;
    first_byte_at_ = LoopClock::now();
  }
  process_response();
}

void UpstreamRequest::process_response() {
  // Whatever this pass produced for the client is written before returning:
  // one write per pass, not one per chunk.
  struct FlushOnExit {
    Events& events;
    ~FlushOnExit() { events.flush_response(); }
  } flush_on_exit{events_};
  while (conn_ && !response_complete_ && !failed_) {
    Stream& in = conn_->stream();
    std::size_t avail = in.input_length();
    if (avail == 0) {
      if (head_seen_) pump_response_splice();  // the rest of the body, once the buffered part is out
      return;
    }
    if (head_seen_ && events_.response_congested()) {
      if (!paused_) {
        in.disable_read();
        paused_ = true;
      }
      return;
    }
    if (!head_seen_) {
      const std::string_view front = in.input_front();
      if (front.empty()) return;
      auto r = parser_->feed(front.data(), front.size());
      in.drain_input(r.consumed);
      if (r.event == HttpParser::Event::error) {
        fail(ProxyError::bad_response, parser_->error_reason());
        return;
      }
      if (r.event == HttpParser::Event::head_complete && !handle_head()) return;
      continue;
    }
    switch (mode_) {
      case BodyMode::none:
        return;  // surplus bytes after a bodiless response: the verdict refuses reuse
      case BodyMode::length: {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(avail, remaining_));
        if (n == 0) return;
        remaining_ -= n;
        forward_body(in, n);
        if (remaining_ == 0) complete_response();
        break;
      }
      case BodyMode::chunked:
        if (!feed_chunked(in)) return;
        break;
      case BodyMode::until_close:
        forward_body(in, avail);
        break;
    }
  }
}

void UpstreamRequest::forward_body(Stream& in, std::size_t n) {
  // Bytes in the read area leave the input before the client side sees
  // them, so that the input's length is right for whatever it does.
  if (const char* data = in.take_flat_input(n)) events_.on_response_data(data, n);
  else events_.on_response_data(in.input(), n);
}

bool UpstreamRequest::feed_chunked(Stream& in) {
  const std::string_view front = in.input_front();
  if (front.empty()) return false;
  auto r = parser_->feed(front.data(), front.size());
  in.drain_input(r.consumed);
  if (r.event == HttpParser::Event::error) {
    fail(parser_->failure() == HttpParser::Failure::head_too_large ? ProxyError::bad_response
                                                                   : ProxyError::closed_mid_response,
         parser_->error_reason());
    return false;
  }
  if (r.event == HttpParser::Event::message_complete) {
    complete_response();
    return false;
  }
  return r.consumed > 0;
}

bool UpstreamRequest::handle_head() {
  conn_->stream().set_input_limit(Stream::kDefaultInputLimit);  // the body's reads are full-size again
  auto& h = parser_->head();
  // RFC 9110 15: a status outside 100..599 is not HTTP; nothing of it reaches the client.
  if (h.status < 100 || h.status > 599) {
    fail(ProxyError::bad_response, "status code outside 100..599");
    return false;
  }
  if (h.status < 200) {
    if (h.status == 101) {
      // Upgrade is stripped from any request not allowed to switch, so a
      // switch holdfast never asked for is a broken answer.
      if (!options_.upgrade || !find_header(h.headers, "upgrade")) {
        fail(ProxyError::bad_response, "101 Switching Protocols without an upgrade");
        return false;
      }
      head_seen_ = true;
      events_.on_switching_protocols(h);
      return false;
    }
    // Interim answers are relayed without backpressure (they come before the
    // head that the client's pace governs), so their number is bounded.
    if (++interim_ > kMaxInterim) {
      fail(ProxyError::bad_response, "too many 1xx interim responses");
      return false;
    }
    events_.on_interim_response(h);
    parser_->reset();
    if (!conn_) return false;
    read_head();  // the final head is read in small steps again
    return true;
  }
  const bool bodiless = options_.head_request || h.status == 204 || h.status == 304;
  if (bodiless) mode_ = BodyMode::none;
  else if (h.chunked) mode_ = BodyMode::chunked;
  else if (h.has_transfer_encoding) mode_ = BodyMode::until_close;
  else if (h.has_content_length) mode_ = BodyMode::length;
  else mode_ = BodyMode::until_close;
  remaining_ = h.content_length;
  if (bodiless) {
    // llhttp reads a response without a length as close-delimited, not
    // knowing the request was HEAD; the connection's fate is the fields'.
    backend_close_ = connection_has_token(h.headers, "close") ||
                     (!is_http11(h) && !connection_has_token(h.headers, "keep-alive"));
  } else {
    backend_close_ = !h.keep_alive || mode_ == BodyMode::until_close;
  }
  if (!backend_close_) {
    auto hint = parse_keep_alive(h.headers);
    if (hint.timeout || hint.max) pool_.learn(*conn_, hint);
  }
  head_seen_ = true;
  // An early answer (request still arriving) is read under read_timeout too.
  if (!request_complete_) arm_timeouts();
  events_.on_response_head(h, mode_);
  if (!conn_ || failed_) return false;
  choose_response_splice();
  // Only a chunked body goes through the parser; the head is done with.
  if (mode_ == BodyMode::chunked) parser_->resume_chunked_body(&relay_);
  else parser_->reset();
  if (mode_ == BodyMode::none || (mode_ == BodyMode::length && remaining_ == 0)) {
    complete_response();
    return false;
  }
  return true;
}

void UpstreamRequest::complete_response() {
  response_complete_ = true;
  events_.on_response_end(relay_.trailers);
}

Phase UpstreamRequest::attempt_phase() const noexcept {
  if (head_seen_) return Phase::streaming;
  if (conn_ && !conn_->connected()) return Phase::connecting;
  return request_complete_ ? Phase::awaiting_head : Phase::sending;
}

void UpstreamRequest::fail(ProxyError error, const char* detail) {
  if (failed_ || !conn_) return;
  AttemptFacts facts;
  facts.phase = attempt_phase();
  facts.error = error;
  facts.reused = reused_;
  std::size_t unsent = conn_->stream().output_length();
  facts.bytes_accepted = queued_ > unsent ? queued_ - unsent : 0;
  facts.response_bytes_seen = bytes_seen_;
  facts.idempotent = options_.idempotent;
  facts.replay_complete = replay_complete_;
  failed_ = true;
  stop_splicing();
  if (reused_ && !bytes_seen_ && (error == ProxyError::closed_before_response || error == ProxyError::send_failed))
    pool_.learn_from_race(*conn_);
  // The connection is given up before anyone hears of the failure: a retry
  // must never find it again.
  conn_->set_owner(nullptr);
  pool_.release(std::move(conn_), false);
  events_.on_upstream_error(error, detail, classify_retry(facts));
}

void UpstreamRequest::on_upstream_event(UpstreamConnection& conn, short what) {
  if (what & Stream::connected) {
    connect_seconds_ = std::chrono::duration<double>(LoopClock::now() - conn.created).count();
    arm_timeouts();
    events_.on_upstream_connected();
    return;
  }
  if (!conn.connected()) {
    if (what & Stream::timeout) {
      fail(ProxyError::connect_timeout, nullptr);
    } else {
      int e = conn.stream().last_error();
      fail(e == ECONNREFUSED ? ProxyError::connect_refused : ProxyError::connect_failed, strerror(e));
    }
    return;
  }
  if (what & Stream::timeout) {
    fail((what & Stream::reading) ? ProxyError::read_timeout : ProxyError::send_timeout, nullptr);
    return;
  }
  if (what & Stream::eof) {
    process_response();
    if (!conn_ || failed_ || response_complete_) return;
    if (head_seen_ && mode_ == BodyMode::until_close) {
      complete_response();
      return;
    }
  }
  const char* detail = (what & Stream::error) ? strerror(conn.stream().last_error()) : "end of stream";
  if (head_seen_) fail(ProxyError::closed_mid_response, detail);
  else if (bytes_seen_) fail(ProxyError::bad_response, "closed inside the response head");
  else if ((what & Stream::writing) && (what & Stream::error)) fail(ProxyError::send_failed, detail);
  else fail(ProxyError::closed_before_response, detail);
}

}  // namespace holdfast
