// What one finished exchange reports. The access log line (text or JSON) and
// the per-server figures (status class, bytes, timings) are both made from
// this one record, so the log and /metrics cannot disagree.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "holdfast/config.hpp"

namespace holdfast {

// Timings an exchange collects on the way; a negative value means "did not happen".
struct ExchangeTimes {
  double connect = -1;     // seconds to connect the new connection this exchange opened (none when reused)
  double first_byte = -1;  // seconds from the request head to the first response byte from the upstream
};

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Borrowed views: valid for the duration of the call that receives the record.
struct ExchangeRecord {
  std::string_view peer;
  std::string_view method;      // empty: no request line was read (a refused head)
  std::string_view target;
  int version_major = 1;
  int version_minor = 1;
  int status = 0;
  std::uint64_t bytes_in = 0;   // request bytes read from the client
  std::uint64_t bytes_out = 0;  // response bytes written to the client
  std::size_t group = 0;
  bool has_server = false;      // false: no upstream server was chosen
  std::size_t server = 0;
  bool reused = false;
  bool retried = false;
  ExchangeTimes times;
  double total = 0;             // seconds
};

// One access log line, without the newline. `upstream` and `server` are the
// group's name and the server's address ("-" when none was chosen).
std::string format_access(const ExchangeRecord& r, AccessFormat format, std::string_view upstream,
                          std::string_view server);

}  // namespace holdfast
