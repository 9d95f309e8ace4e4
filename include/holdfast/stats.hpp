// Counters, gauges and histograms, declared once: the shutdown log line,
// /metrics, /status, the status page and the tests all read these names.
//
// Ownership and threads: each Worker owns one Stats and only that worker's
// thread writes it. Every value is a std::atomic<uint64_t> that the owner
// updates with a relaxed load and store (one writer: no read-modify-write is
// needed) and that the admin thread reads with relaxed loads, so the data
// path never takes a lock. Figures read mid-update are at most one event
// behind; nothing needs them to agree with each other to the request.
//
// Slots: slot 0 holds worker-wide figures; slot 1 + i holds server i of the
// flat list of every upstream's servers (MetricsLayout). A figure's scope in
// the lists below says which slots it lives in.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace holdfast {

// X(id, scope, family, labels, help). Entries of one family are adjacent;
// `family` is the Prometheus name without the holdfast_ prefix.
#define HOLDFAST_COUNTERS(X)                                                                                      \
  X(client_connections, worker, "client_connections_accepted_total", "", "Client connections accepted.")         \
  X(requests, worker, "requests_total", "", "Requests read from clients.")                                      \
  X(responses_4xx_local, worker, "local_responses_total", "",                                                   \
    "Requests answered by holdfast itself before any upstream was chosen (malformed, refused).")                 \
  X(upstream_errors, worker, "upstream_errors_total", "", "Exchanges that ended in an upstream failure.")         \
  X(responses_1xx, server, "responses_total", "code=\"1xx\"",                                                   \
    "Exchanges by status class of the answer given to the client (including holdfast's own 502/504).")           \
  X(responses_2xx, server, "responses_total", "code=\"2xx\"", "")                                               \
  X(responses_3xx, server, "responses_total", "code=\"3xx\"", "")                                               \
  X(responses_4xx, server, "responses_total", "code=\"4xx\"", "")                                               \
  X(responses_5xx, server, "responses_total", "code=\"5xx\"", "")                                               \
  X(request_bytes, server, "request_bytes_total", "", "Request bytes received from clients (head and body).")     \
  X(response_bytes, server, "response_bytes_total", "", "Response bytes sent to clients (head and body).")        \
  X(upstream_connects, server, "upstream_connections_opened_total", "",                                   \
    "New upstream connections opened (connect attempts, failed ones included).")       \
  X(upstream_reused, server, "upstream_requests_reused_total", "", "Requests sent on a pooled (reused) connection.") \
  X(connect_refused, server, "upstream_connect_failures_total", "reason=\"refused\"",                            \
    "Upstream connects that failed, by reason.")                                                                 \
  X(connect_timeout, server, "upstream_connect_failures_total", "reason=\"timeout\"", "")                        \
  X(connect_error, server, "upstream_connect_failures_total", "reason=\"error\"", "")                            \
  X(retries_closed, server, "upstream_retries_total", "reason=\"closed_before_response\"",                       \
    "Requests sent again on a fresh connection after failing on a reused one, by failure.")                      \
  X(retries_send_failed, server, "upstream_retries_total", "reason=\"send_failed\"", "")                         \
  X(retries_refused, server, "upstream_retries_refused_total", "",                                              \
    "Requests that failed on a reused connection and were not safe to send again.")                             \
  X(hints_learned, server, "upstream_hints_learned_total", "",                                                  \
    "Keep-Alive: timeout= answers that changed the learned idle timeout.")                                       \
  X(idle_closes_learned, server, "upstream_idle_closes_learned_total", "",                                      \
    "Idle pooled connections the backend closed sooner than holdfast expected (the observed timeout went down).") \
  X(evict_idle_timeout, server, "pool_evictions_total", "reason=\"idle_timeout\"",                               \
    "Upstream connections the pool closed instead of reusing, by reason.")                                       \
  X(evict_hint, server, "pool_evictions_total", "reason=\"hint\"", "")                                          \
  X(evict_max_requests, server, "pool_evictions_total", "reason=\"max_requests\"", "")                          \
  X(evict_lifetime, server, "pool_evictions_total", "reason=\"lifetime\"", "")                                  \
  X(evict_closed_by_backend, server, "pool_evictions_total", "reason=\"closed_by_backend\"", "")                  \
  X(evict_dead_at_checkout, server, "pool_evictions_total", "reason=\"dead_at_checkout\"", "")                    \
  X(evict_pool_full, server, "pool_evictions_total", "reason=\"pool_full\"", "")                                \
  X(evict_not_reusable, server, "pool_evictions_total", "reason=\"not_reusable\"", "")                          \
  X(nonidempotent_skipped, server, "pool_evictions_total", "reason=\"nonidempotent_margin\"", "")               \
  X(tunnels_opened, worker, "tunnels_opened_total", "", "Upgrade tunnels opened (101 Switching Protocols relayed).") \
  X(tunnels_closed_client, worker, "tunnels_closed_total", "reason=\"client\"",                                  \
    "Upgrade tunnels ended, by what ended them (the side that closed first, idle timeout, error, shutdown).")     \
  X(tunnels_closed_backend, worker, "tunnels_closed_total", "reason=\"backend\"", "")                           \
  X(tunnels_closed_timeout, worker, "tunnels_closed_total", "reason=\"idle_timeout\"", "")                      \
  X(tunnels_closed_error, worker, "tunnels_closed_total", "reason=\"error\"", "")                               \
  X(tunnels_closed_shutdown, worker, "tunnels_closed_total", "reason=\"shutdown\"", "")                \
  X(failovers, server, "upstream_failovers_total", "",                                                          \
    "Requests moved to another server after an attempt on this one failed before any byte reached it.")         \
  X(ejections, server, "upstream_ejections_total", "",                                                          \
    "Times this server was taken out of rotation after consecutive failures (passive health).")                 \
  X(recoveries, server, "upstream_recoveries_total", "",                                                        \
    "Times this server came back into rotation: answered after an ejection, or passed its health checks.")      \
  X(check_failures, server, "upstream_health_check_failures_total", "", "Active health checks that failed.")     \
  X(no_server, worker, "upstream_unavailable_total", "",                                                        \
    "Requests answered 503 at once because every server of their upstream was down.")                           \
  X(queue_overflow, worker, "upstream_queue_rejections_total", "reason=\"overflow\"",                             \
    "Requests answered 503 because every server was at max_conns and the queue was full, or the wait too long.") \
  X(queue_timeout, worker, "upstream_queue_rejections_total", "reason=\"timeout\"", "")                        \
  X(reloads_ok, worker, "config_reloads_total", "result=\"ok\"",                                               \
    "Configuration reloads (SIGHUP, config file change, DNS answer change), by result.")                       \
  X(reloads_failed, worker, "config_reloads_total", "result=\"failed\"", "")                                 \
  X(dns_resolutions, worker, "dns_resolutions_total", "",                                                        \
    "Periodic lookups of upstream server host names (failed ones included).")                                     \
  X(dns_failures, worker, "dns_resolution_failures_total", "",                                                   \
    "Host name lookups that failed (timeout, SERVFAIL, NXDOMAIN, no address); the last good answer stays.")        \
  X(dns_changes, worker, "dns_changes_total", "", "Host name lookups whose addresses differed from those in use.") \
  X(spliced_response_bytes, worker, "spliced_bytes_total", "direction=\"response\"",                             \
    "Body bytes moved socket to socket with splice(2), by direction (response: backend to client).")              \
  X(spliced_request_bytes, worker, "spliced_bytes_total", "direction=\"request\"", "")

// X(id, scope, family, labels, aggregate over workers, scale to base unit, help)
#define HOLDFAST_GAUGES(X)                                                                                        \
  X(client_active, worker, "client_connections", "state=\"active\"", sum, 1.0,                                  \
    "Open client connections: active (reading a request or in an exchange) or idle (keep-alive).")               \
  X(client_idle, worker, "client_connections", "state=\"idle\"", sum, 1.0, "")                                   \
  X(client_parked, worker, "client_connections_parked", "", sum, 1.0,                                           \
    "Idle client connections parked after 100 ms without a byte: no event of their own (counted as idle too).") \
  X(tunnels_active, worker, "tunnels_active", "", sum, 1.0, "Upgrade tunnels open now.")                          \
  X(config_version, worker, "config_version", "", max, 1.0,                                                     \
    "Configuration version new requests use (1 at start, one more per reload that took effect).")             \
  X(upstream_active, server, "upstream_connections", "state=\"active\"", sum, 1.0,                              \
    "Open upstream connections: active (connecting or leased to an exchange) or idle (in the pool).")           \
  X(upstream_idle, server, "upstream_connections", "state=\"idle\"", sum, 1.0, "")                              \
  X(learned_timeout_ms, server, "upstream_learned_keepalive_timeout_seconds", "", max, 0.001,                   \
    "Idle timeout the server announced in Keep-Alive: timeout=N (largest over workers; absent until learned).") \
  X(observed_timeout_ms, server, "upstream_observed_keepalive_timeout_seconds", "", max, 0.001,                 \
    "Idle timeout inferred from the server's own closes of idle connections (largest over workers; absent until seen).") \
  X(connect_failing, server, "upstream_connect_failing", "", max, 1.0,                                          \
    "1 while the last connect attempt to this server failed (on any worker).") \
  X(server_up, server, "upstream_server_up", "", max, 1.0,                                                      \
    "1 while the server takes traffic; 0 while it is ejected (passive) or down by its health checks.")

// X(id, family, help); all per server, in seconds.
#define HOLDFAST_HISTOGRAMS(X)                                                                                    \
  X(connect_time, "upstream_connect_duration_seconds", "Time to establish a new upstream connection.")           \
  X(first_byte_time, "upstream_first_byte_seconds",                                                              \
    "From the request head read from the client to the first response byte from the upstream.")                 \
  X(exchange_time, "exchange_duration_seconds", "Whole exchange, from the request head to the end of the response.")

enum class Scope { worker, server };
enum class Aggregate { sum, max };

enum class Counter : std::size_t {
#define HOLDFAST_ENUM(id, ...) id,
  HOLDFAST_COUNTERS(HOLDFAST_ENUM)
      count_
};
enum class Gauge : std::size_t { HOLDFAST_GAUGES(HOLDFAST_ENUM) count_ };
enum class Histogram : std::size_t { HOLDFAST_HISTOGRAMS(HOLDFAST_ENUM) count_ };
#undef HOLDFAST_ENUM

constexpr std::size_t kCounters = static_cast<std::size_t>(Counter::count_);
constexpr std::size_t kGauges = static_cast<std::size_t>(Gauge::count_);
constexpr std::size_t kHistograms = static_cast<std::size_t>(Histogram::count_);
// Upper bounds of the histogram buckets, in seconds (+Inf follows).
inline constexpr double kBucketBounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                           0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0, 30.0};
constexpr std::size_t kBuckets = sizeof kBucketBounds / sizeof kBucketBounds[0];
// Cells per histogram: one per bucket (not cumulative), +Inf, sum in nanoseconds.
constexpr std::size_t kHistogramCells = kBuckets + 2;

struct CounterInfo { const char* id; Scope scope; const char* family; const char* labels; const char* help; };
struct GaugeInfo {
  const char* id; Scope scope; const char* family; const char* labels; Aggregate aggregate; double scale; const char* help;
};
struct HistogramInfo { const char* id; const char* family; const char* help; };
const CounterInfo& info(Counter c);
const GaugeInfo& info(Gauge g);
const HistogramInfo& info(Histogram h);

// Slots a process can have over its life: a server keeps its slot across
// reloads (its counters go on), and a server seen for the first time takes a
// new one, so only servers never seen before count against this.
inline constexpr std::size_t kMaxSlots = 1024;

// Which server each slot stands for in one configuration version; built by
// the Server for each version.
struct MetricsLayout {
  struct Upstream {
    std::string name;
    std::vector<std::string> servers;   // addresses as written (a resolved name: "name:port=IP")
    std::vector<std::size_t> slots;     // slot of each server, parallel to servers
  };
  std::vector<Upstream> upstreams;
  std::size_t slots = 1;                // slots in use so far (every slot listed is below this)
};

// Plain values read from one or more workers' Stats.
struct Snapshot {
  explicit Snapshot(std::size_t slots = 1);
  std::size_t slots;
  std::vector<std::uint64_t> counters;  // [slot * kCounters + counter]
  std::vector<std::int64_t> gauges;     // [slot * kGauges + gauge]
  std::vector<std::uint64_t> histograms;  // [(slot * kHistograms + h) * kHistogramCells + cell]

  std::uint64_t get(std::size_t slot, Counter c) const { return counters[slot * kCounters + static_cast<std::size_t>(c)]; }
  std::int64_t get(std::size_t slot, Gauge g) const { return gauges[slot * kGauges + static_cast<std::size_t>(g)]; }
  const std::uint64_t* cells(std::size_t slot, Histogram h) const {
    return &histograms[(slot * kHistograms + static_cast<std::size_t>(h)) * kHistogramCells];
  }
  // Sum over every slot.
  std::uint64_t total(Counter c) const;
  void clear_slot(std::size_t slot);
  // Merges another worker's figures: counters and histograms add, gauges
  // follow their declared aggregate. `other` may have fewer slots (the DNS
  // watcher's Stats has slot 0 only).
  Snapshot& operator+=(const Snapshot& other);
  // "name=value name=value ..." with each counter summed over its slots (the shutdown line).
  std::string format() const;
};

class Stats {
 public:
  explicit Stats(std::size_t slots);
  Stats(const Stats&) = delete;
  Stats& operator=(const Stats&) = delete;

  // Owner thread only.
  void add(Counter c, std::uint64_t n = 1) noexcept { bump(counter_cell(0, c), n); }
  void add(std::size_t slot, Counter c, std::uint64_t n = 1) noexcept { bump(counter_cell(slot, c), n); }
  void set(std::size_t slot, Gauge g, std::int64_t v) noexcept {
    gauges_[slot * kGauges + static_cast<std::size_t>(g)].store(static_cast<std::uint64_t>(v), std::memory_order_relaxed);
  }
  void adjust(std::size_t slot, Gauge g, std::int64_t delta) noexcept {
    auto& cell = gauges_[slot * kGauges + static_cast<std::size_t>(g)];
    cell.store(cell.load(std::memory_order_relaxed) + static_cast<std::uint64_t>(delta), std::memory_order_relaxed);
  }
  void observe(std::size_t slot, Histogram h, double seconds) noexcept;

  // Any thread.
  std::uint64_t get(Counter c) const noexcept { return counter_cell(0, c).load(std::memory_order_relaxed); }
  std::size_t slots() const noexcept { return slots_; }
  // The first `slots` slots only (those in use so far).
  Snapshot read(std::size_t slots) const;
  // Owner thread: zeroes a slot handed to another server.
  void clear_slot(std::size_t slot) noexcept;
  Snapshot read() const;

 private:
  using Cell = std::atomic<std::uint64_t>;
  static void bump(Cell& cell, std::uint64_t n) noexcept {
    cell.store(cell.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  Cell& counter_cell(std::size_t slot, Counter c) noexcept { return counters_[slot * kCounters + static_cast<std::size_t>(c)]; }
  const Cell& counter_cell(std::size_t slot, Counter c) const noexcept {
    return counters_[slot * kCounters + static_cast<std::size_t>(c)];
  }

  std::size_t slots_;
  std::unique_ptr<Cell[]> counters_;
  std::unique_ptr<Cell[]> gauges_;
  std::unique_ptr<Cell[]> histograms_;
};

}  // namespace holdfast
