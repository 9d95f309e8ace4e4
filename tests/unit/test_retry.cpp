// classify_retry, row by row of the decision table in src/retry.cpp, and at
// each boundary of its inputs. A wrong "yes" here resends a POST a backend may
// already have acted on; a wrong "no" turns the keep-alive race into a 502.
#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "holdfast/retry.hpp"

using namespace holdfast;

namespace {
// The keep-alive race in its purest form: a GET sent on a pooled connection
// that died before any response byte. Each case changes one fact.
AttemptFacts race() {
  AttemptFacts f;
  f.phase = Phase::awaiting_head;
  f.error = ProxyError::closed_before_response;
  f.reused = true;
  f.bytes_accepted = 120;
  f.response_bytes_seen = false;
  f.idempotent = true;
  f.replay_complete = true;
  return f;
}

// A connect failure: nothing was ever sent.
AttemptFacts refused() {
  AttemptFacts f = race();
  f.phase = Phase::connecting;
  f.error = ProxyError::connect_refused;
  f.reused = false;
  f.bytes_accepted = 0;
  f.idempotent = false;
  return f;
}

std::string name(RetryClass c) { return retry_class_name(c); }
}  // namespace

TEST_CASE("retry row 1: streaming, done or any response byte seen -> never") {
  // Both baselines, so that the first row is seen to win even over a connect
  // error that would otherwise be "unsent".
  for (const AttemptFacts& base : {refused(), race()}) {
    for (Phase p : {Phase::streaming, Phase::done}) {
      auto f = base;
      f.phase = p;
      CAPTURE(std::string(phase_name(p)));
      CHECK(name(classify_retry(f)) == "never");
    }
    auto f = base;
    f.response_bytes_seen = true;
    CHECK(name(classify_retry(f)) == "never");
  }
}

TEST_CASE("retry row 2: replay copy incomplete -> never") {
  auto nothing_sent = race();
  nothing_sent.bytes_accepted = 0;
  for (const AttemptFacts& base : {refused(), race(), nothing_sent}) {
    auto f = base;
    f.replay_complete = false;
    CHECK(name(classify_retry(f)) == "never");
  }
}

TEST_CASE("retry row 3: connect errors -> unsent, for any method and any connection") {
  for (auto e : {ProxyError::connect_refused, ProxyError::connect_timeout, ProxyError::connect_failed}) {
    for (bool reused : {false, true}) {
      for (bool idempotent : {false, true}) {
        auto f = refused();
        f.error = e;
        f.reused = reused;
        f.idempotent = idempotent;
        CAPTURE(static_cast<int>(e));
        CAPTURE(reused);
        CAPTURE(idempotent);
        CHECK(name(classify_retry(f)) == "unsent");
      }
    }
  }
}

TEST_CASE("retry row 4: send failed or closed before response") {
  for (auto e : {ProxyError::send_failed, ProxyError::closed_before_response}) {
    CAPTURE(static_cast<int>(e));
    auto f = race();
    f.error = e;

    SUBCASE("no byte accepted -> unsent, whatever the method or connection") {
      f.bytes_accepted = 0;
      for (bool reused : {false, true}) {
        for (bool idempotent : {false, true}) {
          f.reused = reused;
          f.idempotent = idempotent;
          CHECK(name(classify_retry(f)) == "unsent");
        }
      }
    }
    SUBCASE("one byte accepted, reused, idempotent -> idempotent") {
      f.bytes_accepted = 1;
      CHECK(name(classify_retry(f)) == "idempotent");
    }
    SUBCASE("one byte accepted on a fresh connection -> never (the backend's answer)") {
      f.bytes_accepted = 1;
      f.reused = false;
      CHECK(name(classify_retry(f)) == "never");
      f.idempotent = false;
      CHECK(name(classify_retry(f)) == "never");
    }
    SUBCASE("one byte accepted, reused, not idempotent -> never (may have been acted on)") {
      f.bytes_accepted = 1;
      f.idempotent = false;
      CHECK(name(classify_retry(f)) == "never");
    }
  }
}

TEST_CASE("retry row 5: every other error -> never") {
  // The full error list, each with the answer the table gives it when all
  // other facts are as favourable as they can be (nothing sent, replayable).
  const std::vector<std::pair<ProxyError, const char*>> expected = {
      {ProxyError::none, "never"},
      {ProxyError::bad_request, "never"},
      {ProxyError::head_too_large, "never"},
      {ProxyError::uri_too_long, "never"},
      {ProxyError::not_implemented, "never"},
      {ProxyError::request_timeout, "never"},
      {ProxyError::connect_refused, "unsent"},
      {ProxyError::connect_timeout, "unsent"},
      {ProxyError::connect_failed, "unsent"},
      {ProxyError::send_timeout, "never"},
      {ProxyError::send_failed, "unsent"},
      {ProxyError::read_timeout, "never"},
      {ProxyError::closed_before_response, "unsent"},
      {ProxyError::bad_response, "never"},
      {ProxyError::closed_mid_response, "never"},
      {ProxyError::no_server, "never"},
      {ProxyError::queue_full, "never"},
      {ProxyError::queue_timeout, "never"},
      {ProxyError::no_route, "never"},
  };
  CHECK(expected.size() == static_cast<std::size_t>(ProxyError::no_route) + 1);
  for (const auto& [error, answer] : expected) {
    auto f = race();
    f.error = error;
    f.bytes_accepted = 0;
    CAPTURE(static_cast<int>(error));
    CHECK(name(classify_retry(f)) == answer);
  }
}

TEST_CASE("retry: the phase matters only once the response has started") {
  for (Phase p : {Phase::buffering, Phase::connecting, Phase::sending, Phase::awaiting_head}) {
    CAPTURE(std::string(phase_name(p)));
    for (const auto& [base, answer] : {std::pair{race(), "idempotent"}, std::pair{refused(), "unsent"}}) {
      auto f = base;
      f.phase = p;
      CHECK(name(classify_retry(f)) == answer);
    }
  }
}

TEST_CASE("retry: class names") {
  CHECK(name(RetryClass::never) == "never");
  CHECK(name(RetryClass::unsent) == "unsent");
  CHECK(name(RetryClass::idempotent) == "idempotent");
}
