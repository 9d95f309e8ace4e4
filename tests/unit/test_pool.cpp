// UpstreamPool against real loopback connections: the decisions the pool
// makes at release (pool or close), while idle (watch and evict) and at
// checkout (which one, and whether it is still safe), each observed both
// through the pool's answer and through the counters the operator reads.
#include <doctest/doctest.h>

#include <thread>

#include "loop_helpers.hpp"

using namespace holdfast;
using namespace holdfast::test;

namespace {
// The pool refused the connection at release: nothing went idle, `why` was
// counted once, and the backend sees the close.
void check_refused(WorkerHarness& h, BackendSocket& backend, Counter why) {
  CHECK(h.pool().idle_count(0) == 0);
  CHECK(h.count(why) == 1);
  CHECK(backend.wait_closed(h.base()));
}

// Pools `conn` and runs the loop until the pool let it go; how long that
// took, or a value far past any budget here when it never did.
TestClock::duration time_pooled(WorkerHarness& h, std::unique_ptr<UpstreamConnection> conn) {
  const auto released = TestClock::now();
  h.pool().release(std::move(conn), true);
  if (!run_until(h.base(), [&] { return h.pool().idle_count(0) == 0; })) return 1h;
  return TestClock::now() - released;
}
}  // namespace

TEST_CASE("pool: acquire hands out the newest idle connection first") {
  WorkerHarness h;
  auto a = h.open();
  auto b = h.open();
  UpstreamConnection* older = a.conn.get();
  UpstreamConnection* newer = b.conn.get();
  h.pool().release(std::move(a.conn), true);
  h.pool().release(std::move(b.conn), true);
  REQUIRE(h.pool().idle_count(0) == 2);

  // LIFO keeps the recently used connection warm and lets the oldest age out.
  auto first = h.pool().acquire(0, true);
  auto second = h.pool().acquire(0, true);
  CHECK(first.get() == newer);
  CHECK(second.get() == older);
  CHECK(h.pool().acquire(0, true) == nullptr);
  CHECK(h.pool().idle_count(0) == 0);
}

TEST_CASE("pool: release with reusable=false closes the connection") {
  WorkerHarness h;
  auto leg = h.open();
  h.pool().release(std::move(leg.conn), false);
  check_refused(h, leg.backend, Counter::evict_not_reusable);
}

TEST_CASE("pool: a release over max_idle drops the oldest idle connection") {
  WorkerHarness h("    keepalive:\n      max_idle: 2\n");
  auto a = h.open();
  auto b = h.open();
  auto c = h.open();
  UpstreamConnection* pb = b.conn.get();
  UpstreamConnection* pc = c.conn.get();
  h.pool().release(std::move(a.conn), true);
  h.pool().release(std::move(b.conn), true);
  CHECK(h.count(Counter::evict_pool_full) == 0);
  h.pool().release(std::move(c.conn), true);
  CHECK(h.count(Counter::evict_pool_full) == 1);
  CHECK(h.pool().idle_count(0) == 2);

  // The one that waited longest went; the two newest are still served.
  CHECK(a.backend.wait_closed(h.base()));
  CHECK_FALSE(b.backend.pull());
  CHECK_FALSE(c.backend.pull());
  auto first = h.pool().acquire(0, true);
  auto second = h.pool().acquire(0, true);
  CHECK(first.get() == pc);
  CHECK(second.get() == pb);
}

TEST_CASE("pool: a connection the backend closed while idle is evicted, never handed out") {
  WorkerHarness h;
  SUBCASE("noticed by the idle watch") {
    auto leg = h.open();
    h.pool().release(std::move(leg.conn), true);
    leg.backend.close();
    CHECK(run_until(h.base(), [&] { return h.pool().idle_count(0) == 0; }));
    CHECK(h.count(Counter::evict_closed_by_backend) == 1);
    CHECK(h.pool().acquire(0, true) == nullptr);
  }
  SUBCASE("noticed by the peek at checkout, before the loop ran") {
    auto leg = h.open();
    h.pool().release(std::move(leg.conn), true);
    leg.backend.close();
    // Loopback delivers the FIN at once; the loop has not seen it yet.
    CHECK(h.pool().idle_count(0) == 1);
    CHECK(h.pool().acquire(0, false) == nullptr);
    CHECK(h.count(Counter::evict_dead_at_checkout) == 1);
    CHECK(h.pool().idle_count(0) == 0);
  }
}

TEST_CASE("pool: a connection with unsolicited bytes while idle is not handed out") {
  WorkerHarness h;
  const std::string_view unsolicited = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n";
  SUBCASE("noticed by the idle watch") {
    auto leg = h.open();
    h.pool().release(std::move(leg.conn), true);
    leg.backend.send(unsolicited);
    CHECK(run_until(h.base(), [&] { return h.pool().idle_count(0) == 0; }));
    CHECK(h.count(Counter::evict_closed_by_backend) == 1);
    CHECK(h.pool().acquire(0, true) == nullptr);
    CHECK(leg.backend.wait_closed(h.base()));
  }
  SUBCASE("noticed by the peek at checkout") {
    auto leg = h.open();
    h.pool().release(std::move(leg.conn), true);
    leg.backend.send(unsolicited);
    CHECK(h.pool().acquire(0, true) == nullptr);
    CHECK(h.count(Counter::evict_dead_at_checkout) == 1);
    CHECK(leg.backend.wait_closed(h.base()));
  }
}

TEST_CASE("pool: a connection past its idle budget is refused at checkout, before its timer ran") {
  // Pooled for 60ms - 40ms = 20ms; from then on a request could race the
  // backend's close. The loop is not run while waiting, so the idle timer
  // has not fired and the checkout is what must refuse it, for any method.
  WorkerHarness h("    backend_keepalive_timeout: 60ms\n    keepalive:\n      margin: 40ms\n");
  SUBCASE("fresh enough: handed out, even for a POST") {
    auto leg = h.open();
    UpstreamConnection* raw = leg.conn.get();
    h.pool().release(std::move(leg.conn), true);
    CHECK(h.pool().acquire(0, false).get() == raw);
    CHECK(h.count(Counter::nonidempotent_skipped) == 0);
    CHECK(h.count(Counter::evict_hint) == 0);
  }
  // Refused for any method: past the budget a GET could race the close too.
  auto refused_inside_margin = [&](bool idempotent) {
    auto leg = h.open();
    h.pool().release(std::move(leg.conn), true);
    std::this_thread::sleep_for(30ms);
    CHECK(h.pool().acquire(0, idempotent) == nullptr);
    // Counted under the limit that set the deadline (the backend's timeout
    // less the margin), whichever check caught it first.
    CHECK(h.count(Counter::evict_hint) + h.count(Counter::evict_idle_timeout) +
              h.count(Counter::nonidempotent_skipped) == 1);
    CHECK(h.pool().idle_count(0) == 0);
    CHECK(leg.backend.wait_closed(h.base()));
  };
  SUBCASE("inside the margin: refused for a POST") { refused_inside_margin(false); }
  SUBCASE("inside the margin: refused for a GET") { refused_inside_margin(true); }
}

TEST_CASE("pool: a connection whose request budget is spent is not pooled") {
  WorkerHarness h("    keepalive:\n      max_requests: 2\n");
  SUBCASE("max_requests from the config") {
    auto leg = h.open();
    leg.conn->requests = 1;  // one under the limit: pooled
    h.pool().release(std::move(leg.conn), true);
    CHECK(h.pool().idle_count(0) == 1);
    auto again = h.pool().acquire(0, true);
    REQUIRE(again);
    again->requests = 2;
    h.pool().release(std::move(again), true);
    check_refused(h, leg.backend, Counter::evict_max_requests);
  }
  SUBCASE("max= from the backend's Keep-Alive, counted down to zero") {
    auto leg = h.open();
    KeepAliveHint hint;
    hint.max = 0;
    h.pool().learn(*leg.conn, hint);
    h.pool().release(std::move(leg.conn), true);
    check_refused(h, leg.backend, Counter::evict_max_requests);
  }
}

TEST_CASE("pool: an idle connection is closed at the configured idle_timeout") {
  WorkerHarness h("    keepalive:\n      idle_timeout: 30ms\n");
  auto leg = h.open();
  const auto waited = time_pooled(h, std::move(leg.conn));
  // Not before the deadline, and not long after it (timer slack only).
  CHECK(waited >= 29ms);
  CHECK(waited < 500ms);
  CHECK(h.count(Counter::evict_idle_timeout) == 1);
  CHECK(h.count(Counter::evict_hint) == 0);
  CHECK(leg.backend.wait_closed(h.base()));
}

TEST_CASE("pool: learn() with a Keep-Alive timeout shortens the idle budget") {
  WorkerHarness h("    keepalive:\n      idle_timeout: 5s\n      margin: 20ms\n");
  auto leg = h.open();
  KeepAliveHint hint;
  hint.timeout = Millis(60);
  hint.max = 7;
  h.pool().learn(*leg.conn, hint);
  CHECK(h.count(Counter::hints_learned) == 1);
  CHECK(leg.conn->requests_left == 7u);

  // The backend closes at 60ms; the pool gives up 20ms earlier, far below 5s.
  const auto waited = time_pooled(h, std::move(leg.conn));
  CHECK(waited >= 39ms);
  CHECK(waited < 1s);
  CHECK(h.count(Counter::evict_hint) == 1);
  CHECK(h.count(Counter::evict_idle_timeout) == 0);

  // timeout= carries over to the server's next connection; max= does not.
  auto next = h.open(false);
  REQUIRE(next.conn->backend_idle_timeout.has_value());
  CHECK(*next.conn->backend_idle_timeout == Millis(60));
  CHECK_FALSE(next.conn->requests_left.has_value());

  // The same hint again is not news.
  h.pool().learn(*next.conn, hint);
  CHECK(h.count(Counter::hints_learned) == 1);
}

TEST_CASE("pool: a Keep-Alive timeout no longer than margin leaves no safe idle time") {
  WorkerHarness h("    keepalive:\n      margin: 20ms\n");
  auto leg = h.open();
  KeepAliveHint hint;
  hint.timeout = Millis(20);
  h.pool().learn(*leg.conn, hint);
  h.pool().release(std::move(leg.conn), true);
  check_refused(h, leg.backend, Counter::evict_hint);
}

TEST_CASE("pool: connections of different ages closed together are a restart, not an idle timeout") {
  WorkerHarness h;
  auto young = h.open();
  auto old = h.open();
  UpstreamConnection* y = young.conn.get();
  UpstreamConnection* o = old.conn.get();
  h.pool().release(std::move(young.conn), true);
  h.pool().release(std::move(old.conn), true);
  // Idle for 3 s and 5 s (as far as the pool can tell) when the backend goes.
  y->last_used -= std::chrono::seconds(3);
  o->last_used -= std::chrono::seconds(5);
  SUBCASE("both close at once: nothing learned") {
    young.backend.close();
    old.backend.close();
    CHECK(run_until(h.base(), [&] { return h.pool().idle_count(0) == 0; }));
    CHECK(h.count(Counter::idle_closes_learned) == 0);
  }
  SUBCASE("the older one alone: its idle time is learned") {
    old.backend.close();
    CHECK(run_until(h.base(), [&] { return h.pool().idle_count(0) == 1; }));
    CHECK(h.count(Counter::idle_closes_learned) == 1);
  }
}
