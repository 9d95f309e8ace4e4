// Parsing and printing of the duration and size literals used in the config
// ("250ms", "5s", "2m", "1h"; "16k", "10m", "1g"). Pure functions, no I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace holdfast {

using Millis = std::chrono::milliseconds;

// Returns nullopt when `text` is not a non-negative integer followed by one
// of ms, s, m, h (a bare integer is refused: the unit must be explicit).
std::optional<Millis> parse_duration(std::string_view text);

// Returns nullopt unless `text` is a non-negative integer with an optional
// k, m or g suffix (powers of 1024).
std::optional<std::uint64_t> parse_size(std::string_view text);

// "1500ms", "2s", "1m30s" style; exact, so that --check round-trips.
std::string format_duration(Millis d);
std::string format_size(std::uint64_t bytes);

}  // namespace holdfast
