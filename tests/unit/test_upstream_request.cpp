// UpstreamRequest against a real loopback backend that the test scripts byte
// by byte: the reuse verdict at the exact end of a response, the interim and
// invalid heads, the retry class of a connection that died before answering,
// the replay onto a second connection, and a hand-over of the same pooled
// connection from inside the end-of-response callback.
#include <doctest/doctest.h>

#include <event2/buffer.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "holdfast/upstream_request.hpp"
#include "loop_helpers.hpp"

using namespace holdfast;
using namespace holdfast::test;

namespace {
using Mode = UpstreamRequest::BodyMode;

const std::string kGet = "GET /a HTTP/1.1\r\nHost: app\r\n\r\n";

// Records what UpstreamRequest reports, in order.
struct Recorder final : UpstreamRequest::Events {
  UpstreamRequest* request = nullptr;  // sampled for its verdict at the end
  std::function<void()> at_end;        // runs inside on_response_end
  std::vector<std::string> calls;
  Mode mode = Mode::none;
  std::string body;
  HeaderList trailers;
  bool ended = false;
  std::optional<bool> reusable_at_end;
  std::optional<ProxyError> error;
  std::optional<RetryClass> retry;

  void on_upstream_connected() override { calls.push_back("connected"); }
  void on_request_drained() override {}
  bool response_congested() override { return false; }
  void on_interim_response(const MessageHead& h) override { calls.push_back("interim " + std::to_string(h.status)); }
  void on_switching_protocols(const MessageHead& h) override { calls.push_back("switch " + std::to_string(h.status)); }
  void on_response_head(const MessageHead& h, Mode m) override {
    calls.push_back("head " + std::to_string(h.status));
    mode = m;
  }
  void on_response_data(evbuffer* from, std::size_t n) override {
    // Moves the bytes out, as the client side does.
    std::string part(n, '\0');
    evbuffer_remove(from, part.data(), n);
    body += part;
  }
  void on_response_data(const char* data, std::size_t n) override { body.append(data, n); }
  void on_response_end(const HeaderList& t) override {
    calls.push_back("end");
    ended = true;
    trailers = t;
    if (request) reusable_at_end = request->reusable();
    if (at_end) at_end();
  }
  void flush_response() override {}
  void on_upstream_error(ProxyError e, const char*, RetryClass r) override {
    calls.push_back("error");
    error = e;
    retry = r;
  }
};

using Calls = std::vector<std::string>;

// One UpstreamRequest with its recorder and the backend end of its connection.
struct Attempt {
  Attempt(WorkerHarness& harness, UpstreamRequest::Options options, std::string head)
      : h(harness), req(events, harness.pool(), options) {
    events.request = &req;
    req.set_head(std::move(head));
  }

  // On a new connection, attached while still connecting (as the Exchange does).
  void start_fresh(bool complete = true) {
    auto leg = h.open(false);
    backend = std::move(leg.backend);
    req.attach(std::move(leg.conn), false);
    finish_request(complete);
  }

  // On the pooled connection whose backend end is `pooled`.
  void start_reused(BackendSocket pooled) {
    auto conn = h.pool().acquire(0, true);
    if (!conn) throw std::runtime_error("nothing pooled");
    backend = std::move(pooled);
    req.attach(std::move(conn), true);
    finish_request(true);
  }

  void finish_request(bool complete) {
    if (complete) req.end_request(nullptr);
    req.flush();
  }

  // The backend reads `n` request bytes, then answers with `response` byte by byte.
  std::size_t answer_bytewise(std::size_t n, std::string_view response) {
    backend.read_at_least(h.base(), n);
    return backend.send_bytewise(h.base(), response);
  }

  // Hands the connection back; true when the pool kept it.
  bool release_pooled() {
    const auto before = h.pool().idle_count(0);
    req.release();
    return h.pool().idle_count(0) == before + 1;
  }

  bool wait_end() {
    return run_until(h.base(), [&] { return events.ended || events.error; });
  }

  WorkerHarness& h;
  Recorder events;
  UpstreamRequest req;
  BackendSocket backend;
};

// A connection that served one GET and now sits idle in the pool; returns
// the backend's end of it with nothing left unread.
BackendSocket pooled_connection(WorkerHarness& h) {
  Attempt first(h, {.idempotent = true}, kGet);
  first.start_fresh();
  first.answer_bytewise(kGet.size(), "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  if (!first.wait_end()) throw std::runtime_error("the first exchange did not end");
  if (!first.release_pooled()) throw std::runtime_error("the first connection was not pooled");
  first.backend.take();
  return std::move(first.backend);
}
}  // namespace

TEST_CASE("upstream request: Content-Length exactly consumed -> reusable, pooled") {
  WorkerHarness h;
  Attempt a(h, {.idempotent = true}, kGet);
  a.start_fresh();
  CHECK(a.backend.read_at_least(h.base(), kGet.size()) == kGet);
  a.backend.send_bytewise(h.base(), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
  REQUIRE(a.wait_end());
  CHECK(a.events.calls == Calls{"connected", "head 200", "end"});
  CHECK(a.events.mode == Mode::length);
  CHECK(a.events.body == "hello");
  CHECK(a.events.reusable_at_end == true);
  CHECK(a.release_pooled());
  CHECK(h.count(Counter::evict_not_reusable) == 0);
}

TEST_CASE("upstream request: responses whose end forbids reuse") {
  WorkerHarness h;
  Attempt a(h, {.idempotent = true}, kGet);
  a.start_fresh();
  SUBCASE("Connection: close") {
    a.answer_bytewise(kGet.size(), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    REQUIRE(a.wait_end());
    CHECK(a.events.body == "ok");
  }
  SUBCASE("close-delimited body") {
    a.answer_bytewise(kGet.size(), "HTTP/1.1 200 OK\r\n\r\nabc");
    CHECK_FALSE(a.events.ended);  // only the close can end it
    a.backend.close();
    REQUIRE(a.wait_end());
    CHECK(a.events.mode == Mode::until_close);
    CHECK(a.events.body == "abc");
  }
  SUBCASE("surplus bytes in the same segment as the response") {
    a.backend.read_at_least(h.base(), kGet.size());
    a.backend.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA");
    REQUIRE(a.wait_end());
    CHECK(a.events.body == "ok");
  }
  SUBCASE("surplus bytes after the response ended") {
    a.answer_bytewise(kGet.size(), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    REQUIRE(a.wait_end());
    CHECK(a.events.reusable_at_end == true);
    a.backend.send("X");
    // A byte nobody asked for makes the framing doubtful, even after the end.
    CHECK(run_until(h.base(), [&] { return !a.req.reusable(); }));
    a.events.reusable_at_end = false;
  }
  CHECK(a.events.calls == Calls{"connected", "head 200", "end"});
  CHECK(a.events.reusable_at_end == false);
  CHECK_FALSE(a.release_pooled());
  CHECK(h.count(Counter::evict_not_reusable) == 1);
}

TEST_CASE("upstream request: bodiless responses stay reusable") {
  WorkerHarness h;
  std::string response;
  bool head_request = false;
  SUBCASE("HEAD without Content-Length and no close token") {
    head_request = true;
    response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n";
  }
  SUBCASE("HEAD with the Content-Length a GET would have") {
    head_request = true;
    response = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
  }
  SUBCASE("204") { response = "HTTP/1.1 204 No Content\r\n\r\n"; }
  SUBCASE("304 with a Content-Length of the representation") {
    response = "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 99\r\n\r\n";
  }
  const std::string head = head_request ? "HEAD /a HTTP/1.1\r\nHost: app\r\n\r\n" : kGet;
  Attempt a(h, {.idempotent = true, .head_request = head_request}, head);
  a.start_fresh();
  a.answer_bytewise(head.size(), response);
  REQUIRE(a.wait_end());
  CHECK(a.events.calls.size() == 3);
  CHECK(a.events.calls.back() == "end");
  CHECK(a.events.mode == Mode::none);
  CHECK(a.events.body.empty());
  CHECK(a.events.reusable_at_end == true);
  CHECK(a.release_pooled());
}

TEST_CASE("upstream request: a request not fully sent is not reusable") {
  // The backend answered early (say, a 200 to a POST it did not read); the
  // rest of the body would be taken for the next request.
  WorkerHarness h;
  const std::string head = "POST /u HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\n";
  Attempt a(h, {}, head);
  a.start_fresh(false);
  evbuffer* part = evbuffer_new();
  evbuffer_add(part, "abc", 3);
  a.req.send_body(part, 3);
  evbuffer_free(part);
  a.req.flush();
  a.answer_bytewise(head.size() + 3, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  REQUIRE(a.wait_end());
  CHECK(a.backend.received() == head + "abc");
  CHECK_FALSE(a.req.request_complete());
  CHECK(a.events.reusable_at_end == false);
  CHECK_FALSE(a.release_pooled());
  CHECK(h.count(Counter::evict_not_reusable) == 1);
}

TEST_CASE("upstream request: 1xx interim responses come before the final head") {
  WorkerHarness h;
  Attempt a(h, {.idempotent = true}, kGet);
  a.start_fresh();
  a.answer_bytewise(kGet.size(),
                    "HTTP/1.1 100 Continue\r\n\r\n"
                    "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  REQUIRE(a.wait_end());
  CHECK(a.events.calls == Calls{"connected", "interim 100", "interim 103", "head 200", "end"});
  CHECK(a.events.body == "ok");
  CHECK(a.events.reusable_at_end == true);
}

TEST_CASE("upstream request: a status outside 100..599 is a bad response, nothing relayed") {
  WorkerHarness h;
  std::string status_line;
  SUBCASE("600") { status_line = "HTTP/1.1 600 Beyond\r\n"; }
  SUBCASE("099") { status_line = "HTTP/1.1 099 Below\r\n"; }
  Attempt a(h, {.idempotent = true}, kGet);
  a.start_fresh();
  a.answer_bytewise(kGet.size(), status_line + "Content-Length: 2\r\n\r\nok");
  REQUIRE(a.wait_end());
  CHECK(a.events.calls == Calls{"connected", "error"});
  CHECK(a.events.error == ProxyError::bad_response);
  // Response bytes were seen: the backend answered, so no retry.
  CHECK(a.events.retry == RetryClass::never);
  CHECK(a.events.body.empty());
  CHECK_FALSE(a.req.attached());
  CHECK(a.backend.wait_closed(h.base()));
}

TEST_CASE("upstream request: EOF before any response byte, reused vs fresh") {
  // Every request here fits its replay copy, so only the connection and the
  // method decide.
  WorkerHarness h;
  SUBCASE("fresh connection: the backend's answer, never retried") {
    Attempt a(h, {.idempotent = true, .retry_buffer = 4096}, kGet);
    a.start_fresh();
    a.backend.read_at_least(h.base(), kGet.size());
    a.backend.close();
    REQUIRE(a.wait_end());
    CHECK(a.events.error == ProxyError::closed_before_response);
    CHECK(a.events.retry == RetryClass::never);
  }
  SUBCASE("reused connection, idempotent request: the keep-alive race, retryable") {
    Attempt a(h, {.idempotent = true, .retry_buffer = 4096}, kGet);
    a.start_reused(pooled_connection(h));
    CHECK(a.req.reused());
    CHECK(a.backend.read_at_least(h.base(), kGet.size()) == kGet);
    a.backend.close();
    REQUIRE(a.wait_end());
    CHECK(a.events.error == ProxyError::closed_before_response);
    CHECK(a.events.retry == RetryClass::idempotent);
  }
  SUBCASE("reused connection, non-idempotent request: may have been acted on") {
    const std::string post = "POST /a HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n";
    Attempt a(h, {.idempotent = false, .retry_buffer = 4096}, post);
    a.start_reused(pooled_connection(h));
    a.backend.read_at_least(h.base(), post.size());
    a.backend.close();
    REQUIRE(a.wait_end());
    CHECK(a.events.error == ProxyError::closed_before_response);
    CHECK(a.events.retry == RetryClass::never);
  }
  SUBCASE("reused, idempotent, but the head was larger than retry_buffer: nothing to replay") {
    Attempt a(h, {.idempotent = true, .retry_buffer = kGet.size() - 1}, kGet);
    a.start_reused(pooled_connection(h));
    a.backend.read_at_least(h.base(), kGet.size());
    a.backend.close();
    REQUIRE(a.wait_end());
    CHECK(a.events.error == ProxyError::closed_before_response);
    CHECK(a.events.retry == RetryClass::never);
  }
}

TEST_CASE("upstream request: attach after a failure replays exactly what was sent, trailers included") {
  WorkerHarness h;
  const std::string head = "POST /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string sent = head + "5\r\nhello\r\n6\r\nworld!\r\n0\r\nX-Sum: abc\r\n\r\n";
  Attempt a(h, {.idempotent = true, .retry_buffer = 64 * 1024}, head);
  a.start_reused(pooled_connection(h));
  a.req.send_chunk("hello", 5);
  a.req.send_chunk("world!", 6);
  const HeaderList trailers{{"X-Sum", "abc"}};
  a.req.end_request(&trailers);
  a.req.flush();
  CHECK(a.backend.read_at_least(h.base(), sent.size()) == sent);
  const auto first_id = a.req.connection_id();
  a.backend.close();
  REQUIRE(a.wait_end());
  REQUIRE(a.events.retry == RetryClass::idempotent);

  auto second = h.open(false);
  a.req.attach(std::move(second.conn), false);
  a.req.flush();
  CHECK(second.backend.read_at_least(h.base(), sent.size()) == sent);
  settle(h.base());
  second.backend.pull();
  CHECK(second.backend.received().size() == sent.size());  // nothing more than the original
  CHECK(a.req.attempts() == 2);
  CHECK(a.req.connection_id() != first_id);
  CHECK_FALSE(a.req.reused());

  // The second attempt starts with a clean response decoder.
  a.events.calls.clear();
  a.backend = std::move(second.backend);
  a.backend.send_bytewise(h.base(), "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
  REQUIRE(run_until(h.base(), [&] { return a.events.ended; }));
  CHECK(a.events.calls == Calls{"head 201", "end"});
  CHECK(a.events.reusable_at_end == true);
}

TEST_CASE("upstream request: the connection handed on from inside on_response_end") {
  // The Exchange finishes (and releases) from on_response_end, and the next
  // request may take the same connection at once: the first request must not
  // touch the connection after the callback, and the second must work on it.
  WorkerHarness h;
  const std::string second_head = "GET /two HTTP/1.1\r\nHost: app\r\n\r\n";
  Attempt one(h, {.idempotent = true}, kGet);
  Attempt two(h, {.idempotent = true}, second_head);
  bool handed_on = false;
  one.events.at_end = [&] {
    one.req.release();
    auto conn = h.pool().acquire(0, true);
    if (!conn) return;  // checked below: handed_on stays false
    two.req.attach(std::move(conn), true);
    two.req.end_request(nullptr);
    two.req.flush();
    handed_on = true;
  };
  one.start_reused(pooled_connection(h));
  const auto id = one.req.connection_id();
  one.answer_bytewise(kGet.size(), "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none");
  REQUIRE(one.wait_end());
  CHECK(handed_on);
  CHECK(one.events.reusable_at_end == true);
  CHECK_FALSE(one.req.attached());
  REQUIRE(two.req.attached());
  CHECK(two.req.connection_id() == id);

  // Same backend socket: the second request follows the first on it.
  BackendSocket& backend = one.backend;
  backend.take();
  CHECK(backend.read_at_least(h.base(), second_head.size()) == second_head);
  backend.send_bytewise(h.base(), "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo");
  REQUIRE(run_until(h.base(), [&] { return two.events.ended || two.events.error; }));
  CHECK(two.events.calls == Calls{"head 200", "end"});
  CHECK(two.events.body == "two");
  CHECK(one.events.body == "one");
  CHECK(two.events.reusable_at_end == true);
  CHECK(two.release_pooled());
  settle(h.base());  // the reaper runs: nothing left to free twice
}
