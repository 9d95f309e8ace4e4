// Resolution of upstream server host names (placeholder interface; see dns.cpp).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "holdfast/config.hpp"
#include "holdfast/version.hpp"

namespace holdfast {

bool resolve_names(const Config& config, NameTable& out, std::string& error, Millis timeout = Millis(5000));

class DnsWatcher {
 public:
  using OnChange = std::function<void(const std::string& name, const std::vector<std::string>& addresses)>;
  explicit DnsWatcher(OnChange on_change) : on_change_(std::move(on_change)) {}
  void watch(const Config&, const NameTable&) {}
  void start() {}
  void stop() {}

 private:
  OnChange on_change_;
};

}  // namespace holdfast
