// Typed failures of an exchange, tagged with the side they came from, and the
// one table that maps them to the status a client sees.
#pragma once

#include <string>
#include <string_view>

#include "holdfast/http_message.hpp"

namespace holdfast {

enum class ProxyError {
  none,
  // Downstream (the client's request was at fault)
  bad_request,
  head_too_large,
  uri_too_long,
  not_implemented,       // CONNECT and the like
  request_timeout,       // the head did not arrive within header_timeout
  // Upstream
  connect_refused,
  connect_timeout,
  connect_failed,        // any other connect error (unreachable, reset during connect)
  send_timeout,
  send_failed,
  read_timeout,
  closed_before_response,
  bad_response,
  closed_mid_response,
  no_server,             // every server of the upstream is down (503 + Retry-After)
  queue_full,            // every server at max_conns and the queue full (503)
  queue_timeout,         // waited in the queue past its timeout (503)
  // Internal
  no_route,
};

enum class ErrorSide { downstream, upstream, internal };

struct ErrorInfo {
  int status;              // what the client is answered, 0 when it cannot be answered
  std::string_view text;   // short, ends up in the error page and the log
  ErrorSide side;
};

ErrorInfo describe(ProxyError e) noexcept;

// The error a request refused by its parser is answered with, wherever in
// the request (head or trailer section) the parser stopped: 414, 431 or 400.
ProxyError request_parse_error(HttpParser::Failure f) noexcept;

// Reason phrase for the statuses holdfast produces itself.
std::string_view reason_phrase(int status) noexcept;

// A short text/plain error response: "502 upstream connect refused\n".
// `policy` holds the Connection (and Keep-Alive) lines, each ending in CRLF.
// `head_only` for an answer to HEAD: the same head, no body (RFC 9112 6.3),
// or the client would read the body as the start of the next response.
std::string error_response(int status, std::string_view text, std::string_view policy, bool head_only = false);

}  // namespace holdfast
