// HTTP/1.1 serialisation shared by both legs: heads, chunk framing, and the
// hop-by-hop filter (RFC 9110 7.6.1) applied while copying fields across.
// Pure functions over strings and evbuffers; no connection state.
#pragma once

#include <event2/buffer.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>

#include "holdfast/headers.hpp"
#include "holdfast/http_message.hpp"

namespace holdfast {

// Cursor writers for heads written into room their caller sized: each
// writes at `p` and returns where it stopped.
inline char* write_bytes(char* p, std::string_view s) noexcept {
  // An empty view may have no data at all: memcpy must not see it.
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  return p + s.size();
}
// "name: value" and CRLF, field_room(name, value) bytes.
constexpr std::size_t field_room(std::string_view name, std::string_view value) noexcept {
  return name.size() + value.size() + 4;
}
inline char* write_field(char* p, std::string_view name, std::string_view value) noexcept {
  p = write_bytes(p, name);
  *p++ = ':';
  *p++ = ' ';
  p = write_bytes(p, value);
  *p++ = '\r';
  *p++ = '\n';
  return p;
}
// "Content-Length: n" and CRLF: at most kContentLengthRoom bytes.
inline constexpr std::size_t kContentLengthRoom = 16 + 20 + 2;
char* write_content_length(char* p, std::uint64_t n) noexcept;
// The Via field holdfast adds on either leg when configured to.
inline constexpr std::string_view kViaField = "Via: 1.1 holdfast\r\n";

void append_field(std::string& out, std::string_view name, std::string_view value);

// End-to-end fields of `headers`, minus hop-by-hop ones and minus the names
// in `skip` (fields the caller writes itself). Host is never dropped by a
// Connection token: routing used it and the backend must see it.
void append_end_to_end(std::string& out, const HeaderList& headers, std::initializer_list<std::string_view> skip);
// The same fields written at `p`, which must have end_to_end_room(headers)
// bytes of room; returns where they end. For a head written straight into
// an output buffer.
std::size_t end_to_end_room(const HeaderList& headers) noexcept;
char* write_end_to_end(char* p, const HeaderList& headers, std::initializer_list<std::string_view> skip);

void append_chunk_header(std::string& out, std::size_t len);
void add_chunk_header(evbuffer* out, std::size_t len);
// "0\r\n", the trailer fields that may cross, and the final CRLF.
void append_last_chunk(std::string& out, const HeaderList& trailers);

bool is_http11(const MessageHead& h) noexcept;
bool is_idempotent(const MessageHead& request) noexcept;

// What the proxy adds to a request it forwards.
struct ForwardInfo {
  std::string_view client_ip;      // appended to X-Forwarded-For
  std::string_view default_host;   // Host for a request that had none (HTTP/1.0)
  std::string_view upgrade;        // Upgrade value kept for this request (empty: none)
  bool via = false;                // add Via: 1.1 holdfast
};

// The request's Upgrade value when it asks to switch (Connection: upgrade)
// to protocols that are all in `allowed` (lower-case names; h2c never), or
// nullptr: the request is then forwarded without Upgrade like any other.
const std::string_view* allowed_upgrade(const MessageHead& request, const std::vector<std::string>& allowed);

// The request head sent upstream: origin request line as received, end-to-end
// fields, X-Forwarded-*, Via when asked, Connection: keep-alive, and the
// framing holdfast chose for the body.
std::string encode_request_head(const MessageHead& request, const ForwardInfo& info);
// The same head written over `out`, whose storage is reused when it is large
// enough (a worker's request heads take it from UpstreamRequest::spare_head).
void encode_request_head(const MessageHead& request, const ForwardInfo& info, std::string& out);

}  // namespace holdfast
