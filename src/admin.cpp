#include "holdfast/admin.hpp"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

#include "holdfast/metrics.hpp"
#include "holdfast/server.hpp"

namespace holdfast {

namespace {
// An admin client gets this long per request before its connection is cut;
// the workers are not affected either way.
constexpr int kAdminTimeoutSeconds = 10;
}  // namespace

Admin::Admin(const Server& server, int fd) : server_(server), started_(std::chrono::steady_clock::now()) {
  event_config* cfg = event_config_new();
  event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
  base_ = event_base_new_with_config(cfg);
  event_config_free(cfg);
  http_ = evhttp_new(base_);
  evhttp_set_timeout(http_, kAdminTimeoutSeconds);
  evhttp_set_max_headers_size(http_, 16 * 1024);
  evhttp_set_max_body_size(http_, 4096);
  evhttp_set_gencb(http_, &Admin::on_request, this);
  // evhttp owns the socket from here on and closes it when freed.
  evhttp_accept_socket_with_handle(http_, fd);
  stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  stop_event_ = event_new(base_, stop_fd_, EV_READ | EV_PERSIST, &Admin::on_stop, this);
  event_add(stop_event_, nullptr);
}

Admin::~Admin() {
  stop();
  event_free(stop_event_);
  evhttp_free(http_);
  event_base_free(base_);
  ::close(stop_fd_);
}

void Admin::start() {
  thread_ = std::thread([this] { event_base_dispatch(base_); });
}

void Admin::stop() {
  if (!thread_.joinable()) return;
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
  thread_.join();
}

void Admin::on_stop(evutil_socket_t fd, short, void* arg) {
  std::uint64_t value;
  [[maybe_unused]] auto n = ::read(fd, &value, sizeof value);
  event_base_loopbreak(static_cast<Admin*>(arg)->base_);
}

void Admin::on_request(evhttp_request* req, void* arg) { static_cast<Admin*>(arg)->answer(req); }

void Admin::answer(evhttp_request* req) {
  const char* path = nullptr;
  if (const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req)) path = evhttp_uri_get_path(uri);
  std::string_view p = path ? path : "";
  if (p.empty()) p = "/";

  int code = 200;
  const char* type = "text/plain; charset=utf-8";
  std::string body;
  const bool draining = server_.draining();
  const auto method = evhttp_request_get_command(req);
  if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
    code = 405;
    body = "method not allowed: the admin listener answers GET and HEAD\n";
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
  } else if (p == "/metrics" || p == "/status") {
    // The layout and the figures of one version: the slots it names were read.
    auto version = server_.version();
    Snapshot figures = server_.snapshot(version->layout.slots);
    MetricsView view{figures, version->layout, draining, server_.live(), server_.worker_count(),
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count()};
    if (p == "/metrics") {
      type = kPrometheusContentType;
      body = render_prometheus(view);
    } else {
      type = "application/json";
      body = render_status_json(view);
    }
  } else if (p == "/") {
    type = "text/html; charset=utf-8";
    body = kStatusPageHtml;
  } else if (p == "/ready") {
    code = draining ? 503 : 200;
    body = draining ? "draining\n" : "ready\n";
  } else if (p == "/live") {
    const bool live = server_.live();
    code = live ? 200 : 503;
    body = live ? "live\n" : "event loop stopped\n";
  } else {
    code = 404;
    body = "not found: the admin listener serves /, /status, /metrics, /ready and /live\n";
  }
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Type", type);
  evhttp_add_header(headers, "Cache-Control", "no-store");
  evbuffer* out = evbuffer_new();
  evbuffer_add(out, body.data(), body.size());
  const char* reason = code == 200   ? "OK"
                       : code == 404 ? "Not Found"
                       : code == 405 ? "Method Not Allowed"
                                     : "Service Unavailable";
  evhttp_send_reply(req, code, reason, out);
  evbuffer_free(out);
}

}  // namespace holdfast
