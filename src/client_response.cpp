// ClientConnection as the exchange's DownstreamSink: HTTP/1 response heads,
// chunk framing, error answers and the client's Keep-Alive policy.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cstring>
#include <memory>

#include "holdfast/client_connection.hpp"
#include "holdfast/exchange.hpp"
#include "holdfast/http1_encode.hpp"
#include "holdfast/tunnel.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

namespace {
// "HTTP/1.1 " and a status code of up to 12 characters and a space.
constexpr std::size_t kStatusRoom = 9 + 12 + 1;
}  // namespace

void ClientConnection::queue(const char* data, std::size_t n) {
  stream_.add_output(data, n);
  response_bytes_ += n;
}

char* ClientConnection::write_response_policy(char* p, bool must_close) {
  const auto& cfg = worker_.config().client;
  // A client that shut down its sending side gets its pipelined requests
  // answered; the last of them closes.
  bool last_input = input_closed_ && stream_.input_length() == 0;
  if (must_close || !request_keep_alive_ || served_ >= cfg.keepalive_requests || worker_.draining() || last_input)
    close_after_response_ = true;
  if (close_after_response_) return write_bytes(p, "Connection: close\r\n");
  // to_chars, as snprintf's format parsing cost more than the rest of the
  // head. Each number has 20 bytes of room, enough for any 64-bit value.
  p = write_bytes(p, "Connection: keep-alive\r\nKeep-Alive: timeout=");
  p = std::to_chars(p, p + 20, static_cast<long long>(cfg.keepalive_timeout.value.count() / 1000)).ptr;
  p = write_bytes(p, ", max=");
  p = std::to_chars(p, p + 20, static_cast<unsigned long long>(cfg.keepalive_requests - served_)).ptr;
  return write_bytes(p, "\r\n");
}

void ClientConnection::send_interim(const MessageHead& h) {
  std::string interim = "HTTP/1.1 " + std::to_string(h.status) + " " + h.reason + "\r\n";
  append_end_to_end(interim, h.headers, {});
  interim += "\r\n";
  queue(interim.data(), interim.size());
}

void ClientConnection::send_head(const MessageHead& h, Framing framing, bool request_complete) {
  response_chunked_ = framing == Framing::unknown && request_http11_;
  const bool via = worker_.config().via.client;
  std::string te;
  if (response_chunked_) te = chunked_coding_list(h.headers);
  // Written straight into the client's output: room for the longest form
  // of the head is reserved once, and what it does not use is given back.
  // Content-Length or Transfer-Encoding: the longer of the two.
  const std::size_t room = kStatusRoom + h.reason.size() + 2 + end_to_end_room(h.headers) +
                           (via ? kViaField.size() : 0) +
                           std::max(kContentLengthRoom, field_room("Transfer-Encoding", te)) + kPolicyRoom + 2;
  std::unique_ptr<char[]> spare;
  char* start = stream_.reserve_output(room);
  if (!start) {
    // No room could be reserved (out of memory): built aside, added as data.
    spare.reset(new char[room]);
    start = spare.get();
  }
  // The status line's fixed part: "HTTP/1.1 ", the code, a space.
  char* p = write_bytes(start, "HTTP/1.1 ");
  p = std::to_chars(p, p + 12, h.status).ptr;
  *p++ = ' ';
  p = write_bytes(p, h.reason);
  p = write_bytes(p, "\r\n");
  // A bodiless answer keeps the Content-Length the backend gave (HEAD).
  if (framing == Framing::none) p = write_end_to_end(p, h.headers, {});
  else p = write_end_to_end(p, h.headers, {"content-length"});
  if (via) p = write_bytes(p, kViaField);
  if (framing == Framing::length) p = write_content_length(p, h.content_length);
  else if (response_chunked_) p = write_field(p, "Transfer-Encoding", te);
  // An HTTP/1.0 client learns the end of an unknown-length body from the
  // close; and a request body not read to its end keeps the connection only
  // if holdfast can read and drop the rest of it afterwards.
  p = write_response_policy(p, (framing == Framing::unknown && !request_http11_) ||
                                   (!request_complete && !can_discard_request_body()));
  p = write_bytes(p, "\r\n");
  const auto n = static_cast<std::size_t>(p - start);
  assert(n <= room);
  if (spare) {
    queue(start, n);
    return;
  }
  stream_.commit_output(start, n);
  response_bytes_ += n;
}

void ClientConnection::send_data(evbuffer* from, std::size_t n) {
  evbuffer* out = stream_.output();
  if (response_chunked_) add_chunk_header(out, n);
  std::size_t before = evbuffer_get_length(out);
  evbuffer_remove_buffer(from, out, n);
  if (response_chunked_) evbuffer_add(out, "\r\n", 2);
  response_bytes_ += evbuffer_get_length(out) - before;
}

void ClientConnection::send_data(const char* data, std::size_t n) {
  if (n == 0) return;
  if (!response_chunked_) {
    queue(data, n);
    return;
  }
  evbuffer* out = stream_.output();
  add_chunk_header(out, n);
  evbuffer_add(out, data, n);
  evbuffer_add(out, "\r\n", 2);
  response_bytes_ += n;
}

void ClientConnection::end(const HeaderList& trailers) {
  if (response_chunked_) {
    std::string last;
    append_last_chunk(last, trailers);
    queue(last.data(), last.size());
  }
}

void ClientConnection::send_error(int status, std::string_view text, bool request_complete) {
  // A request whose body was not read to its end leaves the framing in doubt.
  char policy[kPolicyRoom];
  const auto length = static_cast<std::size_t>(write_response_policy(policy, !request_complete) - policy);
  auto page = error_response(status, text, std::string_view(policy, length), request_head_);
  queue(page.data(), page.size());
}

void ClientConnection::start_tunnel(const MessageHead& h, std::unique_ptr<UpstreamConnection> upstream,
                                    TunnelOrigin origin, Millis idle_timeout) {
  std::string head = "HTTP/1.1 101 " + h.reason + "\r\n";
  append_end_to_end(head, h.headers, {});
  head += kViaField;
  append_field(head, "Upgrade", *find_header(h.headers, "upgrade"));
  append_field(head, "Connection", "upgrade");
  head += "\r\n";
  queue(head.data(), head.size());
  origin.response_bytes = head.size();
  // From here the bytes belong to the tunnel, including any the client sent
  // after its request (never parsed as HTTP).
  state_ = State::tunnel;
  reading_paused_ = false;
  worker_.defer_delete(std::move(exchange_));
  tunnel_ = std::make_unique<Tunnel>(*this, stream_, std::move(upstream), idle_timeout, std::move(origin));
  tunnel_->start();
  // A FIN that came with or after the upgrade request is the tunnel's too.
  if (input_closed_ && tunnel_) tunnel_->on_client_event(Stream::eof | Stream::reading);
}

void ClientConnection::abort() { close_now(); }

bool ClientConnection::congested() {
  if (stream_.output_length() < kHighWater) return false;
  stream_.flush();
  return stream_.output_length() >= kHighWater;
}

}  // namespace holdfast
