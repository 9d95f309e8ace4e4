#include "holdfast/client_connection.hpp"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>

#include "holdfast/exchange.hpp"
#include "holdfast/loop_clock.hpp"
#include "holdfast/request_target.hpp"
#include "holdfast/tunnel.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

ClientConnection::ClientConnection(Worker& worker, int fd, const sockaddr* addr, int)
    : worker_(worker), stream_(worker.base(), fd, false), id_(worker.next_id()), peer_(addr) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  stream_.set_handler(this);
  stream_.set_drain_mark(kLowWater);
  apply_client_settings();
}

void ClientConnection::apply_client_settings() {
  version_ = static_cast<std::uint32_t>(worker_.version_id());
  // Input stops being read from the socket above this mark; it must hold a
  // whole head.
  stream_.set_input_limit(std::max<std::size_t>(kReadChunk, worker_.config().client.max_header_bytes + 1));
  stream_.set_write_timeout(worker_.config().client.send_timeout);
}

ClientConnection::~ClientConnection() {
  if (exchange_) exchange_->on_client_gone("shutdown");
  exchange_.reset();
  tunnel_.reset();  // ends the tunnel: logged, counted, upstream closed
  stream_.close();
}

void ClientConnection::start() {
  worker_.stats().add(Counter::client_connections);
  stream_.enable_read();
  enter_idle();
}

void ClientConnection::enter_idle() {
  state_ = State::idle;
  // The keepalive timeout is kept by the worker's idle list, not by a timer
  // of this connection's own.
  stream_.set_read_timeout(std::nullopt);
  if (stream_.output_length() > 0) {
    // The idle clock starts once the last response is written (as the
    // client counts it): until then the send timeout governs, and
    // on_stream_drained marks the connection idle.
    stream_.set_drain_mark(0);
    return;
  }
  if (stream_.input_length() == 0) {
    // Nothing pipelined: hold no parser, no buffers and no timer while idle.
    HttpParser::give_back(std::move(parser_));
    stream_.release_idle_resources();
  }
  worker_.mark_idle(this);
}

void ClientConnection::on_stream_readable(Stream&) {
  switch (state_) {
    case State::idle:
    case State::reading_head:
      parse_requests();
      break;
    case State::exchanging:
      if (exchange_ && !exchange_->request_complete()) exchange_->pump_request();
      // else: pipelined bytes wait in the input buffer for their turn.
      break;
    case State::tunnel:
      tunnel_->on_client_readable();
      break;
    case State::discarding:
      discard_request_body();
      break;
    case State::closing:
      stream_.drain_input(stream_.input_length());
      break;
    case State::lingering: {
      auto& e = ending();
      e.lingered += stream_.input_length();
      stream_.drain_input(stream_.input_length());
      if (e.lingered > kLingerBytes || LoopClock::now() >= deadline_) close_now();
      break;
    }
    case State::closed:
      break;
  }
}

void ClientConnection::parse_requests() {
  if (in_parse_) return;
  in_parse_ = true;
  while (state_ == State::idle || state_ == State::reading_head) {
    if (stream_.input_length() == 0) break;
    if (state_ == State::idle) {
      state_ = State::reading_head;
      worker_.unmark_idle(this);
      if (version_ != static_cast<std::uint32_t>(worker_.version_id())) {
        // A reload since the last request: this one reads under the new
        // client settings (between requests no head is half parsed).
        apply_client_settings();
        HttpParser::give_back(std::move(parser_));
      }
      stream_.set_drain_mark(kLowWater);
      // Until this head says otherwise (an error answer may come first).
      request_head_ = false;
      request_http11_ = true;
      request_keep_alive_ = true;
      // The header deadline is armed below only if the head does not arrive
      // in this read, which spares a timer update for almost every request.
      deadline_ = LoopClock::now() + worker_.config().client.header_timeout;
    }
    if (!parser_) parser_ = HttpParser::take(HttpParser::Kind::request, worker_.config().client.max_header_bytes);
    const std::string_view front = stream_.input_front();
    if (front.empty()) break;
    auto r = parser_->feed(front.data(), front.size());
    stream_.drain_input(r.consumed);
    if (r.event == HttpParser::Event::error) {
      reject(request_parse_error(parser_->failure()), parser_->error_reason());
      break;
    }
    if (r.event == HttpParser::Event::head_complete) begin_exchange();
  }
  if (state_ == State::reading_head) {
    if (input_closed_) {
      // The client shut down its side in the middle of a head: nothing to
      // answer, but what is already queued for it still goes out.
      close_after_output(false);
    } else {
      // The head must arrive in full by its deadline, however slowly it drips.
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - LoopClock::now());
      stream_.set_read_timeout(std::max(left, std::chrono::milliseconds(1)));
    }
  }
  in_parse_ = false;
}

void ClientConnection::begin_exchange() {
  auto& head = parser_->head();
  worker_.stats().add(Counter::requests);
  ++served_;
  response_bytes_ = 0;
  request_keep_alive_ = head.keep_alive;
  request_http11_ = head.version_major > 1 || (head.version_major == 1 && head.version_minor >= 1);
  request_head_ = std::string_view(head.method) == "HEAD";
  // RFC 9112 3.2.2: an absolute-form target's authority replaces Host before Host is checked and routed.
  if (const char* bad = rewrite_request_target(head)) return reject(ProxyError::bad_request, bad);
  if (std::string_view(head.method) == "CONNECT") {
    reject(ProxyError::not_implemented, "CONNECT is not supported");
    return;
  }
  // RFC 9112 3.2: an HTTP/1.1 request without exactly one Host is refused.
  int hosts = 0;
  const std::string_view* host = nullptr;
  for (const auto& h : head.headers)
    if (iequals(h.name, "host")) {
      ++hosts;
      host = &h.value;
    }
  if (hosts > 1 || (request_http11_ && hosts == 0)) {
    reject(ProxyError::bad_request, "missing or repeated Host");
    return;
  }
  auto group = worker_.router().route(host ? *host : std::string_view(), head.target);
  if (!group) {
    reject(ProxyError::no_route, head.target.c_str());
    return;
  }
  state_ = State::exchanging;
  stream_.set_read_timeout(head.chunked || head.content_length > 0
                               ? std::optional(worker_.config().client.body_timeout)
                               : std::nullopt);
  exchange_ = std::make_unique<Exchange>(*this, *this, std::move(head), *group);
  exchange_->start();
}

void ClientConnection::on_request_complete() {
  // The body timeout ends with the body; the upstream read_timeout governs
  // the wait for the response. Clearing a Stream deadline costs no timer call.
  stream_.set_read_timeout(std::nullopt);
}

void ClientConnection::on_exchange_finished() { worker_.post_resume(this); }

void ClientConnection::resume_after_exchange() {
  if (state_ != State::exchanging || !exchange_) return;
  bool complete = exchange_->request_complete();
  auto body_left = exchange_->request_body_left();
  worker_.defer_delete(std::move(exchange_));
  if (!complete && !close_after_response_) {
    // The answer said keep-alive: the rest of the body is read and dropped.
    start_discarding(body_left);
    return;
  }
  if (!complete || close_after_response_) {
    // Unread request bytes may still be on their way: linger so that they do
    // not turn into a reset that destroys the answer.
    close_after_output(!complete || stream_.input_length() > 0);
    return;
  }
  continue_after_request();
}

void ClientConnection::continue_after_request() {
  if (reading_paused_) {
    reading_paused_ = false;
    stream_.enable_read();
  }
  enter_idle();
  if (stream_.input_length() > 0) parse_requests();
  else if (input_closed_) close_after_output(false);
  // Input may have stopped at its limit while the exchange ran.
  if (state_ != State::closed) stream_.kick();
}

void ClientConnection::reject(ProxyError error, const char* detail) {
  auto info = describe(error);
  auto peer = peer_.text();
  spdlog::info("conn {} {}: {} {}{}{}", id_, peer.full(), info.status, info.text, detail ? ": " : "", detail ? detail : "");
  close_after_response_ = true;
  auto page = error_response(info.status, info.text, "Connection: close\r\n", request_head_);
  queue(page.data(), page.size());
  worker_.generation()->finish_exchange({.peer = peer.full(), .method = {}, .target = {}, .status = info.status, .bytes_out = page.size(), .times = {}});
  // What follows a refused request cannot be framed; the client may still be sending it.
  close_after_output(true);
}

void ClientConnection::pause_reading() {
  if (!reading_paused_) {
    reading_paused_ = true;
    stream_.disable_read();
  }
}

void ClientConnection::resume_reading() {
  if (reading_paused_ && state_ == State::exchanging) {
    reading_paused_ = false;
    stream_.enable_read();
    if (exchange_ && !exchange_->request_complete()) exchange_->pump_request();
  }
}

void ClientConnection::on_stream_drained(Stream&) {
  if (state_ == State::tunnel) {
    tunnel_->on_client_drained();
    return;
  }
  if (state_ == State::closing) {
    if (stream_.output_length() == 0) start_lingering();
    return;
  }
  if (state_ == State::idle) {
    if (stream_.output_length() == 0) {
      stream_.set_drain_mark(kLowWater);
      enter_idle();
    }
    return;
  }
  if (exchange_) exchange_->on_client_drained();
}

void ClientConnection::on_stream_event(Stream&, short what) {
  if (state_ == State::closed) return;
  if (state_ == State::tunnel) {
    tunnel_->on_client_event(what);
    return;
  }
  if (what & Stream::timeout) {
    on_timeout((what & Stream::reading) != 0);
    return;
  }
  if ((what & Stream::eof) && !(what & Stream::error)) {
    on_input_closed();
    return;
  }
  if (exchange_) exchange_->on_client_gone("connection error");
  close_now();
}

}  // namespace holdfast
