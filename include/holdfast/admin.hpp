// The admin listener: GET /metrics (Prometheus), /status (JSON), / (the status
// page), /ready and /live; 404 for any other path, 405 for methods other
// than GET and HEAD.
//
// It runs on its own thread with its own event_base, so a slow or hostile
// admin client can never stall a worker: the workers never wait for it, and
// it only reads what they publish (the atomics of their Stats) and the
// Server's flags. It owns its socket and its thread, nothing else.
#pragma once

#include <event2/event.h>
#include <event2/http.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace holdfast {

class Server;

class Admin {
 public:
  // Takes ownership of `fd` (bound, listening, non-blocking). `server` must
  // outlive this object; only its thread-safe accessors are used.
  Admin(const Server& server, int fd);
  ~Admin();  // stops the thread if it runs
  Admin(const Admin&) = delete;
  Admin& operator=(const Admin&) = delete;

  void start();
  // Thread-safe; returns once the admin thread has ended.
  void stop();

 private:
  static void on_request(evhttp_request* req, void* arg);
  static void on_stop(evutil_socket_t fd, short, void* arg);
  void answer(evhttp_request* req);

  const Server& server_;
  event_base* base_ = nullptr;
  evhttp* http_ = nullptr;
  event* stop_event_ = nullptr;
  int stop_fd_ = -1;  // eventfd: how stop() reaches the admin thread
  std::chrono::steady_clock::time_point started_;
  std::thread thread_;
};

}  // namespace holdfast
