// holdfast-demo-backend: a small HTTP/1.1 server to put behind holdfast.
// Every answer says which backend served it and on which of its connections
// (a serial of accepted connections, from 1) and which request of that
// connection it was, so that pooling can be seen with plain curl.
//
//   holdfast-demo-backend --listen 127.0.0.1:9001 --name backend-1
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>

namespace {

struct ConnInfo {
  unsigned long serial;
  unsigned long requests;
};

struct State {
  std::string name;
  unsigned long next_serial = 1;
  std::unordered_map<evhttp_connection*, ConnInfo> conns;
};

void on_conn_close(evhttp_connection* conn, void* arg) { static_cast<State*>(arg)->conns.erase(conn); }

void on_request(evhttp_request* req, void* arg) {
  auto* st = static_cast<State*>(arg);
  evhttp_connection* conn = evhttp_request_get_connection(req);
  auto it = st->conns.find(conn);
  if (it == st->conns.end()) {
    it = st->conns.emplace(conn, ConnInfo{st->next_serial++, 0}).first;
    evhttp_connection_set_closecb(conn, &on_conn_close, st);
  }
  ++it->second.requests;
  const char* method = "?";
  switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: method = "GET"; break;
    case EVHTTP_REQ_POST: method = "POST"; break;
    case EVHTTP_REQ_HEAD: method = "HEAD"; break;
    case EVHTTP_REQ_PUT: method = "PUT"; break;
    case EVHTTP_REQ_DELETE: method = "DELETE"; break;
    default: break;
  }
  auto serial = std::to_string(it->second.serial);
  auto count = std::to_string(it->second.requests);
  evkeyvalq* out = evhttp_request_get_output_headers(req);
  evhttp_add_header(out, "Content-Type", "text/plain");
  evhttp_add_header(out, "X-Backend", st->name.c_str());
  evhttp_add_header(out, "X-Backend-Connection", serial.c_str());
  evhttp_add_header(out, "X-Backend-Request", count.c_str());
  evbuffer* body = evbuffer_new();
  evbuffer_add_printf(body, "%s conn=%s req=%s %s %s\n", st->name.c_str(), serial.c_str(), count.c_str(), method,
                      evhttp_request_get_uri(req));
  evhttp_send_reply(req, 200, "OK", body);
  evbuffer_free(body);
}

void on_signal(evutil_socket_t, short, void* arg) { event_base_loopexit(static_cast<event_base*>(arg), nullptr); }

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:9001";
  State st;
  st.name = "backend";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--listen")) listen = argv[i + 1];
    else if (!std::strcmp(argv[i], "--name")) st.name = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s --listen HOST:PORT --name NAME\n", argv[0]);
      return 2;
    }
  }
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "holdfast-demo-backend: --listen needs HOST:PORT\n");
    return 2;
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  int port = std::atoi(listen.c_str() + colon + 1);
  signal(SIGPIPE, SIG_IGN);
  event_base* base = event_base_new();
  evhttp* http = evhttp_new(base);
  evhttp_set_gencb(http, &on_request, &st);
  evhttp_set_timeout(http, 120);  // idle keep-alive: far above holdfast's pool idle_timeout
  evhttp_bound_socket* bound = evhttp_bind_socket_with_handle(http, host.c_str(), static_cast<ev_uint16_t>(port));
  if (!bound) {
    std::fprintf(stderr, "holdfast-demo-backend: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  event* sigterm = evsignal_new(base, SIGTERM, &on_signal, base);
  event* sigint = evsignal_new(base, SIGINT, &on_signal, base);
  event_add(sigterm, nullptr);
  event_add(sigint, nullptr);
  std::fprintf(stderr, "%s listening on %s\n", st.name.c_str(), listen.c_str());
  event_base_dispatch(base);
  event_free(sigterm);
  event_free(sigint);
  evhttp_free(http);
  event_base_free(base);
  return 0;
}
