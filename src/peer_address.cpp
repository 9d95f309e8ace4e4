#include "holdfast/peer_address.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>

namespace holdfast {

namespace {
// Decimal digits of v (at most 65535) at p; returns the end. to_chars
// writes two digits per step from a table.
char* put_decimal(char* p, unsigned v) noexcept { return std::to_chars(p, p + 5, v).ptr; }

// "0" to "255", each in 4 bytes: up to three digits, then their count. An
// IPv4 address (once per request, for X-Forwarded-For) is then four 4-byte
// copies instead of four runs of to_chars.
struct OctetTexts {
  char text[256][4];
};
constexpr OctetTexts make_octet_texts() {
  OctetTexts t{};
  for (unsigned v = 0; v < 256; ++v) {
    char* e = t.text[v];
    unsigned n = 0;
    if (v >= 100) e[n++] = static_cast<char>('0' + v / 100);
    if (v >= 10) e[n++] = static_cast<char>('0' + v / 10 % 10);
    e[n++] = static_cast<char>('0' + v % 10);
    e[3] = static_cast<char>(n);
  }
  return t;
}
constexpr OctetTexts kOctetTexts = make_octet_texts();

// The octet's digits at p (the 4th byte copied is scratch, overwritten by
// what follows); returns the end of the digits.
char* put_octet(char* p, std::uint8_t v) noexcept {
  const char* e = kOctetTexts.text[v];
  std::memcpy(p, e, 4);
  return p + e[3];
}
}  // namespace

PeerAddress::PeerAddress(const sockaddr* addr) noexcept {
  if (addr->sa_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(addr);
    std::memcpy(addr_, &a->sin_addr, 4);
    port_ = ntohs(a->sin_port);
    family_ = 4;
  } else if (addr->sa_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(addr);
    std::memcpy(addr_, &a->sin6_addr, 16);
    port_ = ntohs(a->sin6_port);
    family_ = 6;
  }
}

PeerAddress::Text PeerAddress::text() const noexcept {
  Text t;
  char* p = t.buf;
  if (family_ == 4) {
    // Written by hand: this runs once per request (X-Forwarded-For).
    for (int i = 0; i < 4; ++i) {
      if (i > 0) *p++ = '.';
      p = put_octet(p, addr_[i]);
    }
    t.ip_len = static_cast<std::uint8_t>(p - t.buf);
  } else if (family_ == 6) {
    *p++ = '[';
    t.ip_begin = 1;
    inet_ntop(AF_INET6, addr_, p, INET6_ADDRSTRLEN);
    p += std::strlen(p);
    t.ip_len = static_cast<std::uint8_t>(p - t.buf - 1);
    *p++ = ']';
  } else {
    std::memcpy(p, "unknown", 7);
    p += 7;
    t.ip_len = 7;
  }
  *p++ = ':';
  p = put_decimal(p, port_);
  t.len = static_cast<std::uint8_t>(p - t.buf);
  return t;
}

}  // namespace holdfast
