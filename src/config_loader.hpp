// The primitives of the YAML reader shared by the config module's files
// (config*.cpp, through config_schema.hpp): every one fails with ConfigError
// "FILE:LINE: KEY: rule". Private to the config module: only its .cpp files
// include this header, so yaml-cpp stays out of every other unit.
#pragma once

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <initializer_list>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "holdfast/config.hpp"

namespace holdfast {

class ConfigReader {
 public:
  explicit ConfigReader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const YAML::Node& at, const std::string& key, const std::string& rule) const {
    std::ostringstream out;
    out << source_;
    if (at.IsDefined() && at.Mark().line >= 0) out << ":" << at.Mark().line + 1;
    out << ": " << key << ": " << rule;
    throw ConfigError(out.str());
  }

  void expect_map(const YAML::Node& node, const std::string& key, std::initializer_list<const char*> allowed) const {
    expect_map(node, key, std::vector<const char*>(allowed));
  }

  void expect_map(const YAML::Node& node, const std::string& key, const std::vector<const char*>& allowed) const {
    if (!node.IsMap()) fail(node, key, "expected a mapping");
    std::set<std::string> names(allowed.begin(), allowed.end());
    for (const auto& kv : node) {
      auto name = kv.first.as<std::string>();
      if (!names.count(name)) {
        std::string list;
        for (const auto* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
        fail(kv.first, join(key, name), "unknown key (expected one of: " + list + ")");
      }
    }
  }

  static std::string join(const std::string& parent, const std::string& child) {
    return parent.empty() ? child : parent + "." + child;
  }

  std::string scalar(const YAML::Node& node, const std::string& key) const {
    if (!node.IsScalar()) fail(node, key, "expected a scalar value");
    return node.Scalar();
  }

  bool boolean(const YAML::Node& node, const std::string& key) const {
    auto text = scalar(node, key);
    if (text == "true") return true;
    if (text == "false") return false;
    fail(node, key, "'" + text + "' is not a boolean (expected true or false)");
  }

  Millis duration(const YAML::Node& node, const std::string& key) const {
    auto text = scalar(node, key);
    auto d = parse_duration(text);
    if (!d) fail(node, key, "'" + text + "' is not a duration (expected a number with a unit: 250ms, 5s, 2m, 1h)");
    return *d;
  }

  std::uint64_t size(const YAML::Node& node, const std::string& key) const {
    auto text = scalar(node, key);
    auto s = parse_size(text);
    if (!s) fail(node, key, "'" + text + "' is not a size (expected a number with an optional k, m or g suffix)");
    return *s;
  }

  std::uint64_t count(const YAML::Node& node, const std::string& key, std::uint64_t min, std::uint64_t max) const {
    auto text = scalar(node, key);
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || p != text.data() + text.size())
      fail(node, key, "'" + text + "' is not a whole number");
    if (v < min || v > max)
      fail(node, key, "'" + text + "' is out of range (expected " + std::to_string(min) + ".." + std::to_string(max) + ")");
    return v;
  }

  Endpoint endpoint(const YAML::Node& node, const std::string& key, bool allow_port_zero) const {
    auto text = scalar(node, key);
    Endpoint ep;
    ep.text = text;
    std::string host, port;
    if (!text.empty() && text[0] == '[') {
      auto close = text.find(']');
      if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
        fail(node, key, "'" + text + "' is not an address (expected [IPv6]:port)");
      host = text.substr(1, close - 1);
      port = text.substr(close + 2);
    } else {
      auto colon = text.rfind(':');
      if (colon == std::string::npos || text.find(':') != colon)
        fail(node, key, "'" + text + "' is not an address (expected host:port, e.g. 127.0.0.1:9001)");
      host = text.substr(0, colon);
      port = text.substr(colon + 1);
    }
    if (host.empty()) host = "0.0.0.0";
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || p > 65535 || (p == 0 && !allow_port_zero))
      fail(node, key, "'" + text + "' has an invalid port (expected " + std::string(allow_port_zero ? "0" : "1") + "..65535)");
    ep.host = host;
    ep.port = static_cast<std::uint16_t>(p);
    return ep;
  }

  Millis positive(const YAML::Node& v, const std::string& key) const {
    auto d = duration(v, key);
    if (d.count() == 0) fail(v, key, "must be greater than 0");
    return d;
  }

 protected:
  std::string source_;
};

}  // namespace holdfast
