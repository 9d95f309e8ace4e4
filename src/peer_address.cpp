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
      p = put_decimal(p, addr_[i]);
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
