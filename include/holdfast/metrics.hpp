// Turns the workers' merged figures into what the admin listener serves: the
// Prometheus text exposition format (version 0.0.4) and the /status JSON
// that the status page reads. Both walk the declaration lists of stats.hpp,
// so a figure added there appears in both without further code.
#pragma once

#include <string>

#include "holdfast/stats.hpp"

namespace holdfast {

// A moment of the whole process, as the admin thread sees it.
struct MetricsView {
  const Snapshot& figures;        // summed over workers
  const MetricsLayout& layout;
  bool draining = false;
  bool live = false;
  unsigned workers = 1;
  double uptime_seconds = 0;
};

inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

std::string render_prometheus(const MetricsView& view);
std::string render_status_json(const MetricsView& view);

// Share of upstream requests sent on an already open connection:
// reused / (reused + opened); 0 when nothing was sent.
double reuse_ratio(const Snapshot& figures, std::size_t slot);

// The status page (one HTML document, no external resources); it polls /status.
extern const char* const kStatusPageHtml;

}  // namespace holdfast
