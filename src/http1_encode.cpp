#include "holdfast/http1_encode.hpp"

#include <cassert>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace holdfast {

namespace {
// An empty field value may be a view with no data at all: memcpy must not see it.
void copy(char*& to, std::string_view from) noexcept {
  if (from.empty()) return;
  std::memcpy(to, from.data(), from.size());
  to += from.size();
}
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

void append_field(std::string& out, std::string_view name, std::string_view value) {
  // One growth of the string and four copies, instead of four appends.
  std::size_t at = out.size();
  out.resize(at + name.size() + value.size() + 4);
  char* p = out.data() + at;
  copy(p, name);
  *p++ = ':';
  *p++ = ' ';
  copy(p, value);
  *p++ = '\r';
  *p = '\n';
}

std::size_t end_to_end_room(const HeaderList& headers) noexcept {
  std::size_t room = 0;
  for (const auto& h : headers) room += h.name.size() + h.value.size() + 4;
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
    if (h.name.size() == 10 && iequals(h.name, "connection")) {
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
    } else {
      copy(p, h.name);
      *p++ = ':';
      *p++ = ' ';
      copy(p, h.value);
    }
    *p++ = '\r';
    *p++ = '\n';
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
  static constexpr std::string_view kVia = "Via: 1.1 holdfast\r\n";
  static constexpr std::string_view kKeepAlive = "Connection: keep-alive\r\n";
  static constexpr std::string_view kUpgrade = "Connection: upgrade\r\n";
  std::string te;
  if (h.chunked) te = chunked_coding_list(h.headers);
  const std::size_t room = h.method.size() + 1 + h.target.size() + 11 + end_to_end_room(h.headers) +
                           (host ? 20 + host->size() : 8 + info.default_host.size()) + 17 + chain +
                           info.client_ip.size() + kProto.size() + kVia.size() + 11 + info.upgrade.size() +
                           kKeepAlive.size() + 21 + te.size() + 20 + 2;
  std::string out;
  out.resize(room);
  char* const start = out.data();
  auto put = [](char* p, std::string_view v) {
    if (!v.empty()) std::memcpy(p, v.data(), v.size());
    return p + v.size();
  };
  auto field = [&](char* p, std::string_view name, std::string_view value) {
    p = put(p, name);
    p = put(p, ": ");
    p = put(p, value);
    return put(p, "\r\n");
  };
  char* p = put(start, h.method);
  *p++ = ' ';
  p = put(p, h.target);
  p = put(p, " HTTP/1.1\r\n");
  p = write_end_to_end(p, h.headers, {"content-length", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"});
  if (!host) p = field(p, "Host", info.default_host);
  // X-Forwarded-For: the chain so far, then the address holdfast saw.
  p = put(p, "X-Forwarded-For: ");
  if (chain != 0)
    for (const auto& f : h.headers)
      if (iequals(f.name, "x-forwarded-for") && !f.value.empty()) {
        p = put(p, f.value);
        p = put(p, ", ");
      }
  p = put(p, info.client_ip);
  p = put(p, kProto);
  if (host) p = field(p, "X-Forwarded-Host", *host);
  if (info.via) p = put(p, kVia);
  if (!info.upgrade.empty()) {
    // Kept for this request only: the hop-by-hop rules hold for every other.
    p = field(p, "Upgrade", info.upgrade);
    p = put(p, kUpgrade);
  } else {
    // Persistence is the HTTP/1.1 default, but saying so is what makes some
    // backends (Apache httpd) state their idle timeout in Keep-Alive: timeout=.
    p = put(p, kKeepAlive);
  }
  if (h.chunked) {
    p = field(p, "Transfer-Encoding", te);
  } else if (h.has_content_length) {
    p = put(p, "Content-Length: ");
    p = std::to_chars(p, p + 20, h.content_length).ptr;
    p = put(p, "\r\n");
  }
  p = put(p, "\r\n");
  assert(static_cast<std::size_t>(p - start) <= room);
  out.resize(static_cast<std::size_t>(p - start));
  return out;
}

}  // namespace holdfast
