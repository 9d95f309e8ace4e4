#include "holdfast/exchange.hpp"

#include <errno.h>
#include <spdlog/spdlog.h>
#include <string.h>

#include <cstdio>

#include "holdfast/client_connection.hpp"
#include "holdfast/upstream_pool.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

namespace {

bool is_idempotent(const MessageHead& h) {
  static constexpr std::string_view methods[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
  for (auto m : methods)
    if (h.method == m) return true;
  return find_header(h.headers, "idempotency-key") != nullptr;
}

bool is_http11(const MessageHead& h) { return h.version_major > 1 || (h.version_major == 1 && h.version_minor >= 1); }

void append_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

// End-to-end fields of `headers`, minus hop-by-hop ones and minus the names
// in `skip` (fields holdfast writes itself).
void append_end_to_end(std::string& out, const HeaderList& headers, std::initializer_list<std::string_view> skip) {
  auto tokens = connection_tokens(headers);
  for (const auto& h : headers) {
    // A Connection token may not strip Host: routing used it, and the
    // backend must see it.
    if (is_hop_by_hop(h.name, tokens) && !iequals(h.name, "host")) continue;
    bool skipped = false;
    for (auto s : skip)
      if (iequals(h.name, s)) {
        skipped = true;
        break;
      }
    if (!skipped) append_field(out, h.name, h.value);
  }
}

void write_chunk_header(evbuffer* out, std::size_t len) {
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%zx\r\n", len);
  evbuffer_add(out, buf, static_cast<std::size_t>(n));
}

void write_last_chunk(evbuffer* out, const HeaderList& trailers) {
  std::string end = "0\r\n";
  append_end_to_end(end, trailers, {"content-length"});
  end += "\r\n";
  evbuffer_add(out, end.data(), end.size());
}

}  // namespace

void Exchange::ChunkedRelay::on_body_data(const char* data, std::size_t len) {
  if (len == 0) return;
  if (rechunk) write_chunk_header(out, len);
  evbuffer_add(out, data, len);
  if (rechunk) evbuffer_add(out, "\r\n", 2);
  if (copy && *copy_ok) {
    if (copy->size() + len + 16 > copy_limit) {
      *copy_ok = false;
      std::string().swap(*copy);
    } else {
      char buf[24];
      int n = std::snprintf(buf, sizeof buf, "%zx\r\n", len);
      copy->append(buf, static_cast<std::size_t>(n));
      copy->append(data, len);
      copy->append("\r\n");
    }
  }
}

Exchange::Exchange(ClientConnection& client, MessageHead&& request, std::size_t group)
    : client_(client),
      worker_(client.worker()),
      pool_(client.worker().pool(group)),
      request_(std::move(request)),
      group_(group),
      started_(std::chrono::steady_clock::now()),
      response_parser_(HttpParser::Kind::response, 64 * 1024) {}

Exchange::~Exchange() {
  if (upstream_) pool_.release(std::move(upstream_), false);
  if (pending_) evbuffer_free(pending_);
}

void Exchange::start() {
  bytes_in_ = client_.parser().head_bytes();
  idempotent_ = is_idempotent(request_);
  if (const auto* e = find_header(request_.headers, "expect")) expect_continue_ = iequals(*e, "100-continue");
  if (request_.chunked) {
    request_body_ = BodyMode::chunked;
    client_.parser().resume_chunked_body(&request_relay_);
  } else {
    request_body_ = request_.has_content_length ? BodyMode::length : BodyMode::none;
    request_remaining_ = request_.content_length;
    client_.parser().reset();  // the body, if any, is moved without the parser
  }
  build_upstream_head();
  if (request_body_ == BodyMode::chunked) {
    // Buffer the start of a chunked body before contacting the backend, so
    // that a malformed small body is refused without a byte going upstream.
    pending_ = evbuffer_new();
    evbuffer_add(pending_, replay_.data(), replay_.size());
    request_relay_.copy = &replay_;
    request_relay_.copy_ok = &replay_complete_;
    request_relay_.copy_limit = pool_.config().retry_buffer;
    if (expect_continue_) {
      // The client waits for 100 Continue before sending the body: holding
      // the head back until body bytes arrive would stall both sides.
      upstream_started_ = true;
      connect_upstream();
      if (finished_) return;
    }
    pump_request();
    return;
  }
  if (request_body_ == BodyMode::none || request_remaining_ == 0) {
    // No body: the request is complete before it is sent, so the upstream
    // timers are armed once, at attach.
    request_done_ = true;
    client_.on_request_complete();
  }
  upstream_started_ = true;
  connect_upstream();
  if (finished_ || request_done_) return;
  pump_request();
}

void Exchange::build_upstream_head() {
  const auto& h = request_;
  std::string& out = replay_;
  out.reserve(256 + h.target.size() + h.headers.size() * 48);
  out.append(h.method);
  out.push_back(' ');
  out.append(h.target);
  out.append(" HTTP/1.1\r\n");
  append_end_to_end(out, h.headers, {"content-length", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"});

  const std::string* host = find_header(h.headers, "host");
  if (!host) append_field(out, "Host", pool_.address(0).text);
  // X-Forwarded-For: the chain so far, then the address holdfast saw.
  std::string xff;
  for (const auto& f : h.headers)
    if (iequals(f.name, "x-forwarded-for") && !f.value.empty()) {
      if (!xff.empty()) xff += ", ";
      xff += f.value;
    }
  if (!xff.empty()) xff += ", ";
  xff += client_.peer_ip();
  append_field(out, "X-Forwarded-For", xff);
  append_field(out, "X-Forwarded-Proto", "http");
  if (host) append_field(out, "X-Forwarded-Host", *host);
  append_field(out, "Via", "1.1 holdfast");
  if (request_.chunked) append_field(out, "Transfer-Encoding", chunked_coding_list(h.headers));
  else if (request_.has_content_length) append_field(out, "Content-Length", std::to_string(request_.content_length));
  out.append("\r\n");
  if (out.size() > pool_.config().retry_buffer) replay_complete_ = false;  // still sent; just not kept
}

void Exchange::connect_upstream() {
  server_ = worker_.balancer(group_).pick();
  if (auto conn = pool_.acquire(server_, idempotent_)) {
    attach(std::move(conn), true, false);
    return;
  }
  int err = 0;
  auto conn = pool_.open(server_, err);
  if (!conn) {
    fail(err == ECONNREFUSED ? ProxyError::connect_refused : ProxyError::connect_failed, strerror(err));
    return;
  }
  attach(std::move(conn), false, false);
}

void Exchange::attach(std::unique_ptr<UpstreamConnection> conn, bool reused, bool replay) {
  upstream_ = std::move(conn);
  reused_ = reused;
  upstream_->set_owner(this);
  upstream_->requests++;
  if (upstream_->requests_left && *upstream_->requests_left > 0) --*upstream_->requests_left;
  evbuffer* out = upstream_->output();
  queued_up_ = 0;
  if (replay) {
    evbuffer_add(out, replay_.data(), replay_.size());
    queued_up_ = replay_.size();
  } else if (pending_) {
    queued_up_ = evbuffer_get_length(pending_);
    evbuffer_add_buffer(out, pending_);
    evbuffer_free(pending_);
    pending_ = nullptr;
  } else {
    evbuffer_add(out, replay_.data(), replay_.size());
    queued_up_ = replay_.size();
  }
  upstream_read_paused_ = false;
  upstream_->stream().enable_read();
  arm_upstream_timeouts();
  upstream_->stream().flush();
  // A client paused on the old connection's full output hears no drain edge
  // from this one if the first write already emptied it.
  if (!request_done_ && upstream_->stream().output_length() <= kLowWater) client_.resume_reading();
}

void Exchange::arm_upstream_timeouts() {
  const auto& cfg = pool_.config();
  auto& s = upstream_->stream();
  if (!upstream_->connected()) {
    s.set_read_timeout(std::nullopt);
    s.set_write_timeout(cfg.connect_timeout);
    return;
  }
  // The read timeout starts once the whole request is out: a slow upload is
  // governed by the client's body_timeout, not by the backend's silence.
  s.set_read_timeout(request_done_ ? std::optional<Millis>(cfg.read_timeout) : std::nullopt);
  s.set_write_timeout(cfg.send_timeout);
}

evbuffer* Exchange::request_sink() const { return upstream_ ? upstream_->output() : pending_; }

void Exchange::pump_request() {
  while (!request_done_ && !finished_) {
    evbuffer* in = client_.input();
    evbuffer* sink = request_sink();
    if (!sink) return;  // between connections (retry in progress)
    if (evbuffer_get_length(sink) >= kHighWater) {
      if (!upstream_started_) {
        // Enough of the body is held: contact the backend now rather than
        // pause the client with nobody to resume it.
        upstream_started_ = true;
        connect_upstream();
        continue;
      }
      if (upstream_) upstream_->stream().flush();
      if (evbuffer_get_length(sink) >= kHighWater) {
        client_.pause_reading();
        break;
      }
    }
    std::size_t avail = evbuffer_get_length(in);
    if (avail == 0) break;
    std::size_t before = evbuffer_get_length(sink);
    if (request_body_ == BodyMode::length) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(avail, request_remaining_));
      if (replay_complete_) {
        if (replay_.size() + n > pool_.config().retry_buffer) {
          replay_complete_ = false;
          std::string().swap(replay_);
        } else {
          std::size_t old = replay_.size();
          replay_.resize(old + n);
          evbuffer_copyout(in, replay_.data() + old, n);
        }
      }
      evbuffer_remove_buffer(in, sink, n);
      request_remaining_ -= n;
      bytes_in_ += n;
      if (upstream_) queued_up_ += evbuffer_get_length(sink) - before;
      if (request_remaining_ == 0) request_body_done();
    } else {
      request_relay_.out = sink;
      bool done = false, bad = false;
      std::size_t consumed = feed_chunked(client_.parser(), in, request_relay_, done, bad);
      bytes_in_ += consumed;
      if (upstream_) queued_up_ += evbuffer_get_length(sink) - before;
      if (bad) {
        fail(ProxyError::bad_request, client_.parser().error_reason());
        return;
      }
      if (done) {
        std::size_t b2 = evbuffer_get_length(sink);
        write_last_chunk(sink, request_relay_.trailers);
        if (replay_complete_) replay_ += "0\r\n\r\n";
        if (upstream_) queued_up_ += evbuffer_get_length(sink) - b2;
        request_body_done();
      } else if (consumed == 0) {
        break;
      }
    }
  }
  if (!finished_ && !upstream_started_ && pending_ &&
      (request_done_ || evbuffer_get_length(pending_) >= kLowWater)) {
    upstream_started_ = true;
    connect_upstream();
  }
  if (upstream_) upstream_->stream().flush();
}

std::size_t Exchange::feed_chunked(HttpParser& parser, evbuffer* from, ChunkedRelay& relay, bool& done, bool& bad) {
  std::size_t total = 0;
  while (evbuffer_get_length(from) > 0) {
    if (evbuffer_get_length(relay.out) >= kHighWater) break;
    evbuffer_iovec v;
    if (evbuffer_peek(from, -1, nullptr, &v, 1) < 1) break;
    auto r = parser.feed(static_cast<const char*>(v.iov_base), v.iov_len);
    evbuffer_drain(from, r.consumed);
    total += r.consumed;
    if (r.event == HttpParser::Event::error) {
      bad = true;
      break;
    }
    if (r.event == HttpParser::Event::message_complete) {
      done = true;
      break;
    }
  }
  return total;
}

void Exchange::request_body_done() {
  request_done_ = true;
  client_.parser().reset();
  client_.on_request_complete();
  if (!upstream_started_) {
    upstream_started_ = true;
    connect_upstream();
    return;
  }
  if (upstream_) arm_upstream_timeouts();
}

void Exchange::on_upstream_readable(UpstreamConnection& conn) {
  if (times_.first_byte < 0 && evbuffer_get_length(conn.input()) > 0) times_.first_byte = seconds_since(started_);  // metrics: time to first byte
  if (evbuffer_get_length(conn.input()) > 0) upstream_bytes_seen_ = true;
  process_response();
}

void Exchange::process_response() {
  // Whatever this pass produced for the client is written before returning.
  struct FlushClient {
    ClientConnection& client;
    ~FlushClient() { client.flush(); }
  } flush_on_exit{client_};
  while (!finished_ && upstream_) {
    evbuffer* in = upstream_->input();
    evbuffer* out = client_.output();
    if (evbuffer_get_length(out) >= kHighWater) {
      client_.flush();
      if (evbuffer_get_length(out) >= kHighWater) {
        if (!upstream_read_paused_) {
          upstream_->stream().disable_read();
          upstream_read_paused_ = true;
        }
        return;
      }
    }
    std::size_t avail = evbuffer_get_length(in);
    if (!response_started_) {
      if (avail == 0) return;
      evbuffer_iovec v;
      if (evbuffer_peek(in, -1, nullptr, &v, 1) < 1) return;
      auto r = response_parser_.feed(static_cast<const char*>(v.iov_base), v.iov_len);
      evbuffer_drain(in, r.consumed);
      if (r.event == HttpParser::Event::error) {
        fail(ProxyError::bad_response, response_parser_.error_reason());
        return;
      }
      if (r.event == HttpParser::Event::head_complete && !handle_response_head()) return;
      continue;
    }
    switch (response_body_) {
      case BodyMode::none:
        return;
      case BodyMode::length: {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(avail, response_remaining_));
        if (n == 0) return;
        evbuffer_remove_buffer(in, out, n);
        response_remaining_ -= n;
        bytes_out_ += n;
        if (response_remaining_ == 0) {
          response_done();
          return;
        }
        break;
      }
      case BodyMode::chunked: {
        bool done = false, bad = false;
        std::size_t before = evbuffer_get_length(out);
        std::size_t consumed = feed_chunked(response_parser_, in, response_relay_, done, bad);
        bytes_out_ += evbuffer_get_length(out) - before;
        if (bad) {
          fail(ProxyError::closed_mid_response, response_parser_.error_reason());
          return;
        }
        if (done) {
          response_done();
          return;
        }
        if (consumed == 0) return;
        break;
      }
      case BodyMode::until_close: {
        if (avail == 0) return;
        if (client_chunked_) write_chunk_header(out, avail);
        evbuffer_remove_buffer(in, out, avail);
        if (client_chunked_) evbuffer_add(out, "\r\n", 2);
        bytes_out_ += avail;
        break;
      }
    }
  }
}

bool Exchange::handle_response_head() {
  auto& h = response_parser_.head();
  const bool client11 = is_http11(request_);
  if (h.status < 200) {
    if (h.status == 101) {
      // holdfast strips Upgrade, so a switch it never asked for is a broken answer.
      fail(ProxyError::bad_response, "101 Switching Protocols without an upgrade");
      return false;
    }
    if (client11 && (h.status != 100 || expect_continue_)) {
      std::string interim = "HTTP/1.1 " + std::to_string(h.status) + " " + h.reason + "\r\n";
      append_end_to_end(interim, h.headers, {});
      interim += "\r\n";
      evbuffer_add(client_.output(), interim.data(), interim.size());
      bytes_out_ += interim.size();
    }
    response_parser_.reset();
    return true;
  }
  status_ = h.status;
  bool no_body = request_.method == "HEAD" || h.status == 204 || h.status == 304;
  if (no_body) response_body_ = BodyMode::none;
  else if (h.chunked) response_body_ = BodyMode::chunked;
  else if (h.has_transfer_encoding) response_body_ = BodyMode::until_close;
  else if (h.has_content_length) response_body_ = BodyMode::length;
  else response_body_ = BodyMode::until_close;
  response_remaining_ = h.content_length;

  const bool unknown_length = response_body_ == BodyMode::chunked || response_body_ == BodyMode::until_close;
  client_chunked_ = unknown_length && client11;
  backend_close_ = !h.keep_alive || response_body_ == BodyMode::until_close;
  if (!backend_close_) {
    auto hint = parse_keep_alive(h.headers);
    if (hint.timeout || hint.max) pool_.learn(*upstream_, hint);
  }

  std::string head;
  head.reserve(256 + h.headers.size() * 48);
  head += "HTTP/1.1 ";
  head += std::to_string(h.status);
  head += ' ';
  head += h.reason;
  head += "\r\n";
  if (response_body_ == BodyMode::none) append_end_to_end(head, h.headers, {});
  else append_end_to_end(head, h.headers, {"content-length"});
  append_field(head, "Via", "1.1 holdfast");
  if (response_body_ == BodyMode::length) append_field(head, "Content-Length", std::to_string(h.content_length));
  else if (client_chunked_) append_field(head, "Transfer-Encoding", chunked_coding_list(h.headers));
  // The client connection closes after this response when its framing needs
  // the close, or when the rest of the request body may still be arriving.
  head += client_.response_policy((unknown_length && !client11) || !request_done_);
  head += "\r\n";
  evbuffer_add(client_.output(), head.data(), head.size());
  bytes_out_ += head.size();
  response_started_ = true;

  if (response_body_ == BodyMode::chunked) {
    response_relay_.out = client_.output();
    response_relay_.rechunk = client11;
    response_parser_.resume_chunked_body(&response_relay_);
  } else {
    response_parser_.reset();
  }
  if (response_body_ == BodyMode::none || (response_body_ == BodyMode::length && response_remaining_ == 0)) {
    response_done();
    return false;
  }
  return true;
}

void Exchange::response_done() {
  response_done_ = true;
  if (client_chunked_) {
    std::size_t before = evbuffer_get_length(client_.output());
    write_last_chunk(client_.output(), response_relay_.trailers);
    bytes_out_ += evbuffer_get_length(client_.output()) - before;
  }
  client_.flush();
  // Reuse is earned only at the exact end of a message: both halves complete,
  // nothing left over, no close token, no upgrade.
  bool reusable = upstream_ && !backend_close_ && request_done_ && response_body_ != BodyMode::until_close &&
                  evbuffer_get_length(upstream_->input()) == 0 && evbuffer_get_length(upstream_->output()) == 0 &&
                  !request_.upgrade;
  finish_upstream(reusable);
  finished_ = true;
  write_access_log(status_);
  client_.on_exchange_finished();
}

void Exchange::finish_upstream(bool reusable) {
  if (!upstream_) return;
  upstream_->set_owner(nullptr);
  pool_.release(std::move(upstream_), reusable);
}

bool Exchange::try_retry(ProxyError error) {
  // Only a failure on a reused connection before any response byte can be
  // the keep-alive race; a fresh connection that fails is the backend's answer.
  if (retried_ || !reused_ || upstream_bytes_seen_ || response_started_) return false;
  if (error != ProxyError::closed_before_response && error != ProxyError::send_failed) return false;
  std::size_t unsent = evbuffer_get_length(upstream_->output());
  bool nothing_written = unsent >= queued_up_;
  if (!(idempotent_ || nothing_written) || !replay_complete_) {
    worker_.stats().add(pool_.slot(server_), Counter::retries_refused);  // metrics: refused retry, per server
    return false;
  }
  retried_ = true;
  worker_.stats().add(pool_.slot(server_), error == ProxyError::send_failed ? Counter::retries_send_failed : Counter::retries_closed);  // metrics: retry by reason
  spdlog::info("conn {} upstream {} ({}): {} on a reused connection before any response; sending again on a new connection",
               client_.id(), upstream_->id, pool_.address(server_).text, describe(error).text);
  finish_upstream(false);
  int err = 0;
  auto conn = pool_.open(server_, err);
  if (!conn) return false;
  attach(std::move(conn), false, true);
  return true;
}

void Exchange::fail(ProxyError error, const char* detail) {
  if (finished_) return;
  auto info = describe(error);
  if (upstream_ && try_retry(error)) return;
  if (upstream_started_) pool_.note_failure(server_, error);  // metrics: connect failures by reason, server state
  if (info.side == ErrorSide::upstream) {
    worker_.stats().add(Counter::upstream_errors);
    spdlog::warn("conn {} upstream {} ({}): {}{}{}", client_.id(), upstream_ ? upstream_->id : 0,
                 pool_.address(server_).text, info.text, detail ? ": " : "", detail ? detail : "");
  } else {
    spdlog::info("conn {} {}: {}{}{}", client_.id(), client_.peer(), info.text, detail ? ": " : "", detail ? detail : "");
  }
  finish_upstream(false);
  finished_ = true;
  if (!response_started_ && info.status != 0) {
    status_ = info.status;
    // A request whose body was not read to its end leaves the framing in doubt.
    auto page = error_response(info.status, info.text, client_.response_policy(!request_done_),
                               request_.method == "HEAD");
    evbuffer_add(client_.output(), page.data(), page.size());
    client_.flush();
    bytes_out_ += page.size();
    response_started_ = true;
    write_access_log(status_);
    client_.on_exchange_finished();
  } else {
    write_access_log(status_);
    client_.abort();
  }
}

void Exchange::on_upstream_drained(UpstreamConnection&) {
  if (!request_done_) client_.resume_reading();
}

void Exchange::on_upstream_event(UpstreamConnection& conn, short what) {
  if (what & Stream::connected) {
    times_.connect = seconds_since(conn.created);  // metrics: upstream connect time
    arm_upstream_timeouts();
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
    if (finished_ || !upstream_) return;
    if (response_started_ && response_body_ == BodyMode::until_close) {
      response_done();
      return;
    }
  }
  const char* detail = (what & Stream::error) ? strerror(conn.stream().last_error()) : "end of stream";
  if (response_started_) fail(ProxyError::closed_mid_response, detail);
  else if (upstream_bytes_seen_) fail(ProxyError::bad_response, "closed inside the response head");
  else if ((what & Stream::writing) && (what & Stream::error)) fail(ProxyError::send_failed, detail);
  else fail(ProxyError::closed_before_response, detail);
}

void Exchange::on_client_drained() {
  if (!upstream_ || finished_) return;
  if (upstream_read_paused_ && evbuffer_get_length(client_.output()) <= kLowWater) {
    upstream_read_paused_ = false;
    upstream_->stream().enable_read();
    process_response();
  }
}

void Exchange::on_client_gone(const char* why) {
  if (finished_) return;
  finished_ = true;
  spdlog::info("conn {} {}: client went away mid-exchange ({}); upstream connection closed", client_.id(),
               client_.peer(), why);
  finish_upstream(false);
  write_access_log(499);
}

void Exchange::write_access_log(int status) {
  // metrics: one record per exchange feeds both the access log and the per-server figures.
  worker_.finish_exchange({client_.peer(), request_.method, request_.target, static_cast<int>(request_.version_major),
                           static_cast<int>(request_.version_minor), status, bytes_in_, bytes_out_, group_, upstream_started_, server_,
                           reused_, retried_, times_, seconds_since(started_)});
}

}  // namespace holdfast
