#include "holdfast/duration.hpp"

#include <charconv>

namespace holdfast {

namespace {
std::optional<std::uint64_t> leading_number(std::string_view text, std::size_t& used) {
  std::uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr == text.data()) return std::nullopt;
  used = static_cast<std::size_t>(ptr - text.data());
  return value;
}
}  // namespace

std::optional<Millis> parse_duration(std::string_view text) {
  std::size_t used = 0;
  auto n = leading_number(text, used);
  if (!n) return std::nullopt;
  std::string_view unit = text.substr(used);
  std::uint64_t factor = 0;
  if (unit == "ms") factor = 1;
  else if (unit == "s") factor = 1000;
  else if (unit == "m") factor = 60'000;
  else if (unit == "h") factor = 3'600'000;
  else return std::nullopt;
  if (*n > (1ULL << 40) / factor) return std::nullopt;  // absurdly long: refuse rather than overflow
  return Millis(static_cast<Millis::rep>(*n * factor));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::size_t used = 0;
  auto n = leading_number(text, used);
  if (!n) return std::nullopt;
  std::string_view unit = text.substr(used);
  std::uint64_t factor = 0;
  if (unit.empty()) factor = 1;
  else if (unit == "k" || unit == "K") factor = 1024;
  else if (unit == "m" || unit == "M") factor = 1024 * 1024;
  else if (unit == "g" || unit == "G") factor = 1024ULL * 1024 * 1024;
  else return std::nullopt;
  if (*n > (1ULL << 50) / factor) return std::nullopt;
  return *n * factor;
}

std::string format_duration(Millis d) {
  auto ms = d.count();
  if (ms == 0) return "0s";
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string format_size(std::uint64_t bytes) {
  if (bytes != 0 && bytes % (1024 * 1024) == 0) return std::to_string(bytes / (1024 * 1024)) + "m";
  if (bytes != 0 && bytes % 1024 == 0) return std::to_string(bytes / 1024) + "k";
  return std::to_string(bytes);
}

}  // namespace holdfast
