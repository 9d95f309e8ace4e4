#include "holdfast/client_connection.hpp"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "holdfast/exchange.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

namespace {
std::string format_peer(const sockaddr* addr) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (addr->sa_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(addr);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    return std::string("[") + buf + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  if (addr->sa_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(addr);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(a->sin_port));
  }
  return "unknown:0";
}

}  // namespace

ClientConnection::ClientConnection(Worker& worker, int fd, const sockaddr* addr, int)
    : worker_(worker),
      stream_(worker.base(), fd, false),
      id_(worker.next_id()) {
  peer_ = format_peer(addr);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  stream_.set_handler(this);
  // Input stops being read from the socket above this mark; it must hold a
  // whole head.
  stream_.set_input_limit(std::max<std::size_t>(kReadChunk, worker.config().client.max_header_bytes + 1));
  stream_.set_drain_mark(kLowWater);
  stream_.set_write_timeout(worker.config().client.send_timeout);
}

ClientConnection::~ClientConnection() {
  if (exchange_) {
    exchange_->on_client_gone("shutdown");
    exchange_.reset();
  }
  stream_.close();
}

std::string_view ClientConnection::peer_ip() const noexcept {
  std::string_view p = peer_;
  p = p.substr(0, p.rfind(':'));
  if (p.size() >= 2 && p.front() == '[') p = p.substr(1, p.size() - 2);
  return p;
}

void ClientConnection::start() {
  worker_.stats().add(Counter::client_connections);
  stream_.enable_read();
  enter_idle();
}

void ClientConnection::set_read_timeout(std::optional<std::chrono::milliseconds> t) { stream_.set_read_timeout(t); }

void ClientConnection::enter_idle() {
  state_ = State::idle;
  // The keepalive timeout is kept by the worker's idle list, not by a timer
  // of this connection's own.
  set_read_timeout(std::nullopt);
  if (stream_.input_length() == 0) {
    // Nothing pipelined: hold no parser, no buffers and no timer while idle.
    parser_.reset();
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
    case State::closing:
      evbuffer_drain(input(), evbuffer_get_length(input()));
      break;
    case State::closed:
      break;
  }
}

void ClientConnection::parse_requests() {
  if (in_parse_) return;
  in_parse_ = true;
  while (state_ == State::idle || state_ == State::reading_head) {
    evbuffer* in = input();
    if (evbuffer_get_length(in) == 0) break;
    if (state_ == State::idle) {
      if (worker_.draining()) {
        close_now();
        break;
      }
      state_ = State::reading_head;
      worker_.unmark_idle(this);
      // The header deadline is armed below only if the head does not arrive
      // in this read, which spares a timer update for almost every request.
      head_deadline_ = std::chrono::steady_clock::now() + worker_.config().client.header_timeout;
    }
    if (!parser_) parser_ = std::make_unique<HttpParser>(HttpParser::Kind::request, worker_.config().client.max_header_bytes);
    evbuffer_iovec v;
    if (evbuffer_peek(in, -1, nullptr, &v, 1) < 1) break;
    auto r = parser_->feed(static_cast<const char*>(v.iov_base), v.iov_len);
    evbuffer_drain(in, r.consumed);
    if (r.event == HttpParser::Event::error) {
      auto failure = parser_->failure();
      reject(failure == HttpParser::Failure::head_too_large ? ProxyError::head_too_large
             : failure == HttpParser::Failure::uri_too_long ? ProxyError::uri_too_long
                                                             : ProxyError::bad_request,
             parser_->error_reason());
      break;
    }
    if (r.event == HttpParser::Event::head_complete) begin_exchange();
  }
  if (state_ == State::reading_head) {
    // The head must arrive in full by its deadline, however slowly it drips.
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(head_deadline_ - std::chrono::steady_clock::now());
    set_read_timeout(std::max(left, std::chrono::milliseconds(1)));
  }
  in_parse_ = false;
}

void ClientConnection::begin_exchange() {
  auto& head = parser_->head();
  worker_.stats().add(Counter::requests);
  ++served_;
  request_keep_alive_ = head.keep_alive;
  if (head.method == "CONNECT") {
    reject(ProxyError::not_implemented, "CONNECT is not supported");
    return;
  }
  // RFC 9112 3.2: an HTTP/1.1 request without exactly one Host is refused.
  int hosts = 0;
  const std::string* host = nullptr;
  for (const auto& h : head.headers)
    if (iequals(h.name, "host")) {
      ++hosts;
      host = &h.value;
    }
  bool http11 = head.version_major == 1 && head.version_minor >= 1;
  if (hosts > 1 || (http11 && hosts == 0)) {
    reject(ProxyError::bad_request, "missing or repeated Host");
    return;
  }
  auto group = worker_.router().route(host ? std::string_view(*host) : std::string_view(), head.target);
  if (!group) {
    reject(ProxyError::no_route, head.target.c_str());
    return;
  }
  state_ = State::exchanging;
  set_read_timeout(head.chunked || head.content_length > 0 ? std::optional(worker_.config().client.body_timeout)
                                                           : std::nullopt);
  exchange_ = std::make_unique<Exchange>(*this, std::move(head), *group);
  exchange_->start();
}

void ClientConnection::on_request_complete() {
  // The body timeout ends with the body; the upstream read_timeout governs
  // the wait for the response. Clearing a Stream deadline costs no timer call.
  set_read_timeout(std::nullopt);
}

std::string ClientConnection::response_policy(bool must_close) {
  const auto& cfg = worker_.config().client;
  if (must_close || !request_keep_alive_ || served_ >= cfg.keepalive_requests || worker_.draining())
    close_after_response_ = true;
  if (close_after_response_) return "Connection: close\r\n";
  char buf[96];
  int n = std::snprintf(buf, sizeof buf, "Connection: keep-alive\r\nKeep-Alive: timeout=%lld, max=%llu\r\n",
                        static_cast<long long>(cfg.keepalive_timeout.value.count() / 1000),
                        static_cast<unsigned long long>(cfg.keepalive_requests - served_));
  return std::string(buf, static_cast<std::size_t>(n));
}

void ClientConnection::on_exchange_finished() {
  if (exchange_) {
    if (!exchange_->request_complete()) close_after_response_ = true;
    worker_.defer_delete(std::move(exchange_));
  }
  if (close_after_response_) {
    finish_or_close();
    return;
  }
  if (reading_paused_) {
    reading_paused_ = false;
    stream_.enable_read();
  }
  enter_idle();
  if (evbuffer_get_length(input()) > 0) parse_requests();
  // Input may have stopped at its limit while the exchange ran.
  stream_.kick();
}

void ClientConnection::reject(ProxyError error, const char* detail) {
  auto info = describe(error);
  spdlog::info("conn {} {}: {} {}{}{}", id_, peer_, info.status, info.text, detail ? ": " : "", detail ? detail : "");
  close_after_response_ = true;
  auto page = error_response(info.status, info.text, "Connection: close\r\n");
  evbuffer_add(output(), page.data(), page.size());
  stream_.flush();
  worker_.finish_exchange({.peer = peer_, .method = {}, .target = {}, .status = info.status, .bytes_out = page.size(), .times = {}});  // metrics: local answer, counted and logged
  finish_or_close();
}

void ClientConnection::finish_or_close() {
  state_ = State::closing;
  // Nothing more will be read; what is already buffered is discarded.
  stream_.disable_read();
  evbuffer_drain(input(), evbuffer_get_length(input()));
  stream_.flush();
  if (evbuffer_get_length(output()) == 0) {
    close_now();
    return;
  }
  // Be told when the output is empty, not merely below the low mark.
  stream_.set_drain_mark(0);
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
  if (state_ == State::closing) {
    if (evbuffer_get_length(output()) == 0) close_now();
    return;
  }
  if (exchange_) exchange_->on_client_drained();
}

void ClientConnection::on_stream_event(Stream&, short what) {
  if (state_ == State::closed) return;
  if (what & Stream::timeout) {
    if (state_ == State::reading_head) {
      spdlog::info("conn {} {}: request head not received within header_timeout", id_, peer_);
      reject(ProxyError::request_timeout, nullptr);
      return;
    }
    if (state_ == State::idle) {
      close_now();  // the client never read its last response: nothing left to abort
      return;
    }
    spdlog::info("conn {} {}: client {} timeout", id_, peer_, (what & Stream::reading) ? "body" : "send");
    if (exchange_) exchange_->on_client_gone((what & Stream::reading) ? "body timeout" : "send timeout");
    close_now();
    return;
  }
  // EOF or error.
  if (exchange_) exchange_->on_client_gone((what & Stream::eof) ? "closed" : "connection error");
  close_now();
}

void ClientConnection::abort() { close_now(); }

void ClientConnection::drain() {
  if (state_ == State::idle) {
    close_now();
    return;
  }
  close_after_response_ = true;
}

void ClientConnection::close_now() {
  if (state_ == State::closed) return;
  state_ = State::closed;
  if (exchange_) {
    exchange_->on_client_gone("closed");
    worker_.defer_delete(std::move(exchange_));
  }
  stream_.close();
  worker_.remove_client(this);
}

}  // namespace holdfast
