// holdfast: command line, signals, and the Server's life.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "holdfast/config.hpp"
#include "holdfast/event_memory.hpp"
#include "holdfast/server.hpp"

namespace {

const char* kUsage =
    "usage: holdfast [-c FILE] [--check] [--config-reference] [--version] [--help]\n"
    "\n"
    "  -c, --config FILE   configuration file (default /etc/holdfast/holdfast.yaml)\n"
    "  --check             validate FILE, print the effective configuration and the\n"
    "                      keep-alive timeout chain, and exit (0 valid, 1 invalid)\n"
    "  --config-reference  print every configuration key (type, default, bounds,\n"
    "                      reload class, help) as Markdown, and exit\n"
    "  --version           print the version and exit\n"
    "  -h, --help          print this help and exit\n"
    "\n"
    "SIGTERM or SIGINT: stop accepting, let in-flight exchanges finish (up to\n"
    "drain_timeout), close idle connections, exit 0.\n"
    "SIGHUP: reload the configuration file; an invalid one changes nothing.\n";

}  // namespace

int main(int argc, char** argv) {
  // Before any other libevent call: see event_memory.hpp.
  holdfast::event_memory::install();
  std::string path = "/etc/holdfast/holdfast.yaml";
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-c" || a == "--config") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "holdfast: %s needs a file\n%s", a.c_str(), kUsage);
        return 2;
      }
      path = argv[++i];
    } else if (a == "--check" || a == "-t") {
      check = true;
    } else if (a == "--config-reference") {
      std::fputs(holdfast::config_reference().c_str(), stdout);
      return 0;
    } else if (a == "--version") {
      std::printf("holdfast %s\n", HOLDFAST_VERSION);
      return 0;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "holdfast: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }

  holdfast::Config config;
  try {
    config = holdfast::load_config(path);
  } catch (const holdfast::ConfigError& e) {
    std::fprintf(stderr, "holdfast: invalid configuration: %s\n", e.what());
    return 1;
  }
  if (check) {
    std::fputs(holdfast::describe_config(config).c_str(), stdout);
    std::fprintf(stderr, "holdfast: configuration %s is valid\n", path.c_str());
    return 0;
  }

  // Signals are taken synchronously by this thread; the workers never see them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<holdfast::Server> server;
  try {
    server = std::make_unique<holdfast::Server>(std::move(config));
  } catch (const holdfast::ConfigError& e) {
    std::fprintf(stderr, "holdfast: cannot start: %s\n", e.what());
    return 1;
  }
  server->start();

  // SIGHUP and config changes reload here, until SIGTERM or SIGINT.
  int sig = server->run(set);
  // Draining first, then the log line: /ready must turn 503 at once.
  server->request_drain();
  spdlog::info("received {}, draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  server->wait();
  spdlog::info("stats: {}", server->snapshot().format());
  spdlog::info("stopped");
  return 0;
}
