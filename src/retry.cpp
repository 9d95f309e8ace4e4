#include "holdfast/retry.hpp"

namespace holdfast {

std::string_view phase_name(Phase p) noexcept {
  switch (p) {
    case Phase::buffering: return "buffering";
    case Phase::connecting: return "connecting";
    case Phase::sending: return "sending";
    case Phase::awaiting_head: return "awaiting_head";
    case Phase::streaming: return "streaming";
    case Phase::done: return "done";
  }
  return "?";
}

// Decision table (first matching row wins):
//
//   phase streaming or done, or response bytes seen      never
//   replay copy incomplete                                never
//   connect error (refused, timeout, failed)              unsent
//   send failed / closed before response:
//     no request byte accepted by the kernel              unsent
//     reused connection, idempotent request               idempotent
//     otherwise (fresh connection: the backend's answer;
//       reused and not idempotent: may have been acted on) never
//   any other error (timeouts, invalid response)          never
RetryClass classify_retry(const AttemptFacts& f) noexcept {
  if (f.phase == Phase::streaming || f.phase == Phase::done || f.response_bytes_seen) return RetryClass::never;
  if (!f.replay_complete) return RetryClass::never;
  switch (f.error) {
    case ProxyError::connect_refused:
    case ProxyError::connect_timeout:
    case ProxyError::connect_failed:
      return RetryClass::unsent;
    case ProxyError::send_failed:
    case ProxyError::closed_before_response:
      if (f.bytes_accepted == 0) return RetryClass::unsent;
      if (f.reused && f.idempotent) return RetryClass::idempotent;
      return RetryClass::never;
    default:
      return RetryClass::never;
  }
}

const char* retry_class_name(RetryClass c) noexcept {
  switch (c) {
    case RetryClass::never: return "never";
    case RetryClass::unsent: return "unsent";
    case RetryClass::idempotent: return "idempotent";
  }
  return "?";
}

}  // namespace holdfast
