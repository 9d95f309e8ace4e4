#include "holdfast/log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace holdfast {

std::shared_ptr<spdlog::logger> setup_logging(const LogConfig& config) {
  auto err = std::make_shared<spdlog::logger>("holdfast", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  err->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  err->set_level(spdlog::level::from_str(config.level));
  err->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(err);

  std::shared_ptr<spdlog::sinks::sink> sink;
  if (config.access == "off") return nullptr;
  if (config.access == "stdout") sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
  else if (config.access == "stderr") sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  else {
    try {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(config.access);
    } catch (const spdlog::spdlog_ex& e) {
      throw ConfigError("log.access: cannot open '" + config.access + "': " + e.what());
    }
  }
  auto access = std::make_shared<spdlog::logger>("access", sink);
  access->set_pattern("%v");
  access->set_level(spdlog::level::info);
  access->flush_on(spdlog::level::info);
  return access;
}

}  // namespace holdfast
