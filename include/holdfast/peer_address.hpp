// A client's address as accepted, kept in 20 bytes (every byte of a client
// connection is paid once per idle keep-alive connection) and written out as
// text only when something needs it: a log line, X-Forwarded-For, the hash
// of a client-IP balancer, the access log.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string_view>

namespace holdfast {

class PeerAddress {
 public:
  // The text of one address, held by value (no allocation): "ip:port" or
  // "[ip6]:port" ("unknown:0" for other families), and the address part
  // without brackets. Views into it live as long as the Text.
  struct Text {
    char buf[56];  // "[" + 45 + "]:" + 5 at most
    std::uint8_t len = 0;
    std::uint8_t ip_begin = 0;
    std::uint8_t ip_len = 0;
    std::string_view full() const noexcept { return {buf, len}; }
    std::string_view ip() const noexcept { return {buf + ip_begin, ip_len}; }
  };

  PeerAddress() = default;
  explicit PeerAddress(const sockaddr* addr) noexcept;

  Text text() const noexcept;

 private:
  std::uint8_t addr_[16]{};  // network order: 4 bytes for IPv4, 16 for IPv6
  std::uint16_t port_ = 0;   // host order
  std::uint8_t family_ = 0;  // 4, 6, or 0: unknown
};

}  // namespace holdfast
