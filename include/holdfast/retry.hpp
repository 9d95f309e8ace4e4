// Whether a request whose upstream attempt failed may be sent again: one pure
// function of what is known about the attempt, so that the rule is written
// once and unit-tested case by case. The Exchange decides whether to act on
// the answer (retry budget, another server); this only says what is safe.
#pragma once

#include <cstdint>

#include "holdfast/errors.hpp"
#include "holdfast/phase.hpp"

namespace holdfast {

struct AttemptFacts {
  Phase phase = Phase::connecting;      // where the exchange was when the attempt failed
  ProxyError error = ProxyError::none;
  bool reused = false;                  // the connection came from the pool
  std::uint64_t bytes_accepted = 0;     // request bytes the kernel took on this connection
  bool response_bytes_seen = false;     // any byte of a response arrived on it
  bool idempotent = false;              // by method, or carries Idempotency-Key
  bool replay_complete = false;         // every request byte sent so far is still held
};

enum class RetryClass {
  never,       // the backend may have acted on it, or it cannot be replayed
  unsent,      // no byte of it reached a backend: safe for any method
  idempotent,  // sent on a reused connection that died before any response
               // (the keep-alive race): safe only for idempotent requests
};

RetryClass classify_retry(const AttemptFacts& facts) noexcept;

const char* retry_class_name(RetryClass c) noexcept;

}  // namespace holdfast
