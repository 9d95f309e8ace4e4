#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>

#include <cstring>
#include <string>

#include "holdfast/peer_address.hpp"

using namespace holdfast;

TEST_CASE("a peer address is written as ip:port, its ip part apart") {
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(54321);
  inet_pton(AF_INET, "192.168.100.255", &v4.sin_addr);
  auto t = PeerAddress(reinterpret_cast<const sockaddr*>(&v4)).text();
  CHECK(t.full() == "192.168.100.255:54321");
  CHECK(t.ip() == "192.168.100.255");

  // Octets of one, two and three digits, each boundary.
  v4.sin_port = htons(9);
  inet_pton(AF_INET, "9.10.99.100", &v4.sin_addr);
  t = PeerAddress(reinterpret_cast<const sockaddr*>(&v4)).text();
  CHECK(t.full() == "9.10.99.100:9");
  CHECK(t.ip() == "9.10.99.100");
  for (unsigned v = 0; v < 256; ++v) {
    const std::uint32_t a = htonl((v << 24) | (v << 16) | (v << 8) | v);
    std::memcpy(&v4.sin_addr, &a, 4);
    const std::string d = std::to_string(v);
    CHECK(PeerAddress(reinterpret_cast<const sockaddr*>(&v4)).text().ip() == d + "." + d + "." + d + "." + d);
  }

  v4.sin_port = htons(0);
  inet_pton(AF_INET, "0.0.0.0", &v4.sin_addr);
  t = PeerAddress(reinterpret_cast<const sockaddr*>(&v4)).text();
  CHECK(t.full() == "0.0.0.0:0");
  CHECK(t.ip() == "0.0.0.0");

  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons(65535);
  inet_pton(AF_INET6, "2001:db8::1", &v6.sin6_addr);
  t = PeerAddress(reinterpret_cast<const sockaddr*>(&v6)).text();
  CHECK(t.full() == "[2001:db8::1]:65535");
  CHECK(t.ip() == "2001:db8::1");

  // The longest text there is fits.
  inet_pton(AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", &v6.sin6_addr);
  t = PeerAddress(reinterpret_cast<const sockaddr*>(&v6)).text();
  CHECK(t.ip().size() <= 45);
  CHECK(t.full().size() == t.ip().size() + 8);

  sockaddr other{};
  other.sa_family = AF_UNIX;
  t = PeerAddress(&other).text();
  CHECK(t.full() == "unknown:0");
  CHECK(t.ip() == "unknown");
}
