// Counters, declared once: the shutdown log line, the tests and (later) the
// metrics endpoint all read these names. Each worker owns its own Stats and
// only that worker's thread writes it; totals are summed after the workers
// stopped (or, later, by reading relaxed atomics).
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace holdfast {

#define HOLDFAST_COUNTERS(X)                                                        \
  X(client_connections)   /* accepted client connections */                        \
  X(requests)             /* requests read from clients */                         \
  X(responses_4xx_local)  /* requests refused by holdfast itself */                \
  X(upstream_errors)      /* exchanges that ended in an upstream failure */        \
  X(upstream_connects)    /* new upstream connections opened */                    \
  X(upstream_reused)      /* requests sent on a pooled connection */               \
  X(retries)              /* requests sent again on a fresh connection */          \
  X(retries_refused)      /* failed on a reused connection, not safe to resend */  \
  X(hints_learned)        /* a backend stated a new Keep-Alive: timeout=   */\
  X(evict_idle_timeout)   /* idle pooled connection reached its idle deadline */   \
  X(evict_hint)           /* not pooled: backend hint left no safe idle time */    \
  X(evict_max_requests)   /* request budget (config or max=) spent */              \
  X(evict_lifetime)       /* max_lifetime reached */                               \
  X(evict_closed_by_backend) /* EOF or bytes from the backend while idle */       \
  X(evict_dead_at_checkout)  /* found dead by the peek before reuse */             \
  X(evict_pool_full)      /* max_idle reached */                                   \
  X(evict_not_reusable)   /* framing, close token or error forbade reuse */        \
  X(nonidempotent_skipped) /* pooled connection too close to its deadline for a POST */

enum class Counter : std::size_t {
#define HOLDFAST_ENUM(name) name,
  HOLDFAST_COUNTERS(HOLDFAST_ENUM)
#undef HOLDFAST_ENUM
      count_
};

struct Stats {
  std::array<std::uint64_t, static_cast<std::size_t>(Counter::count_)> values{};
  void add(Counter c, std::uint64_t n = 1) noexcept { values[static_cast<std::size_t>(c)] += n; }
  std::uint64_t get(Counter c) const noexcept { return values[static_cast<std::size_t>(c)]; }
  Stats& operator+=(const Stats& other) noexcept;
  // "name=value name=value ..." in declaration order.
  std::string format() const;
};

}  // namespace holdfast
