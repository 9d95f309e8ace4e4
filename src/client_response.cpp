// ClientConnection as the exchange's DownstreamSink: HTTP/1 response heads,
// chunk framing, error answers and the client's Keep-Alive policy.
#include <spdlog/spdlog.h>

#include <charconv>
#include <cstring>

#include "holdfast/client_connection.hpp"
#include "holdfast/exchange.hpp"
#include "holdfast/http1_encode.hpp"
#include "holdfast/tunnel.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

namespace {
// The response-head scratch string keeps at most this much capacity.
constexpr std::size_t kKeptHeadCapacity = 8 * 1024;
}  // namespace

void ClientConnection::queue(const char* data, std::size_t n) {
  evbuffer_add(stream_.output(), data, n);
  response_bytes_ += n;
}

void ClientConnection::response_policy(std::string& out, bool must_close) {
  const auto& cfg = worker_.config().client;
  // A client that shut down its sending side gets its pipelined requests
  // answered; the last of them closes.
  bool last_input = input_closed_ && stream_.input_length() == 0;
  if (must_close || !request_keep_alive_ || served_ >= cfg.keepalive_requests || worker_.draining() || last_input)
    close_after_response_ = true;
  if (close_after_response_) {
    out += "Connection: close\r\n";
    return;
  }
  // Written into one buffer and appended once; to_chars, as snprintf's
  // format parsing cost more than the rest of the head.
  static constexpr std::string_view kFront = "Connection: keep-alive\r\nKeep-Alive: timeout=";
  static constexpr std::string_view kMax = ", max=";
  char line[kFront.size() + kMax.size() + 2 * 20 + 2];
  char* p = line;
  std::memcpy(p, kFront.data(), kFront.size());
  p += kFront.size();
  // Each number has 20 bytes of the buffer, room for any 64-bit value.
  p = std::to_chars(p, p + 20, static_cast<long long>(cfg.keepalive_timeout.value.count() / 1000)).ptr;
  std::memcpy(p, kMax.data(), kMax.size());
  p += kMax.size();
  p = std::to_chars(p, p + 20, static_cast<unsigned long long>(cfg.keepalive_requests - served_)).ptr;
  *p++ = '\r';
  *p++ = '\n';
  out.append(line, static_cast<std::size_t>(p - line));
}

void ClientConnection::send_interim(const MessageHead& h) {
  std::string interim = "HTTP/1.1 " + std::to_string(h.status) + " " + h.reason + "\r\n";
  append_end_to_end(interim, h.headers, {});
  interim += "\r\n";
  queue(interim.data(), interim.size());
}

void ClientConnection::send_head(const MessageHead& h, Framing framing, bool request_complete) {
  response_chunked_ = framing == Framing::unknown && request_http11_;
  // Built in one string per worker thread, reused (its capacity kept) from
  // one response to the next: no allocation per head once it has grown.
  thread_local std::string head;
  head.clear();
  head.reserve(256 + h.reason.size() + h.headers.size() * 48);
  // The status line's fixed part in one append: "HTTP/1.1 ", the code, a space.
  char status[9 + 12 + 1] = {'H', 'T', 'T', 'P', '/', '1', '.', '1', ' '};
  char* p = std::to_chars(status + 9, status + 9 + 12, h.status).ptr;
  *p++ = ' ';
  head.append(status, static_cast<std::size_t>(p - status));
  head += h.reason;
  head += "\r\n";
  // A bodiless answer keeps the Content-Length the backend gave (HEAD).
  if (framing == Framing::none) append_end_to_end(head, h.headers, {});
  else append_end_to_end(head, h.headers, {"content-length"});
  if (worker_.config().via.client) append_field(head, "Via", "1.1 holdfast");
  if (framing == Framing::length) append_field(head, "Content-Length", std::to_string(h.content_length));
  else if (response_chunked_) append_field(head, "Transfer-Encoding", chunked_coding_list(h.headers));
  // An HTTP/1.0 client learns the end of an unknown-length body from the
  // close; and a request body not read to its end keeps the connection only
  // if holdfast can read and drop the rest of it afterwards.
  response_policy(head, (framing == Framing::unknown && !request_http11_) ||
                            (!request_complete && !can_discard_request_body()));
  head += "\r\n";
  queue(head.data(), head.size());
  // A head of unusual size does not stay with the thread.
  if (head.capacity() > kKeptHeadCapacity) std::string().swap(head);
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
  evbuffer* out = stream_.output();
  if (response_chunked_) add_chunk_header(out, n);
  evbuffer_add(out, data, n);
  if (response_chunked_) evbuffer_add(out, "\r\n", 2);
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
  std::string policy;
  response_policy(policy, !request_complete);
  auto page = error_response(status, text, policy, request_head_);
  queue(page.data(), page.size());
}

void ClientConnection::start_tunnel(const MessageHead& h, std::unique_ptr<UpstreamConnection> upstream,
                                    TunnelOrigin origin, Millis idle_timeout) {
  std::string head = "HTTP/1.1 101 " + h.reason + "\r\n";
  append_end_to_end(head, h.headers, {});
  append_field(head, "Via", "1.1 holdfast");
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
