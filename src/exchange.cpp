#include "holdfast/exchange.hpp"

#include <errno.h>
#include <spdlog/spdlog.h>
#include <string.h>

#include <cassert>

#include "holdfast/client_connection.hpp"
#include "holdfast/http1_encode.hpp"
#include "holdfast/loop_clock.hpp"
#include "holdfast/upstream_pool.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

Exchange::Exchange(ClientConnection& client, DownstreamSink& sink, MessageHead&& request, std::size_t group)
    : client_(client),
      sink_(sink),
      worker_(client.worker()),
      peer_(client.peer()),
      generation_(client.worker().generation()),
      pool_(generation_->pool(group)),
      head_(std::move(request)),
      group_(group),
      started_(LoopClock::now()),
      idempotent_(is_idempotent(head_)),
      upgrade_(allowed_upgrade(head_, pool_.config().upgrade)),
      upstream_(*this, pool_,
                UpstreamRequest::Options{idempotent_, std::string_view(head_.method) == "HEAD", upgrade_ != nullptr,
                                         pool_.config().retry_buffer}) {
  forwarder_.upstream = &upstream_;
}

Exchange::~Exchange() {
  // finish() has unlinked it already unless the worker is tearing down.
  pool_.queue().remove(this);
}

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
  std::string encoded = UpstreamRequest::spare_head();
  encode_request_head(head_,
                      ForwardInfo{peer_.ip(), pool_.address(0).authority, upgrade_ ? *upgrade_ : "",
                                  generation_->config().via.upstream},
                      encoded);
  upstream_.set_head(std::move(encoded));
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

bool Exchange::connect_upstream(std::optional<std::size_t> avoid, bool fresh, std::optional<std::size_t> prefer) {
  // Each pass leases or opens a connection to one server. A connect that
  // fails at once reached no backend, so it moves on like any unsent failure;
  // may_fail_over() ends the loop long before its own bound.
  const unsigned passes = pool_.config().balancing.retries + 1;
  for (unsigned pass = 0; pass < passes; ++pass) {
    // First come, first served: a newcomer does not take a slot ahead of
    // requests of this worker already waiting for one.
    if (phase_ == Phase::buffering && !pool_.queue().empty() && !queued()) {
      wait_for_slot("requests are waiting for a connection slot");
      // The head of the queue tries again on the next loop turn: a server
      // may have come back that nobody announced.
      pool_.queue().notify();
      return false;
    }
    auto pick = generation_->pick_server(group_, head_, peer_.ip(), avoid, pass == 0 ? prefer : std::nullopt);
    if (!pick.server) {
      // Waiting is for the first attempt only: a failover that finds every
      // other server full answers at once (the phase has moved on).
      if (pick.at_capacity && phase_ == Phase::buffering) {
        wait_for_slot(pick.why);
        return false;
      }
      pool_.queue().remove(this);
      worker_.stats().add(Counter::no_server);
      fail(ProxyError::no_server, pick.why.c_str());
      return false;
    }
    pool_.queue().remove(this);
    server_ = *pick.server;
    server_chosen_ = true;
    if (!fresh) {
      // Sent again if the connection turns out closed: idempotent, and held
      // whole (no body, or a Content-Length one that fits retry_buffer).
      const bool retryable =
          idempotent_ && request_.mode != BodyMode::chunked && upstream_.can_replay(head_.content_length);
      if (auto conn = pool_.acquire(server_, idempotent_, retryable)) {
        upstream_.attach(std::move(conn), true);
        move_to(request_.done ? Phase::awaiting_head : Phase::sending);
        return true;
      }
    }
    int err = 0;
    if (auto conn = pool_.open(server_, err)) {
      upstream_.attach(std::move(conn), false);
      move_to(Phase::connecting);
      return true;
    }
    move_to(Phase::connecting);
    auto error = err == ECONNREFUSED ? ProxyError::connect_refused : ProxyError::connect_failed;
    generation_->note_server_failure(group_, server_, error, false);
    if (pass + 1 == passes || !may_fail_over()) {
      fail(error, strerror(err));
      return false;
    }
    pool_.note_failure(server_, error);
    avoid = server_;
    fresh = false;
  }
  return false;  // not reached: the last pass fails the exchange
}

bool Exchange::queued() const noexcept { return pool_.queue().contains(this); }

void Exchange::wait_for_slot(const std::string& why) {
  if (queued()) return;  // woken, but the slot went elsewhere: keeps its place
  if (!pool_.queue().push(this)) {
    worker_.stats().add(Counter::queue_overflow);
    fail(ProxyError::queue_full, why.c_str());
    return;
  }
  // A body still arriving waits in the socket (and its body_timeout is off)
  // until there is a connection to send it on.
  if (!request_.done) client_.pause_reading();
  spdlog::debug("conn {} {}: waiting for a connection slot ({} waiting): {}", client_.id(), peer_.full(),
                pool_.queue().size(), why);
}

void Exchange::on_slot_free() {
  if (phase_ != Phase::buffering) {
    pool_.queue().remove(this);
    return;
  }
  if (!connect_upstream()) return;  // still waiting, or ended
  // As start() after a first connect: what came with the head goes up, and
  // the client may send the rest.
  client_.resume_reading();
  pump_request();
}

void Exchange::on_queue_timeout() {
  worker_.stats().add(Counter::queue_timeout);
  auto waited = std::chrono::duration_cast<Millis>(LoopClock::now() - queued_at);
  fail(ProxyError::queue_timeout,
       fmt::format("no connection slot within {} (every server at max_conns)", format_duration(waited)).c_str());
}

bool Exchange::may_fail_over() {
  const auto& b = pool_.config().balancing;
  if (failovers_ >= b.retries || LoopClock::now() - started_ >= b.retry_timeout) return false;
  // Failing over means another server: the same one again would only repeat the failure.
  if (!generation_->has_alternative(group_, server_)) return false;
  ++failovers_;
  worker_.stats().add(pool_.slot(server_), Counter::failovers);
  return true;
}

void Exchange::pump_request() {
  while (!request_.done && phase_ != Phase::done && upstream_.attached()) {
    if (upstream_.congested()) {
      client_.pause_reading();
      break;
    }
    Stream& in = client_.stream();
    std::size_t avail = in.input_length();
    if (avail == 0) { splice_request_body(); break; }  // nothing buffered: the socket's bytes may go by splice
    if (request_.mode == BodyMode::length) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(avail, request_.remaining));
      if (const char* data = in.take_flat_input(n)) upstream_.send_body(data, n);
      else upstream_.send_body(in.input(), n);
      request_.remaining -= n;
      request_.bytes += n;
      if (request_.remaining == 0) request_body_done();
      continue;
    }
    const std::string_view front = in.input_front();
    if (front.empty()) break;
    auto r = client_.parser().feed(front.data(), front.size());
    in.drain_input(r.consumed);
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
  if (retry_reason_) {
    worker_.stats().add(pool_.slot(server_), *retry_reason_);
    retry_reason_.reset();
  }
  if (phase_ == Phase::connecting) move_to(request_.done ? Phase::awaiting_head : Phase::sending);
}

bool Exchange::response_congested() { return sink_.congested(); }

void Exchange::on_interim_response(const MessageHead& h) {
  // 100 Continue goes only to a client that asked for it; HTTP/1.0 clients get no 1xx.
  if (is_http11(head_) && (h.status != 100 || expect_continue_)) sink_.send_interim(h);
}

void Exchange::on_switching_protocols(const MessageHead& h) {
  if (!request_.done) {
    // The bytes after the request would be both body and tunnel: refuse.
    fail(ProxyError::bad_response, "101 Switching Protocols before the request body was complete");
    return;
  }
  enter(Phase::streaming);
  response_.status = 101;
  response_.started = true;
  TunnelOrigin origin{head_.method, head_.target, static_cast<int>(head_.version_major),
                      static_cast<int>(head_.version_minor), group_, server_, upstream_.reused(), request_.bytes, 0,
                      started_, generation_};
  auto conn = upstream_.take_connection();
  finish({101, false, false});
  sink_.start_tunnel(h, std::move(conn), std::move(origin), pool_.config().tunnel_timeout);
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
  // Written after finish() has counted it: whoever reads the answer and then
  // the metrics finds it counted.
  sink_.flush();
}

void Exchange::on_upstream_error(ProxyError error, const char* detail, RetryClass retry) {
  generation_->note_server_failure(group_, server_, error, upstream_.reused());
  if (try_retry(error, retry)) return;
  fail(error, detail);
}

// Decision table (first matching row wins):
//
//   retry class never                              no; counted as refused if it could be the race
//   reused connection, free retry not yet taken    the keep-alive race: once, on a fresh connection,
//                                                  to the same server unless it now looks down
//   unsent (no byte of it reached a backend)       another server, any method, while `retries`
//                                                  and `retry_timeout` allow
//   otherwise                                      no
bool Exchange::try_retry(ProxyError error, RetryClass retry) {
  const bool reused = upstream_.reused();
  if (retry == RetryClass::never) {
    // Only a failure that could be the race counts as a refused retry.
    if (reused && (error == ProxyError::closed_before_response || error == ProxyError::send_failed))
      worker_.stats().add(pool_.slot(server_), Counter::retries_refused);
    return false;
  }
  std::optional<std::size_t> avoid;
  std::optional<std::size_t> prefer;
  bool fresh = false;
  if (reused && !retried_) {
    retried_ = true;
    fresh = true;
    // The race says nothing against the server: a fresh connection to it,
    // unless it is out by now.
    if (!worker_.health().available(pool_.slot(server_), LoopClock::now())) avoid = server_;
    else prefer = server_;
    spdlog::info("conn {} upstream {} ({}): {} on a reused connection before any response; sending again on a new "
                 "connection",
                 client_.id(), upstream_.connection_id(), pool_.address(server_).text, describe(error).text);
    // Counted once its new connection is up (on_upstream_connected): a retry
    // whose connect fails is reported with that final cause instead.
    retry_reason_ = error == ProxyError::send_failed ? Counter::retries_send_failed : Counter::retries_closed;
  } else if (retry == RetryClass::unsent && may_fail_over()) {
    avoid = server_;
    spdlog::debug("conn {} upstream {} ({}): {} before any byte reached it; trying another server", client_.id(),
                  upstream_.connection_id(), pool_.address(server_).text, describe(error).text);
  } else {
    return false;
  }
  pool_.note_failure(server_, error);
  move_to(Phase::connecting);
  if (!connect_upstream(avoid, fresh, prefer)) return true;  // ended with the last attempt's own cause
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
    spdlog::info("conn {} {}: {} {}{}{}", client_.id(), peer_.full(), info.status, info.text, detail ? ": " : "",
                 detail ? detail : "");
  }
  if (!response_.started && info.status != 0) {
    response_.status = info.status;
    response_.started = true;
    sink_.send_error(info.status, info.text, request_.done);
    finish({info.status, true});
    sink_.flush();
    return;
  }
  // Mid-response: the client must not take a truncated body for a whole one.
  finish({response_.status, false});
  sink_.abort();
}

void Exchange::on_client_gone(const char* why) {
  if (phase_ == Phase::done) return;
  spdlog::info("conn {} {}: client went away mid-exchange ({}); upstream connection closed", client_.id(),
               peer_.full(), why);
  finish({499, false});
}

void Exchange::on_client_body_timeout() {
  if (phase_ == Phase::done || response_.started) return;
  spdlog::info("conn {} {}: request body not received within body_timeout", client_.id(), peer_.full());
  response_.status = 408;
  response_.started = true;
  sink_.send_error(408, "request body timeout", false);
  finish({408, true});
  sink_.flush();
}

void Exchange::finish(const Outcome& outcome) {
  if (phase_ == Phase::done) return;
  enter(Phase::done);
  pool_.queue().remove(this);  // a client gone or an error while waiting
  upstream_.release();
  if (outcome.log) write_access_log(outcome.status);
  if (outcome.tell_client) client_.on_exchange_finished();
}

void Exchange::write_access_log(int status) {
  // One record per exchange feeds both the access log and the per-server figures.
  ExchangeTimes times;
  times.connect = upstream_.connect_seconds();
  if (upstream_.first_byte_at() != Clock::time_point{})
    times.first_byte = std::chrono::duration<double>(upstream_.first_byte_at() - started_).count();
  generation_->finish_exchange({peer_.full(), head_.method, head_.target, static_cast<int>(head_.version_major),
                           static_cast<int>(head_.version_minor), status, request_.bytes, sink_.response_bytes(),
                           group_, server_chosen_, server_, upstream_.reused(), retried_, times,
                           seconds_since(started_)});
}

}  // namespace holdfast
