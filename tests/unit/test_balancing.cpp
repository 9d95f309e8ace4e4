// Balancing policies, the hash ring and the passive ejection state machine,
// as pure logic: candidates and clocks are plain values.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "holdfast/balancer.hpp"
#include "holdfast/config.hpp"
#include "holdfast/hash_ring.hpp"
#include "holdfast/health.hpp"

using namespace holdfast;

namespace {
std::vector<Candidate> servers(std::vector<unsigned> weights) {
  std::vector<Candidate> out;
  for (auto w : weights) out.push_back({true, w, 0});
  return out;
}

std::vector<std::size_t> counts(Balancer& b, const std::vector<Candidate>& s, int picks) {
  std::vector<std::size_t> n(s.size(), 0);
  for (int i = 0; i < picks; ++i) {
    auto p = b.pick({s, {}});
    REQUIRE(p);
    ++n[*p];
  }
  return n;
}
}  // namespace

TEST_CASE("round robin: equal weights rotate, weights 1:2:5 give 1:2:5 exactly over 8000 picks") {
  RoundRobin rr(3, 0);
  auto s = servers({1, 1, 1});
  std::vector<std::size_t> seq;
  for (int i = 0; i < 6; ++i) seq.push_back(*rr.pick({s, {}}));
  CHECK(seq == std::vector<std::size_t>{0, 1, 2, 0, 1, 2});

  RoundRobin weighted(3, 0);
  auto w = servers({1, 2, 5});
  auto n = counts(weighted, w, 8000);
  CHECK(n[0] == 1000);
  CHECK(n[1] == 2000);
  CHECK(n[2] == 5000);
  // Smooth: the heavy server never takes more than its share in a row.
  RoundRobin smooth(3, 0);
  int run = 0, longest = 0;
  std::size_t last = 99;
  for (int i = 0; i < 80; ++i) {
    auto p = *smooth.pick({w, {}});
    run = p == last ? run + 1 : 1;
    longest = std::max(longest, run);
    last = p;
  }
  CHECK(longest <= 3);
}

TEST_CASE("round robin skips ineligible servers and reports none when all are out") {
  RoundRobin rr(3, 1);
  auto s = servers({1, 1, 1});
  s[1].eligible = false;
  auto n = counts(rr, s, 100);
  CHECK(n[1] == 0);
  CHECK(n[0] == 50);
  CHECK(n[2] == 50);
  for (auto& c : s) c.eligible = false;
  CHECK_FALSE(rr.pick({s, {}}));
}

TEST_CASE("least_conn takes the fewest active relative to weight; ties by weight") {
  LeastConn lc(0);
  auto s = servers({1, 1, 1});
  s[0].active = 5;
  s[1].active = 2;
  s[2].active = 3;
  CHECK(*lc.pick({s, {}}) == 1);
  s[1].eligible = false;
  CHECK(*lc.pick({s, {}}) == 2);
  auto w = servers({1, 3});
  w[0].active = 2;
  w[1].active = 5;   // 5/3 < 2/1
  CHECK(*lc.pick({w, {}}) == 1);
  w[0].active = 0;
  w[1].active = 0;   // tie: the heavier weight
  CHECK(*lc.pick({w, {}}) == 1);
}

TEST_CASE("random_two prefers the less loaded of two and never picks an ineligible one") {
  RandomTwo r(7);
  auto s = servers({1, 1});
  s[0].active = 10;
  for (int i = 0; i < 50; ++i) CHECK(*r.pick({s, {}}) == 1);
  auto t = servers({1, 1, 1, 1});
  t[2].eligible = false;
  std::map<std::size_t, int> seen;
  for (int i = 0; i < 400; ++i) ++seen[*r.pick({t, {}})];
  CHECK(seen.count(2) == 0);
  CHECK(seen.size() == 3);
}

TEST_CASE("hash ring: a key stays on one server; removing one of four moves about a quarter of the keys") {
  std::vector<std::string> names{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"};
  std::vector<std::string_view> ids(names.begin(), names.end());
  HashRing four(ids, {1, 1, 1, 1});
  std::vector<std::string_view> three_ids{ids[0], ids[1], ids[3]};
  HashRing three(three_ids, {1, 1, 1});
  auto all = [](std::size_t) { return true; };
  const int keys = 10000;
  int moved = 0;
  std::vector<int> share(4, 0);
  for (int k = 0; k < keys; ++k) {
    auto key = "user-" + std::to_string(k);
    auto a = *four.owner(key, all);
    CHECK(*four.owner(key, all) == a);
    ++share[a];
    auto b = three_ids[*three.owner(key, all)];
    if (b != ids[a]) ++moved;
  }
  // Only the removed server's keys move: about 1/4, at most about 1/3.
  CHECK(moved < keys / 3);
  CHECK(moved > keys / 6);
  for (int s : share) CHECK(s > keys / 6);
  // A server that is out passes its keys on to the next on the ring.
  auto no_second = [](std::size_t i) { return i != 1; };
  for (int k = 0; k < 200; ++k) {
    auto key = "k" + std::to_string(k);
    auto a = *four.owner(key, all);
    auto b = *four.owner(key, no_second);
    CHECK(b != 1);
    if (a != 1) CHECK(a == b);
  }
  CHECK_FALSE(four.owner("x", [](std::size_t) { return false; }));
}

TEST_CASE("hash policy: same key, same server; no key falls back to rotation") {
  std::vector<std::string> names{"a:1", "b:1", "c:1"};
  std::vector<std::string_view> ids(names.begin(), names.end());
  HashPolicy h(ids, {1, 1, 1}, 0);
  auto s = servers({1, 1, 1});
  auto first = *h.pick({s, "session-42"});
  for (int i = 0; i < 20; ++i) CHECK(*h.pick({s, "session-42"}) == first);
  std::map<std::size_t, int> seen;
  for (int i = 0; i < 30; ++i) ++seen[*h.pick({s, {}})];
  CHECK(seen.size() == 3);
}

TEST_CASE("passive ejection: max_fails in a row eject, the timeout doubles, a success recovers") {
  HealthTable t(2);
  PassivePolicy p{3, Millis(1000), Millis(3000)};
  auto t0 = HealthClock::time_point(std::chrono::hours(1));
  Millis out{0};
  CHECK(t.note_failure(1, p, t0) == HealthChange::none);
  CHECK(t.note_failure(1, p, t0) == HealthChange::none);
  CHECK(t.note_success(1, t0) == HealthChange::none);   // resets the run
  CHECK(t.note_failure(1, p, t0) == HealthChange::none);
  CHECK(t.note_failure(1, p, t0) == HealthChange::none);
  CHECK(t.available(1, t0));
  CHECK(t.note_failure(1, p, t0, &out) == HealthChange::ejected);
  CHECK(out == Millis(1000));
  CHECK_FALSE(t.available(1, t0 + Millis(999)));
  CHECK(t.available(0, t0));
  // Late results of requests sent before the ejection change nothing.
  CHECK(t.note_failure(1, p, t0 + Millis(10)) == HealthChange::none);
  CHECK(t.note_success(1, t0 + Millis(10)) == HealthChange::none);
  CHECK_FALSE(t.available(1, t0 + Millis(999)));
  // Probation: one failure sends it back, for twice as long, then capped.
  auto t1 = t0 + Millis(1000);
  CHECK(t.available(1, t1));
  CHECK(t.note_failure(1, p, t1, &out) == HealthChange::ejected);
  CHECK(out == Millis(2000));
  auto t2 = t1 + Millis(2000);
  CHECK(t.note_failure(1, p, t2, &out) == HealthChange::ejected);
  CHECK(out == Millis(3000));
  auto t3 = t2 + Millis(3000);
  CHECK(t.note_success(1, t3) == HealthChange::recovered);
  CHECK(t.available(1, t3));
  // After a recovery the count starts again from max_fails and fail_timeout.
  CHECK(t.note_failure(1, p, t3) == HealthChange::none);
  CHECK(t.note_failure(1, p, t3) == HealthChange::none);
  CHECK(t.note_failure(1, p, t3, &out) == HealthChange::ejected);
  CHECK(out == Millis(1000));
}

TEST_CASE("max_fails 0 never ejects; active checks take a server out on their own") {
  HealthTable t(1);
  PassivePolicy off{0, Millis(1000), Millis(1000)};
  auto now = HealthClock::now();
  for (int i = 0; i < 10; ++i) CHECK(t.note_failure(0, off, now) == HealthChange::none);
  CHECK(t.available(0, now));
  CHECK(t.set_checked_down(0, true));
  CHECK_FALSE(t.set_checked_down(0, true));
  CHECK_FALSE(t.available(0, now));
  CHECK(t.set_checked_down(0, false));
  CHECK(t.available(0, now));
  t.add_active(0, 3);
  t.add_active(0, -1);
  CHECK(t.active(0) == 2);
}
