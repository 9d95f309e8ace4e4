// Logging: an error/info log on stderr and an access log whose destination the
// config chooses. Both are spdlog loggers shared by all workers (spdlog's _mt
// sinks serialise writes).
#pragma once

#include <spdlog/spdlog.h>

#include <memory>

#include "holdfast/config.hpp"

namespace holdfast {

// Sets the process-wide default logger (stderr) and builds the access logger.
// Returns nullptr for the access logger when access logging is off.
// Throws ConfigError when the access log file cannot be opened.
std::shared_ptr<spdlog::logger> setup_logging(const LogConfig& config);

}  // namespace holdfast
