#include "holdfast/metrics.hpp"

#include <spdlog/fmt/fmt.h>

#include <string_view>

namespace holdfast {

namespace {

// A timeout never learned is absent rather than a misleading 0.
bool absent_when_zero(Gauge g) { return g == Gauge::learned_timeout_ms || g == Gauge::observed_timeout_ms; }

// Prometheus label values and JSON strings escape the same three characters
// that can occur in config-supplied names (backslash, quote, newline).
void append_escaped(std::string& out, std::string_view s) {
  for (char c : s) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
}

// The value of a one-label string such as `reason="idle_timeout"`.
std::string_view label_value(std::string_view labels) {
  auto open = labels.find("=\"");
  if (open == std::string_view::npos) return labels;
  return labels.substr(open + 2, labels.size() - open - 3);
}

struct SlotLabels {
  std::string prometheus;  // upstream="app",server="127.0.0.1:9001"
};

std::vector<SlotLabels> slot_labels(const MetricsLayout& layout) {
  std::vector<SlotLabels> out(layout.slots);
  for (const auto& u : layout.upstreams)
    for (std::size_t i = 0; i < u.servers.size(); ++i) {
      auto& l = out[u.slots[i]].prometheus;
      l = "upstream=\"";
      append_escaped(l, u.name);
      l += "\",server=\"";
      append_escaped(l, u.servers[i]);
      l += '"';
    }
  return out;
}

void append_header(std::string& out, const char* family, const char* help, const char* type) {
  out += fmt::format("# HELP holdfast_{} {}\n# TYPE holdfast_{} {}\n", family, help, family, type);
}

void append_sample(std::string& out, std::string_view name, std::string_view slot_labels, std::string_view labels,
                   std::string_view value) {
  out += "holdfast_";
  out += name;
  if (!slot_labels.empty() || !labels.empty()) {
    out += '{';
    out += slot_labels;
    if (!slot_labels.empty() && !labels.empty()) out += ',';
    out += labels;
    out += '}';
  }
  out += ' ';
  out += value;
  out += '\n';
}

// Slots a figure of `scope` lives in: slot 0, or the slot of every server
// of the current version (a removed server's slot is no longer shown).
template <typename F>
void for_each_slot(Scope scope, const MetricsLayout& layout, F&& f) {
  if (scope == Scope::worker) {
    f(std::size_t{0});
    return;
  }
  for (const auto& u : layout.upstreams)
    for (auto s : u.slots) f(s);
}

}  // namespace

double reuse_ratio(const Snapshot& figures, std::size_t slot) {
  double reused = static_cast<double>(figures.get(slot, Counter::upstream_reused));
  double opened = static_cast<double>(figures.get(slot, Counter::upstream_connects));
  return reused + opened > 0 ? reused / (reused + opened) : 0.0;
}

std::string render_prometheus(const MetricsView& v) {
  const auto labels = slot_labels(v.layout);
  std::string out;
  out.reserve(16384);
  std::string_view family;
  for (std::size_t i = 0; i < kCounters; ++i) {
    const auto& c = info(static_cast<Counter>(i));
    if (family != c.family) append_header(out, c.family, c.help, "counter");
    family = c.family;
    for_each_slot(c.scope, v.layout, [&](std::size_t s) {
      append_sample(out, c.family, labels[s].prometheus, c.labels, std::to_string(v.figures.get(s, static_cast<Counter>(i))));
    });
  }
  for (std::size_t i = 0; i < kGauges; ++i) {
    const auto& g = info(static_cast<Gauge>(i));
    if (family != g.family) append_header(out, g.family, g.help, "gauge");
    family = g.family;
    for_each_slot(g.scope, v.layout, [&](std::size_t s) {
      auto value = v.figures.get(s, static_cast<Gauge>(i));
      if (absent_when_zero(static_cast<Gauge>(i)) && value == 0) return;
      append_sample(out, g.family, labels[s].prometheus, g.labels, fmt::format("{}", static_cast<double>(value) * g.scale));
    });
  }
  append_header(out, "draining", "1 from the stop signal until exit: new connections are refused, /ready answers 503.", "gauge");
  append_sample(out, "draining", "", "", v.draining ? "1" : "0");
  for (std::size_t i = 0; i < kHistograms; ++i) {
    const auto& h = info(static_cast<Histogram>(i));
    append_header(out, h.family, h.help, "histogram");
    for_each_slot(Scope::server, v.layout, [&](std::size_t s) {
      const std::uint64_t* cells = v.figures.cells(s, static_cast<Histogram>(i));
      std::uint64_t cumulative = 0;
      std::string bucket = std::string(h.family) + "_bucket";
      for (std::size_t b = 0; b <= kBuckets; ++b) {
        cumulative += cells[b];
        auto le = b < kBuckets ? fmt::format("le=\"{}\"", kBucketBounds[b]) : std::string("le=\"+Inf\"");
        append_sample(out, bucket, labels[s].prometheus, le, std::to_string(cumulative));
      }
      append_sample(out, std::string(h.family) + "_sum", labels[s].prometheus, "",
                    fmt::format("{}", static_cast<double>(cells[kBuckets + 1]) / 1e9));
      append_sample(out, std::string(h.family) + "_count", labels[s].prometheus, "", std::to_string(cumulative));
    });
  }
  return out;
}

namespace {

// {"family": n} for label-less figures, {"family": {"label value": n, ...}}
// for families split by one label; figures of `scope` at `slot` only.
template <typename Enum, typename Value>
void append_families(std::string& out, std::size_t count, Scope scope, std::size_t slot, Value&& value) {
  out += '{';
  std::string_view family;
  bool in_object = false;  // inside the {"label value": n, ...} of a labelled family
  for (std::size_t i = 0; i < count; ++i) {
    const auto& m = info(static_cast<Enum>(i));
    if (m.scope != scope) continue;
    const bool labelled = *m.labels != '\0';
    if (family != m.family) {
      if (in_object) out += '}';
      if (!family.empty()) out += ',';
      out += fmt::format("\"{}\":", m.family);
      if (labelled) out += '{';
      in_object = labelled;
    } else {
      out += ',';
    }
    if (labelled) out += fmt::format("\"{}\":", label_value(m.labels));
    out += value(static_cast<Enum>(i), slot);
    family = m.family;
  }
  if (in_object) out += '}';
  out += '}';
}

}  // namespace

std::string render_status_json(const MetricsView& v) {
  const auto& f = v.figures;
  auto counter = [&](Counter c, std::size_t s) { return std::to_string(f.get(s, c)); };
  auto gauge = [&](Gauge g, std::size_t s) -> std::string {
    auto value = f.get(s, g);
    if (absent_when_zero(g) && value == 0) return "null";
    return fmt::format("{}", static_cast<double>(value) * info(g).scale);
  };
  std::string out;
  out.reserve(8192);
  out += fmt::format("{{\"version\":\"{}\",\"draining\":{},\"live\":{},\"workers\":{},\"uptime_seconds\":{:.1f},\"counters\":",
                     HOLDFAST_VERSION, v.draining, v.live, v.workers, v.uptime_seconds);
  append_families<Counter>(out, kCounters, Scope::worker, 0, counter);
  out += ",\"gauges\":";
  append_families<Gauge>(out, kGauges, Scope::worker, 0, gauge);
  out += ",\"upstreams\":[";
  for (std::size_t u = 0; u < v.layout.upstreams.size(); ++u) {
    const auto& up = v.layout.upstreams[u];
    out += u ? ",{\"name\":\"" : "{\"name\":\"";
    append_escaped(out, up.name);
    out += "\",\"servers\":[";
    for (std::size_t i = 0; i < up.servers.size(); ++i) {
      std::size_t s = up.slots[i];
      bool used = f.get(s, Counter::upstream_connects) + f.get(s, Gauge::connect_failing) > 0;
      // Down (ejected or failing its checks) outranks everything: it gets no traffic.
      const char* state = f.get(s, Gauge::server_up) == 0     ? "down"
                          : f.get(s, Gauge::connect_failing) ? "failing"
                          : used                             ? "up"
                                                             : "no traffic";
      out += i ? ",{\"address\":\"" : "{\"address\":\"";
      append_escaped(out, up.servers[i]);
      out += fmt::format("\",\"state\":\"{}\",\"reuse_ratio\":{:.4f},\"counters\":", state, reuse_ratio(f, s));
      append_families<Counter>(out, kCounters, Scope::server, s, counter);
      out += ",\"gauges\":";
      append_families<Gauge>(out, kGauges, Scope::server, s, gauge);
      out += ",\"histograms\":{";
      for (std::size_t h = 0; h < kHistograms; ++h) {
        const std::uint64_t* cells = f.cells(s, static_cast<Histogram>(h));
        std::uint64_t count = 0;
        for (std::size_t b = 0; b <= kBuckets; ++b) count += cells[b];
        out += fmt::format("{}\"{}\":{{\"count\":{},\"sum\":{}}}", h ? "," : "", info(static_cast<Histogram>(h)).family,
                           count, static_cast<double>(cells[kBuckets + 1]) / 1e9);
      }
      out += "}}";
    }
    out += "]}";
  }
  out += "]}";
  return out;
}

}  // namespace holdfast
