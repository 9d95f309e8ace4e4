#include <doctest/doctest.h>

#include <vector>

#include "holdfast/loop_clock.hpp"

using namespace holdfast;

namespace {
struct Log {
  std::vector<int> ends;  // the Turn depth seen by each run of the end work
  int depth_probe = 0;
};

void record(void* arg) noexcept {
  auto* log = static_cast<Log*>(arg);
  log->ends.push_back(log->depth_probe);
  // Work that opens Turns of its own (a resumed connection's callbacks run
  // directly) must not run the end work again.
  LoopClock::Turn nested;
  CHECK(LoopClock::turn_end_pending());
}
}  // namespace

TEST_CASE("the turn-end work runs once, when the outermost Turn closes, and keeps the Turn's time") {
  Log log;
  CHECK_FALSE(LoopClock::turn_end_pending());
  // Whatever fails below, no later test finds this work registered.
  struct Unregister {
    ~Unregister() { LoopClock::set_turn_end_work(nullptr, nullptr); }
  } unregister;
  LoopClock::set_turn_end_work(&record, &log);
  CHECK_FALSE(LoopClock::turn_end_pending());  // no Turn open: work goes to the loop's events
  {
    LoopClock::Turn outer;
    CHECK(LoopClock::turn_end_pending());
    const auto t = LoopClock::now();
    {
      LoopClock::Turn inner;
      CHECK(LoopClock::now() == t);
    }
    CHECK(log.ends.empty());  // a nested Turn's end is not the callback's end
    log.depth_probe = 1;
  }
  REQUIRE(log.ends.size() == 1);
  CHECK(log.ends[0] == 1);
  CHECK_FALSE(LoopClock::turn_end_pending());
  {
    LoopClock::Turn again;
  }
  CHECK(log.ends.size() == 2);
  // Without an owner, a Turn only marks the time.
  LoopClock::set_turn_end_work(nullptr, nullptr);
  {
    LoopClock::Turn alone;
    CHECK_FALSE(LoopClock::turn_end_pending());
  }
  CHECK(log.ends.size() == 2);
}
