#include "holdfast/access_log.hpp"

#include <spdlog/fmt/fmt.h>

namespace holdfast {

namespace {

// JSON string body: the target and method came off the network, so every
// byte outside printable ASCII is escaped rather than trusted.
void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

void append_seconds(std::string& out, double seconds) {
  if (seconds < 0) out += "null";
  else out += fmt::format("{:.6f}", seconds);
}

}  // namespace

std::string format_access(const ExchangeRecord& r, AccessFormat format, std::string_view upstream,
                          std::string_view server) {
  const bool has_request = !r.method.empty();
  if (format == AccessFormat::text) {
    auto request = has_request ? fmt::format("{} {} HTTP/{}.{}", r.method, r.target, r.version_major, r.version_minor)
                               : std::string("-");
    return fmt::format("{} \"{}\" {} in={} out={} upstream={} reused={} time={:.3f}", r.peer, request, r.status,
                       r.bytes_in, r.bytes_out, server, r.reused ? 1 : 0, r.total);
  }
  std::string out;
  out.reserve(256 + r.target.size());
  out += "{\"client\":";
  append_json_string(out, r.peer);
  if (has_request) {
    out += ",\"method\":";
    append_json_string(out, r.method);
    out += ",\"target\":";
    append_json_string(out, r.target);
    out += fmt::format(",\"version\":\"{}.{}\"", r.version_major, r.version_minor);
  } else {
    out += ",\"method\":null,\"target\":null,\"version\":null";
  }
  out += fmt::format(",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"upstream\":", r.status, r.bytes_in,
                     r.bytes_out);
  if (r.has_server) append_json_string(out, upstream);
  else out += "null";
  out += ",\"server\":";
  if (r.has_server) append_json_string(out, server);
  else out += "null";
  out += fmt::format(",\"reused\":{},\"retried\":{},\"connect_time\":", r.reused, r.retried);
  append_seconds(out, r.times.connect);
  out += ",\"first_byte_time\":";
  append_seconds(out, r.times.first_byte);
  out += ",\"total_time\":";
  append_seconds(out, r.total);
  out += '}';
  return out;
}

}  // namespace holdfast
