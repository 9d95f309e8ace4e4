#include "holdfast/http1_encode.hpp"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace holdfast {

namespace {
// When a field's name and value are views of its line as received (a head
// parsed in place, HeaderList::stage) written "name: value" or "name:value",
// the length of that line; otherwise 0 (the field is written field by field,
// with one space). The separator is checked, not assumed: a field added
// later lives elsewhere in the store.
std::size_t received_line_length(const HeaderField& h) noexcept {
  if (h.value.empty() || h.name.empty()) return 0;
  const char* colon = h.name.data() + h.name.size();
  const auto gap = h.value.data() - colon;
  if ((gap == 2 && colon[0] == ':' && colon[1] == ' ') || (gap == 1 && colon[0] == ':'))
    return h.name.size() + static_cast<std::size_t>(gap) + h.value.size();
  return 0;
}
}  // namespace

char* write_content_length(char* p, std::uint64_t n) noexcept {
  p = write_bytes(p, "Content-Length: ");
  p = std::to_chars(p, p + 20, n).ptr;
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

void append_field(std::string& out, std::string_view name, std::string_view value) {
  // One growth of the string, then the cursor writer.
  std::size_t at = out.size();
  out.resize(at + field_room(name, value));
  write_field(out.data() + at, name, value);
}

std::size_t end_to_end_room(const HeaderList& headers) noexcept {
  std::size_t room = 0;
  for (const auto& h : headers) room += field_room(h.name, h.value);
  return room;
}

char* write_end_to_end(char* p, const HeaderList& headers, std::initializer_list<std::string_view> skip) {
  // The tokens of the Connection fields are collected once as views; a head
  // with more of them than fit here falls back to the copied token list.
  constexpr std::size_t kHeld = 8;
  std::string_view held_tokens[kHeld];
  std::size_t held = 0;
  bool spilled = false;
  for (const auto& h : headers) {
    if (iequals(h.name, "connection")) {
      for (std::string_view rest = h.value, item; !spilled && next_list_item(rest, item);) {
        if (held < kHeld) held_tokens[held++] = item;
        else spilled = true;
      }
    }
  }
  std::vector<std::string> tokens;
  if (spilled) tokens = connection_tokens(headers);
  auto named_by_connection = [&](std::string_view name) {
    if (spilled) return has_token(tokens, name);
    for (std::size_t i = 0; i < held; ++i)
      if (iequals(held_tokens[i], name)) return true;
    return false;
  };
  // Most fields are kept, and are known to be without a comparison: bit n
  // of `compare` is set when a dropped name may be n bytes long (the fixed
  // hop-by-hop set, the names to skip, the names Connection lists). A name
  // of 64 bytes or more is always compared.
  std::uint64_t compare = kFixedHopByHopLengths;
  auto note = [&](std::string_view name) {
    if (name.size() < 64) compare |= std::uint64_t{1} << name.size();
  };
  for (auto s : skip) note(s);
  for (std::size_t i = 0; i < held; ++i) note(held_tokens[i]);
  if (spilled) compare = ~std::uint64_t{0};
  auto dropped = [&](std::string_view name) {
    if ((is_fixed_hop_by_hop(name) || (held > 0 && named_by_connection(name))) && !iequals(name, "host")) return true;
    for (auto s : skip)
      if (iequals(name, s)) return true;
    return false;
  };
  for (const auto& h : headers) {
    const std::size_t n = h.name.size();
    if ((n >= 64 || ((compare >> n) & 1) != 0) && dropped(h.name)) continue;
    if (std::size_t line = received_line_length(h)) {
      // Parsed in place: the line's own bytes go as one range.
      std::memcpy(p, h.name.data(), line);
      p += line;
      *p++ = '\r';
      *p++ = '\n';
    } else {
      p = write_field(p, h.name, h.value);
    }
  }
  return p;
}

void append_end_to_end(std::string& out, const HeaderList& headers, std::initializer_list<std::string_view> skip) {
  // Room for every field is made once (the unused rest is cut at the end),
  // and the kept fields are copied in through a cursor.
  const std::size_t start = out.size();
  out.resize(start + end_to_end_room(headers));
  char* p = write_end_to_end(out.data() + start, headers, skip);
  out.resize(static_cast<std::size_t>(p - out.data()));
}

void append_chunk_header(std::string& out, std::size_t len) {
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%zx\r\n", len);
  out.append(buf, static_cast<std::size_t>(n));
}

void add_chunk_header(evbuffer* out, std::size_t len) {
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%zx\r\n", len);
  evbuffer_add(out, buf, static_cast<std::size_t>(n));
}

void append_last_chunk(std::string& out, const HeaderList& trailers) {
  out += "0\r\n";
  append_end_to_end(out, trailers, {"content-length"});
  out += "\r\n";
}

bool is_http11(const MessageHead& h) noexcept {
  return h.version_major > 1 || (h.version_major == 1 && h.version_minor >= 1);
}

bool is_idempotent(const MessageHead& h) noexcept {
  static constexpr std::string_view methods[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
  for (auto m : methods)
    if (h.method == m) return true;
  return find_header(h.headers, "idempotency-key") != nullptr;
}

const std::string_view* allowed_upgrade(const MessageHead& h, const std::vector<std::string>& allowed) {
  // Upgrade is rare: looked for first.
  if (allowed.empty()) return nullptr;
  const std::string_view* value = find_header(h.headers, "upgrade");
  if (!value || !connection_has_token(h.headers, "upgrade")) return nullptr;
  int protocols = 0;
  for (std::string_view rest = *value, item; next_list_item(rest, item);) {
    auto name = item.substr(0, item.find('/'));  // "websocket", "foo/2"
    bool ok = !iequals(name, "h2c");
    if (ok) {
      ok = false;
      for (const auto& a : allowed)
        if (iequals(a, name)) ok = true;
    }
    if (!ok) return nullptr;
    ++protocols;
  }
  return protocols > 0 ? value : nullptr;
}

std::string encode_request_head(const MessageHead& h, const ForwardInfo& info) {
  std::string out;
  encode_request_head(h, info, out);
  return out;
}

void encode_request_head(const MessageHead& h, const ForwardInfo& info, std::string& out) {
  // One pass finds Host and sizes the X-Forwarded-For chain so far; the head
  // is then written through a cursor into a string sized once for its
  // longest form, and cut to what was written.
  const std::string_view* host = nullptr;
  std::size_t chain = 0;
  for (const auto& f : h.headers) {
    if (!host && iequals(f.name, "host")) host = &f.value;
    else if (iequals(f.name, "x-forwarded-for") && !f.value.empty()) chain += f.value.size() + 2;
  }
  static constexpr std::string_view kProto = "\r\nX-Forwarded-Proto: http\r\n";
  static constexpr std::string_view kKeepAlive = "Connection: keep-alive\r\n";
  static constexpr std::string_view kUpgrade = "Connection: upgrade\r\n";
  std::string te;
  if (h.chunked) te = chunked_coding_list(h.headers);
  // Host or X-Forwarded-Host, Upgrade with Connection (or Connection
  // alone), and Transfer-Encoding or Content-Length: the longest of each.
  const std::size_t room =
      h.method.size() + 1 + h.target.size() + 11 + end_to_end_room(h.headers) +
      (host ? field_room("X-Forwarded-Host", *host) : field_room("Host", info.default_host)) + 17 + chain +
      info.client_ip.size() + kProto.size() + kViaField.size() + field_room("Upgrade", info.upgrade) +
      kKeepAlive.size() + std::max(field_room("Transfer-Encoding", te), kContentLengthRoom) + 2;
  out.resize(room);
  char* const start = out.data();
  char* p = write_bytes(start, h.method);
  *p++ = ' ';
  p = write_bytes(p, h.target);
  p = write_bytes(p, " HTTP/1.1\r\n");
  p = write_end_to_end(p, h.headers, {"content-length", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"});
  if (!host) p = write_field(p, "Host", info.default_host);
  // X-Forwarded-For: the chain so far, then the address holdfast saw.
  p = write_bytes(p, "X-Forwarded-For: ");
  if (chain != 0)
    for (const auto& f : h.headers)
      if (iequals(f.name, "x-forwarded-for") && !f.value.empty()) {
        p = write_bytes(p, f.value);
        p = write_bytes(p, ", ");
      }
  p = write_bytes(p, info.client_ip);
  p = write_bytes(p, kProto);
  if (host) p = write_field(p, "X-Forwarded-Host", *host);
  if (info.via) p = write_bytes(p, kViaField);
  if (!info.upgrade.empty()) {
    // Kept for this request only: the hop-by-hop rules hold for every other.
    p = write_field(p, "Upgrade", info.upgrade);
    p = write_bytes(p, kUpgrade);
  } else {
    // Persistence is the HTTP/1.1 default, but saying so is what makes some
    // backends (Apache httpd) state their idle timeout in Keep-Alive: timeout=.
    p = write_bytes(p, kKeepAlive);
  }
  if (h.chunked) p = write_field(p, "Transfer-Encoding", te);
  else if (h.has_content_length) p = write_content_length(p, h.content_length);
  p = write_bytes(p, "\r\n");
  assert(static_cast<std::size_t>(p - start) <= room);
  out.resize(static_cast<std::size_t>(p - start));
}

}  // namespace holdfast
