// Header fields as received, and the RFC 9110 section 7.6.1 rules that decide
// which of them may cross from one connection to the other.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "holdfast/duration.hpp"
#include "holdfast/header_list.hpp"

namespace holdfast {

// ASCII case-insensitive equality. Inline: it runs for every field of every
// head, mostly to find that the lengths differ.
inline bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x == y) continue;
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

// Takes the next element of a comma-separated field value (RFC 9110 5.6.1)
// off the front of `rest` into `item`, without the whitespace around it;
// empty elements are skipped. False once none is left. Inline: hop-by-hop
// filtering runs it over the Connection field of every head.
inline bool next_list_item(std::string_view& rest, std::string_view& item) noexcept {
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    item = trim_ows(item);
    if (!item.empty()) return true;
  }
  return false;
}

// Lower-cased tokens of every Connection field (e.g. "close", "keep-alive",
// "x-secret"). Tokens name further hop-by-hop fields.
std::vector<std::string> connection_tokens(const HeaderList& headers);

bool has_token(const std::vector<std::string>& tokens, std::string_view token) noexcept;

// True for the fixed hop-by-hop set (Connection, Keep-Alive, Proxy-Connection,
// TE, Trailer, Transfer-Encoding, Upgrade) and for any field named in
// `connection_tokens`. Content-Length is not hop-by-hop, but holdfast frames
// each leg itself, so callers treat it separately.
bool is_hop_by_hop(std::string_view name, const std::vector<std::string>& tokens) noexcept;

// The fixed part of that set alone.
bool is_fixed_hop_by_hop(std::string_view name) noexcept;
// Bit n is set when a name of the fixed set is n bytes long: a field whose
// name has none of these lengths is not in it, without a comparison.
inline constexpr std::uint64_t kFixedHopByHopLengths =
    (std::uint64_t{1} << 2) | (std::uint64_t{1} << 7) | (std::uint64_t{1} << 10) | (std::uint64_t{1} << 16) |
    (std::uint64_t{1} << 17);

// Whether the comma-separated `list` holds `token` (case-insensitive).
bool list_has_token(std::string_view list, std::string_view token) noexcept;

// Whether any Connection field names `token`: has_token(connection_tokens(h), t)
// without building the token list.
bool connection_has_token(const HeaderList& headers, std::string_view token) noexcept;

// First value of `name`, or nullptr; it points into `headers`.
const std::string_view* find_header(const HeaderList& headers, std::string_view name) noexcept;

// The transfer codings of a message other than a final "chunked", joined
// ("gzip" for "gzip, chunked"). Transfer-Encoding is hop-by-hop, but its
// other codings describe the content and must survive re-framing.
std::string codings_before_chunked(const HeaderList& headers);

// How many of the transfer codings of all Transfer-Encoding fields are
// chunked (a coding is its token before any ';' parameters).
std::size_t count_chunked_codings(const HeaderList& headers);

// The Transfer-Encoding value for a leg that holdfast frames as chunked.
std::string chunked_coding_list(const HeaderList& headers);

// Parameters of a `Keep-Alive: timeout=N, max=M` field (RFC 2068 19.7.1.1),
// as backends such as Node, Apache and nginx send it.
struct KeepAliveHint {
  std::optional<Millis> timeout;
  std::optional<std::uint64_t> max;
};
KeepAliveHint parse_keep_alive(const HeaderList& headers);

}  // namespace holdfast
