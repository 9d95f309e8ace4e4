// The config schema: every key holdfast reads is one row of a table (see
// config_keys.cpp), and that table alone drives parsing (unknown keys, types,
// bounds), the effective values printed by `--check`, the reference in the
// README (`--config-reference`), restart_required() and
// same_connection_settings(). Rules between keys (timeout order, references
// from routes to upstreams...) run as code after a table's keys are read.
// Private to the config module: it includes yaml-cpp.
#pragma once

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config_loader.hpp"

namespace holdfast {

// What a reload does with a changed key.
enum class Reload {
  live,        // applied by the reload
  restart,     // the reload fails: "KEY: OLD -> NEW needs a restart"
  connection,  // applied, but an upstream's pooled connections are not kept across it
};

const char* reload_name(Reload r);

// One key of section S. `name` is dotted and relative to the section
// ("keepalive.idle_timeout" within an upstream); a dotted name's parents are
// mappings that hold only the keys the table declares under them.
template <class S>
struct Key {
  std::string name;
  std::string type;       // for the reference: "duration", "count", "one of: a, b"...
  std::string bounds;     // for the reference; empty: none beyond the type
  Reload reload = Reload::live;
  std::string help;
  // Reads the key's node into `s`, failing with "FILE:LINE: KEY: rule".
  std::function<void(const ConfigReader&, const YAML::Node&, const std::string& key, S&)> read;
  // The effective value as YAML (a value, or "\n"-started block at `indent`);
  // nullopt when the key is unset.
  std::function<std::optional<std::string>(const S&, int indent)> show;
  // Printed as the default and in `--check` when show() is nullopt.
  std::string unset = "unset";
  // Default text for the reference when show(S{}) does not say it (derived defaults).
  std::string default_text;
  // Failure rule when the key is missing while its parent mapping is present.
  std::string required;
  // When false, `--check` leaves the key out (e.g. hash_key without balance: hash).
  std::function<bool(const S&)> applies;
};

// A field codec turns one YAML node into one field type and back; a row joins
// a codec with the accessor of its field: [](auto& s) -> auto& { return s.x; }.
#define HF_FIELD(member) [](auto& s) -> auto& { return s.member; }

template <class S, class Codec, class Field>
Key<S> row(std::string name, Codec codec, Field field, Reload reload, std::string help) {
  Key<S> k;
  k.name = std::move(name);
  k.type = codec.type();
  k.bounds = codec.bounds();
  k.reload = reload;
  k.help = std::move(help);
  k.read = [codec, field](const ConfigReader& r, const YAML::Node& n, const std::string& key, S& s) {
    codec.read(r, n, key, field(s));
  };
  k.show = [codec, field](const S& s, int) -> std::optional<std::string> { return codec.show(field(s)); };
  return k;
}

// A dotted name's parts: "keepalive.idle_timeout" -> {keepalive, idle_timeout}.
inline std::vector<std::string> name_parts(const std::string& name) {
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    auto dot = name.find('.', start);
    parts.push_back(name.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return parts;
    start = dot + 1;
  }
}

// The node at parts[0..count) under `n`, nullopt when missing. Nodes are only
// ever copy-constructed here: assigning a YAML::Node writes into the tree.
inline std::optional<YAML::Node> node_at(const YAML::Node& n, const std::vector<std::string>& parts, std::size_t count) {
  if (count == 0) return n;
  const auto parent = node_at(n, parts, count - 1);
  if (!parent || !parent->IsMap()) return std::nullopt;
  const YAML::Node& p = *parent;
  YAML::Node child = p[parts[count - 1]];
  if (!child.IsDefined()) return std::nullopt;
  return child;
}

// Reads every key of `keys` present under `n` (a mapping named `prefix`), in
// table order, after refusing any key the table does not declare.
template <class S>
void read_keys(const ConfigReader& r, const YAML::Node& n, const std::string& prefix, const std::vector<Key<S>>& keys, S& s) {
  // Each mapping on a path ("", "keepalive", "queue"...) with its declared children.
  std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> maps;
  for (const auto& k : keys) {
    const auto parts = name_parts(k.name);
    for (std::size_t i = 0; i < parts.size(); ++i) {
      std::vector<std::string> path(parts.begin(), parts.begin() + static_cast<std::ptrdiff_t>(i));
      auto m = std::find_if(maps.begin(), maps.end(), [&](const auto& e) { return e.first == path; });
      if (m == maps.end()) m = maps.insert(maps.end(), {path, {}});
      if (std::find(m->second.begin(), m->second.end(), parts[i]) == m->second.end()) m->second.push_back(parts[i]);
    }
  }
  for (const auto& [path, children] : maps) {
    const auto node = node_at(n, path, path.size());
    if (!node) continue;
    std::string name = prefix;
    for (const auto& part : path) name = ConfigReader::join(name, part);
    std::vector<const char*> allowed;
    for (const auto& c : children) allowed.push_back(c.c_str());
    r.expect_map(*node, name, allowed);
  }
  for (const auto& k : keys) {
    const auto parts = name_parts(k.name);
    const auto key = ConfigReader::join(prefix, k.name);
    if (const auto node = node_at(n, parts, parts.size())) k.read(r, *node, key, s);
    else if (!k.required.empty())
      if (const auto parent = node_at(n, parts, parts.size() - 1)) r.fail(*parent, key, k.required);
  }
}

// The keys of `s` as YAML lines indented by `indent`, in table order.
template <class S>
std::string describe_keys(const std::vector<Key<S>>& keys, const S& s, int indent) {
  std::string out;
  std::vector<std::string> open;  // the parent mappings already printed
  for (const auto& k : keys) {
    if (k.applies && !k.applies(s)) continue;
    const auto parts = name_parts(k.name);
    std::size_t same = 0;
    while (same < open.size() && same + 1 < parts.size() && open[same] == parts[same]) ++same;
    open.resize(same);
    auto value = k.show(s, indent + 2 * static_cast<int>(parts.size()));
    if (!value) {
      // A comment, which opens no mapping: a mapping of comments alone would read as null.
      std::string rest;
      for (std::size_t i = same; i < parts.size(); ++i) rest += (rest.empty() ? "" : ".") + parts[i];
      out += std::string(indent + 2 * same, ' ') + "# " + rest + ": " + k.unset + "\n";
      continue;
    }
    for (; open.size() + 1 < parts.size(); open.push_back(parts[open.size()]))
      out += std::string(indent + 2 * open.size(), ' ') + parts[open.size()] + ":\n";
    const std::string pad(indent + 2 * open.size(), ' ');
    if (!value->empty() && (*value)[0] == '\n') out += pad + parts.back() + ":" + *value;
    else out += pad + parts.back() + ": " + *value + "\n";
  }
  return out;
}

// One value as restart_required() and same_connection_settings() compare it.
template <class S>
std::string value_of(const Key<S>& k, const S& s) {
  return k.show(s, 0).value_or(k.unset);
}

// The reference of one section as a Markdown table; `prefix` names its place
// ("upstreams.*.").
template <class S>
std::string reference_of(const std::vector<Key<S>>& keys, const std::string& prefix) {
  auto cell = [](std::string text) {
    std::string out;
    for (char ch : text) out += ch == '|' ? std::string("\\|") : ch == '\n' ? std::string(" ") : std::string(1, ch);
    return out;
  };
  std::string out = "| Key | Type | Default | Bounds | Reload | Description |\n|---|---|---|---|---|---|\n";
  const S defaults = S();
  for (const auto& k : keys) {
    // A value in code font; words about the value (required, derived, unset) in plain text.
    std::string def = !k.default_text.empty() ? k.default_text : !k.required.empty() ? "required" : k.unset;
    if (k.default_text.empty() && k.required.empty())
      if (auto value = k.show(defaults, 0); value && !value->empty() && (*value)[0] != '\n') def = "`" + cell(*value) + "`";
    out += "| `" + prefix + k.name + "` | " + cell(k.type) + " | " + cell(def) + " | " + cell(k.bounds) + " | " +
           reload_name(k.reload) + " | " + cell(k.help) + " |\n";
  }
  return out;
}

// ---- field codecs: type() and bounds() for the reference, read() and show()
// per field type they accept.

struct DurationCodec {
  bool positive = true;
  std::string type() const { return "duration"; }
  std::string bounds() const { return positive ? "> 0" : ""; }
  Millis parse(const ConfigReader& r, const YAML::Node& n, const std::string& key) const {
    return positive ? r.positive(n, key) : r.duration(n, key);
  }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, Millis& v) const { v = parse(r, n, key); }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, TimeoutValue& v) const {
    v = {parse(r, n, key), Origin::declared};
  }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, std::optional<Millis>& v) const {
    v = parse(r, n, key);
  }
  std::optional<std::string> show(const Millis& v) const { return format_duration(v); }
  std::optional<std::string> show(const TimeoutValue& v) const { return format_duration(v.value); }
  std::optional<std::string> show(const std::optional<Millis>& v) const {
    return v ? std::optional<std::string>(format_duration(*v)) : std::nullopt;
  }
};

struct SizeCodec {
  std::uint64_t min = 0, max = 0;  // max 0: no bounds
  std::string type() const { return "size"; }
  std::string bounds() const { return max ? format_size(min) + ".." + format_size(max) : ""; }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, std::uint64_t& v) const {
    v = r.size(n, key);
    if (max && (v < min || v > max)) r.fail(n, key, "must be between " + format_size(min) + " and " + format_size(max));
  }
  std::optional<std::string> show(std::uint64_t v) const { return format_size(v); }
};

struct CountCodec {
  std::uint64_t min = 0, max = 0;
  std::string type() const { return "count"; }
  std::string bounds() const { return std::to_string(min) + ".." + std::to_string(max); }
  template <class T>
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, T& v) const {
    v = static_cast<T>(r.count(n, key, min, max));
  }
  template <class T>
  std::optional<std::string> show(const T& v) const { return std::to_string(v); }
};

struct BoolCodec {
  std::string type() const { return "boolean"; }
  std::string bounds() const { return ""; }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, bool& v) const { v = r.boolean(n, key); }
  std::optional<std::string> show(bool v) const { return std::string(v ? "true" : "false"); }
};

// One word of a fixed list, each standing for a value of T.
template <class T>
struct WordsCodec {
  std::vector<std::pair<std::string, T>> words;
  std::string noun;  // "'x' is not a NOUN (expected ...)"
  std::string list(const char* last) const {
    std::string out;
    for (std::size_t i = 0; i < words.size(); ++i)
      out += (i == 0 ? "" : i + 1 == words.size() ? last : ", ") + words[i].first;
    return out;
  }
  std::string type() const { return "one of: " + list(", "); }
  std::string bounds() const { return ""; }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, T& v) const {
    auto text = r.scalar(n, key);
    for (const auto& [word, value] : words)
      if (word == text) {
        v = value;
        return;
      }
    r.fail(n, key, "'" + text + "' is not a " + noun + " (expected " + list(" or ") + ")");
  }
  std::optional<std::string> show(const T& v) const {
    for (const auto& [word, value] : words)
      if (value == v) return word;
    return std::nullopt;
  }
};

struct EndpointCodec {
  bool allow_port_zero = false;
  std::string type() const { return "address (host:port)"; }
  std::string bounds() const { return allow_port_zero ? "port 0..65535" : "port 1..65535"; }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, std::optional<Endpoint>& v) const {
    v = r.endpoint(n, key, allow_port_zero);
  }
  std::optional<std::string> show(const std::optional<Endpoint>& v) const {
    return v ? std::optional<std::string>(v->text) : std::nullopt;
  }
};

// One address or a list of them.
struct EndpointsCodec {
  bool allow_port_zero = false;
  bool at_least_one = false;
  std::string shape;  // the rule when the node is neither
  std::string type() const { return "address or list of addresses"; }
  std::string bounds() const { return std::string(at_least_one ? "at least one, " : "") + (allow_port_zero ? "port 0..65535" : "port 1..65535"); }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, std::vector<Endpoint>& v) const {
    v.clear();
    if (n.IsScalar()) v.push_back(r.endpoint(n, key, allow_port_zero));
    else if (n.IsSequence())
      for (std::size_t i = 0; i < n.size(); ++i) v.push_back(r.endpoint(n[i], key + "[" + std::to_string(i) + "]", allow_port_zero));
    else r.fail(n, key, shape);
    if (at_least_one && v.empty()) r.fail(n, key, "expected at least one address");
  }
  std::optional<std::string> show(const std::vector<Endpoint>& v) const {
    std::string out;
    for (const auto& e : v) out += (out.empty() ? "\"" : ", \"") + e.text + "\"";
    return "[" + out + "]";
  }
};

// Free text; `check` returns the broken rule, or "" when the text is fine.
struct StringCodec {
  std::string (*check)(const std::string&) = nullptr;
  std::string type() const { return "string"; }
  std::string bounds() const { return ""; }
  std::string parse(const ConfigReader& r, const YAML::Node& n, const std::string& key) const {
    auto text = r.scalar(n, key);
    if (check)
      if (auto rule = check(text); !rule.empty()) r.fail(n, key, rule);
    return text;
  }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, std::string& v) const { v = parse(r, n, key); }
  void read(const ConfigReader& r, const YAML::Node& n, const std::string& key, std::optional<std::string>& v) const {
    v = parse(r, n, key);
  }
  std::optional<std::string> show(const std::string& v) const { return v.empty() ? std::nullopt : std::optional<std::string>(v); }
  std::optional<std::string> show(const std::optional<std::string>& v) const { return v; }
};

// One entry of an upstream's `servers` list.
struct ServerEntry {
  std::optional<Endpoint> address;
  unsigned weight = 1;
};

// The tables (config_keys.cpp, config_balancing.cpp).
const std::vector<Key<Config>>& top_keys();
const std::vector<Key<UpstreamConfig>>& upstream_keys();
const std::vector<Key<ServerEntry>>& server_keys();
const std::vector<Key<HealthCheckConfig>>& health_check_keys();
const std::vector<Key<RouteConfig>>& route_keys();
// Rows of the upstream table for balancing, failover and limits.
std::vector<Key<UpstreamConfig>> balancing_keys();

// Rules between an upstream's balancing keys, after its table was read (config_balancing.cpp).
void check_balancing(const ConfigReader& r, const YAML::Node& n, const std::string& key, UpstreamConfig& u);
// Reads one upstream (its table, then the rules between its keys; config.cpp).
UpstreamConfig load_upstream(const ConfigReader& r, const std::string& name, const YAML::Node& n);
// Reads one route and resolves the upstream it names (config.cpp).
RouteConfig load_route(const ConfigReader& r, const YAML::Node& n, const std::string& key, const Config& c);

}  // namespace holdfast
