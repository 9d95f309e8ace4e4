#include "holdfast/exchange.hpp"

#include <errno.h>
#include <spdlog/spdlog.h>
#include <string.h>

#include <cassert>

#include "holdfast/client_connection.hpp"
#include "holdfast/http1_encode.hpp"
#include "holdfast/upstream_pool.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

Exchange::Exchange(ClientConnection& client, DownstreamSink& sink, MessageHead&& request, std::size_t group)
    : client_(client),
      sink_(sink),
      worker_(client.worker()),
      pool_(client.worker().pool(group)),
      head_(std::move(request)),
      group_(group),
      started_(std::chrono::steady_clock::now()),
      idempotent_(is_idempotent(head_)),
      upstream_(*this, pool_,
                UpstreamRequest::Options{is_idempotent(head_), head_.method == "HEAD", pool_.config().retry_buffer}) {
  forwarder_.upstream = &upstream_;
}

Exchange::~Exchange() = default;

void Exchange::enter(Phase next) {
  assert(phase_transition_allowed(phase_, next));
  phase_ = next;
}

void Exchange::start() {
  request_.bytes = client_.parser().head_bytes();
  if (const auto* e = find_header(head_.headers, "expect")) expect_continue_ = iequals(*e, "100-continue");
  if (head_.chunked) {
    request_.mode = BodyMode::chunked;
    client_.parser().resume_chunked_body(&forwarder_);
  } else {
    request_.mode = head_.has_content_length ? BodyMode::length : BodyMode::none;
    request_.remaining = head_.content_length;
    client_.parser().reset();  // the body, if any, is moved without the parser
  }
  upstream_.set_head(
      encode_request_head(head_, ForwardInfo{client_.peer_ip(), pool_.address(0).text, worker_.config().via.upstream}));
  if (request_.mode == BodyMode::none || (request_.mode == BodyMode::length && request_.remaining == 0)) {
    // No body: the request is complete before it is sent, so the upstream
    // timers are armed once, at attach.
    request_.done = true;
    client_.on_request_complete();
    upstream_.end_request(nullptr);
  }
  if (!connect_upstream()) return;
  // The body that came with the head is parsed before anything is written,
  // so that a malformed one is refused without a byte going upstream; after
  // that, body bytes stream up as they arrive, chunk by chunk.
  pump_request();
}

bool Exchange::connect_upstream() {
  server_ = worker_.balancer(group_).pick();
  if (auto conn = pool_.acquire(server_, idempotent_)) {
    upstream_.attach(std::move(conn), true);
    enter(request_.done ? Phase::awaiting_head : Phase::sending);
    return true;
  }
  int err = 0;
  auto conn = pool_.open(server_, err);
  if (!conn) {
    enter(Phase::connecting);
    fail(err == ECONNREFUSED ? ProxyError::connect_refused : ProxyError::connect_failed, strerror(err));
    return false;
  }
  upstream_.attach(std::move(conn), false);
  enter(Phase::connecting);
  return true;
}

void Exchange::pump_request() {
  while (!request_.done && phase_ != Phase::done && upstream_.attached()) {
    if (upstream_.congested()) {
      client_.pause_reading();
      break;
    }
    evbuffer* in = client_.input();
    std::size_t avail = evbuffer_get_length(in);
    if (avail == 0) break;
    if (request_.mode == BodyMode::length) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(avail, request_.remaining));
      upstream_.send_body(in, n);
      request_.remaining -= n;
      request_.bytes += n;
      if (request_.remaining == 0) request_body_done();
      continue;
    }
    evbuffer_iovec v;
    if (evbuffer_peek(in, -1, nullptr, &v, 1) < 1) break;
    auto r = client_.parser().feed(static_cast<const char*>(v.iov_base), v.iov_len);
    evbuffer_drain(in, r.consumed);
    request_.bytes += r.consumed;
    if (r.event == HttpParser::Event::error) {
      fail(request_parse_error(client_.parser().failure()), client_.parser().error_reason());
      return;
    }
    if (r.event == HttpParser::Event::message_complete) request_body_done();
    else if (r.consumed == 0) break;
  }
  if (phase_ != Phase::done) upstream_.flush();
}

void Exchange::request_body_done() {
  request_.done = true;
  client_.parser().reset();
  client_.on_request_complete();
  upstream_.end_request(request_.mode == BodyMode::chunked ? &forwarder_.trailers : nullptr);
  if (phase_ == Phase::sending) enter(Phase::awaiting_head);
}

// --- Upstream events ---

void Exchange::on_upstream_connected() {
  if (phase_ == Phase::connecting) enter(request_.done ? Phase::awaiting_head : Phase::sending);
}

void Exchange::on_request_drained() { client_.resume_reading(); }

void Exchange::on_client_drained() {
  if (phase_ == Phase::streaming) upstream_.resume_response();
}

bool Exchange::response_congested() { return sink_.congested(); }

void Exchange::on_interim_response(const MessageHead& h) {
  // 100 Continue goes only to a client that asked for it; HTTP/1.0 clients get no 1xx.
  if (is_http11(head_) && (h.status != 100 || expect_continue_)) sink_.send_interim(h);
}

void Exchange::on_response_head(const MessageHead& h, UpstreamRequest::BodyMode mode) {
  enter(Phase::streaming);
  response_.status = h.status;
  response_.started = true;
  auto framing = mode == UpstreamRequest::BodyMode::none     ? DownstreamSink::Framing::none
                 : mode == UpstreamRequest::BodyMode::length ? DownstreamSink::Framing::length
                                                             : DownstreamSink::Framing::unknown;
  sink_.send_head(h, framing, request_.done);
}

void Exchange::on_response_data(evbuffer* from, std::size_t n) { sink_.send_data(from, n); }

void Exchange::on_response_data(const char* data, std::size_t n) { sink_.send_data(data, n); }

void Exchange::flush_response() {
  if (phase_ != Phase::done) sink_.flush();
}

void Exchange::on_response_end(const HeaderList& trailers) {
  sink_.end(trailers);
  finish({response_.status, true});
}

void Exchange::on_upstream_error(ProxyError error, const char* detail, RetryClass retry) {
  if (try_retry(error, retry)) return;
  fail(error, detail);
}

bool Exchange::try_retry(ProxyError error, RetryClass retry) {
  // Only a failure on a reused connection can be the keep-alive race; a
  // fresh connection that fails is the backend's answer.
  if (retried_ || !upstream_.reused()) return false;
  if (retry == RetryClass::never) {
    // Only a failure that could be the race counts as a refused retry.
    if (error == ProxyError::closed_before_response || error == ProxyError::send_failed)
      worker_.stats().add(pool_.slot(server_), Counter::retries_refused);
    return false;
  }
  retried_ = true;
  spdlog::info("conn {} upstream {} ({}): {} on a reused connection before any response; sending again on a new "
               "connection",
               client_.id(), upstream_.connection_id(), pool_.address(server_).text, describe(error).text);
  int err = 0;
  auto conn = pool_.open(server_, err);
  if (!conn) {
    // The retry's own failure is what the client hears and the log says.
    fail(err == ECONNREFUSED ? ProxyError::connect_refused : ProxyError::connect_failed, strerror(err));
    return true;
  }
  // Counted only once a new connection exists: a retry whose connect fails
  // at once is reported with that final cause instead.
  worker_.stats().add(pool_.slot(server_),
                      error == ProxyError::send_failed ? Counter::retries_send_failed : Counter::retries_closed);
  upstream_.attach(std::move(conn), false);
  enter(Phase::connecting);
  upstream_.flush();
  // A client paused on the old connection's full output hears no drain edge
  // from this one if the first write already emptied it.
  if (!request_.done && !upstream_.congested()) client_.resume_reading();
  return true;
}

// --- Ends ---

void Exchange::fail(ProxyError error, const char* detail) {
  if (phase_ == Phase::done) return;
  auto info = describe(error);
  if (info.side == ErrorSide::upstream) {
    pool_.note_failure(server_, error);
    worker_.stats().add(Counter::upstream_errors);
    spdlog::warn("conn {} upstream {} ({}): {}{}{}", client_.id(), upstream_.connection_id(),
                 pool_.address(server_).text, info.text, detail ? ": " : "", detail ? detail : "");
  } else {
    spdlog::info("conn {} {}: {} {}{}{}", client_.id(), client_.peer(), info.status, info.text, detail ? ": " : "",
                 detail ? detail : "");
  }
  if (!response_.started && info.status != 0) {
    response_.status = info.status;
    response_.started = true;
    sink_.send_error(info.status, info.text, request_.done);
    finish({info.status, true});
    return;
  }
  // Mid-response: the client must not take a truncated body for a whole one.
  finish({response_.status, false});
  sink_.abort();
}

void Exchange::on_client_gone(const char* why) {
  if (phase_ == Phase::done) return;
  spdlog::info("conn {} {}: client went away mid-exchange ({}); upstream connection closed", client_.id(),
               client_.peer(), why);
  finish({499, false});
}

void Exchange::on_client_body_timeout() {
  if (phase_ == Phase::done || response_.started) return;
  spdlog::info("conn {} {}: request body not received within body_timeout", client_.id(), client_.peer());
  response_.status = 408;
  response_.started = true;
  sink_.send_error(408, "request body timeout", false);
  finish({408, true});
}

void Exchange::finish(const Outcome& outcome) {
  if (phase_ == Phase::done) return;
  enter(Phase::done);
  upstream_.release();
  write_access_log(outcome.status);
  if (outcome.tell_client) client_.on_exchange_finished();
}

void Exchange::write_access_log(int status) {
  // One record per exchange feeds both the access log and the per-server figures.
  ExchangeTimes times;
  times.connect = upstream_.connect_seconds();
  if (upstream_.first_byte_at() != Clock::time_point{})
    times.first_byte = std::chrono::duration<double>(upstream_.first_byte_at() - started_).count();
  worker_.finish_exchange({client_.peer(), head_.method, head_.target, static_cast<int>(head_.version_major),
                           static_cast<int>(head_.version_minor), status, request_.bytes, sink_.response_bytes(),
                           group_, upstream_.attempts() > 0, server_, upstream_.reused(), retried_, times,
                           seconds_since(started_)});
}

}  // namespace holdfast
