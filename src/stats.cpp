#include "holdfast/stats.hpp"

namespace holdfast {

namespace {
constexpr const char* kNames[] = {
#define HOLDFAST_NAME(name) #name,
    HOLDFAST_COUNTERS(HOLDFAST_NAME)
#undef HOLDFAST_NAME
};
}  // namespace

Stats& Stats::operator+=(const Stats& other) noexcept {
  for (std::size_t i = 0; i < values.size(); ++i) values[i] += other.values[i];
  return *this;
}

std::string Stats::format() const {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out += ' ';
    out += kNames[i];
    out += '=';
    out += std::to_string(values[i]);
  }
  return out;
}

}  // namespace holdfast
