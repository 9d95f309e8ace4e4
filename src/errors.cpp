#include "holdfast/errors.hpp"

namespace holdfast {

ErrorInfo describe(ProxyError e) noexcept {
  switch (e) {
    case ProxyError::none: return {0, "ok", ErrorSide::internal};
    case ProxyError::bad_request: return {400, "bad request", ErrorSide::downstream};
    case ProxyError::head_too_large: return {431, "request header fields too large", ErrorSide::downstream};
    case ProxyError::uri_too_long: return {414, "uri too long", ErrorSide::downstream};
    case ProxyError::not_implemented: return {501, "method not implemented", ErrorSide::downstream};
    case ProxyError::request_timeout: return {408, "request head timeout", ErrorSide::downstream};
    case ProxyError::connect_refused: return {502, "upstream connect refused", ErrorSide::upstream};
    case ProxyError::connect_timeout: return {504, "upstream connect timeout", ErrorSide::upstream};
    case ProxyError::connect_failed: return {502, "upstream connect failed", ErrorSide::upstream};
    case ProxyError::send_timeout: return {504, "upstream send timeout", ErrorSide::upstream};
    case ProxyError::send_failed: return {502, "upstream send failed", ErrorSide::upstream};
    case ProxyError::read_timeout: return {504, "upstream read timeout", ErrorSide::upstream};
    case ProxyError::closed_before_response: return {502, "upstream closed the connection before responding", ErrorSide::upstream};
    case ProxyError::bad_response: return {502, "upstream sent an invalid response", ErrorSide::upstream};
    case ProxyError::closed_mid_response: return {0, "upstream closed the connection mid-response", ErrorSide::upstream};
    case ProxyError::no_server: return {503, "no upstream server available", ErrorSide::internal};
    case ProxyError::queue_full: return {503, "upstream queue full", ErrorSide::internal};
    case ProxyError::queue_timeout: return {503, "upstream queue timeout", ErrorSide::internal};
    case ProxyError::no_route: return {404, "no route", ErrorSide::internal};
  }
  return {500, "internal error", ErrorSide::internal};
}

ProxyError request_parse_error(HttpParser::Failure f) noexcept {
  switch (f) {
    case HttpParser::Failure::head_too_large: return ProxyError::head_too_large;
    case HttpParser::Failure::uri_too_long: return ProxyError::uri_too_long;
    case HttpParser::Failure::none:
    case HttpParser::Failure::bad_message: break;
  }
  return ProxyError::bad_request;
}

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
  }
}

std::string error_response(int status, std::string_view text, std::string_view policy, bool head_only) {
  std::string body = std::to_string(status) + " " + std::string(text) + "\n";
  std::string out;
  out.reserve(160 + body.size());
  out += "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) + "\r\n";
  out += "Content-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  // holdfast answers 503 only when no server can take the request now; say
  // when to come back rather than let clients retry in a tight loop.
  if (status == 503) out += "Retry-After: 1\r\n";
  out += policy;
  out += "\r\n";
  if (!head_only) out += body;
  return out;
}

}  // namespace holdfast
