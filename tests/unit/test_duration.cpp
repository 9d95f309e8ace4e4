#include <doctest/doctest.h>

#include "holdfast/duration.hpp"

using namespace holdfast;

TEST_CASE("durations need a unit and round-trip") {
  CHECK(parse_duration("250ms") == Millis(250));
  CHECK(parse_duration("5s") == Millis(5000));
  CHECK(parse_duration("2m") == Millis(120000));
  CHECK(parse_duration("1h") == Millis(3600000));
  CHECK_FALSE(parse_duration("5").has_value());
  CHECK_FALSE(parse_duration("5 s").has_value());
  CHECK_FALSE(parse_duration("-1s").has_value());
  CHECK_FALSE(parse_duration("s").has_value());
  CHECK_FALSE(parse_duration("1d").has_value());
  CHECK(format_duration(Millis(1500)) == "1500ms");
  CHECK(format_duration(Millis(120000)) == "2m");
  CHECK(parse_duration(format_duration(Millis(61000))) == Millis(61000));
}

TEST_CASE("sizes accept k, m, g suffixes") {
  CHECK(parse_size("16k") == 16384u);
  CHECK(parse_size("10m") == 10u * 1024 * 1024);
  CHECK(parse_size("512") == 512u);
  CHECK_FALSE(parse_size("16kb").has_value());
  CHECK_FALSE(parse_size("k").has_value());
  CHECK(format_size(16384) == "16k");
}
