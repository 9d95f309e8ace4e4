"""Load and configs for the live-reload row of scripts/bench (scripts/benchreload.py).

Load: `clients` threads, each on its own keep-alive connection to the proxy,
alternating GET and POST (with a body) and paths /a and /b, for as long as
the row runs (bounded by a deadline). Each thread counts what it saw:

  failed        connect errors, a connection closed or reset before the
                answer (`closed`), no answer in 5 s (`timeout`), 5xx, other
                non-200 statuses
  closed by     the proxy ended a connection the client meant to keep: EOF or
  the proxy     reset while a request was outstanding or being sent
                (`abrupt`), or an answer carrying `Connection: close` (`told`)

Configs, A and B, differ in servers and routes (all backends on 127.0.0.1):
  A   upstream app = backends 1, 2; routes /a -> app, / -> app
  B   upstream app = backends 2, 3, other = backend 3; routes /a -> app,
      /b -> other, / -> app
so backend 2 is in both, and the connections it accepts during the reloads
tell whether a proxy keeps its upstream connections across a reload.
"""

import socket
import threading
import time

BODY = b"x" * 1024
KINDS = ("connect", "closed", "timeout", "5xx", "other")


class Load:
    def __init__(self, port, clients, limit_s):
        self.port = port
        self.clients = clients
        self.deadline = time.monotonic() + limit_s
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "ok": 0, "closed_abrupt": 0, "closed_told": 0, "connections": 0}
        self.counts.update({"failed_" + k: 0 for k in KINDS})
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=10)
        return self.snapshot()

    def snapshot(self):
        with self.lock:
            out = dict(self.counts)
        out["failed"] = sum(out["failed_" + k] for k in KINDS)
        out["closed_by_proxy"] = out["closed_abrupt"] + out["closed_told"]
        return out

    def _add(self, **kv):
        with self.lock:
            for k, v in kv.items():
                self.counts[k] += v

    def _client(self, i):
        sock = f = None
        k = i
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            if sock is None:
                try:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    f = sock.makefile("rb")
                    self._add(connections=1)
                except OSError:
                    self._add(requests=1, failed_connect=1)
                    time.sleep(0.05)
                    continue
            k += 1
            path = "/a" if (k // 2) % 2 == 0 else "/b"
            if k % 2:
                req = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                       "Content-Length: %d\r\n\r\n" % (path, len(BODY))).encode() + BODY
            else:
                req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode()
            verdict, keep = self._exchange(sock, f, req)
            self._add(requests=1, **{verdict: 1})
            if verdict == "failed_closed":
                self._add(closed_abrupt=1)
            elif not keep and verdict != "failed_timeout":
                self._add(closed_told=1)
            if not keep:
                f.close()
                sock.close()
                sock = f = None
        if sock is not None:
            f.close()
            sock.close()

    @staticmethod
    def _exchange(sock, f, req):
        """One request; returns (counter name, whether the connection may be used again)."""
        try:
            sock.sendall(req)
            status = f.readline()
            if not status:
                return "failed_closed", False
            length, close = 0, False
            while True:
                line = f.readline()
                if not line:
                    return "failed_closed", False
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection" and b"close" in value.lower():
                    close = True
            if len(f.read(length)) != length:
                return "failed_closed", False
        except socket.timeout:
            return "failed_timeout", False
        except (ConnectionError, OSError, ValueError):
            return "failed_closed", False
        parts = status.split()
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        verdict = "ok" if code == 200 else ("failed_5xx" if code >= 500 else "failed_other")
        if close:
            # The proxy answered and said it would close: counted as closed by the proxy.
            return verdict, False
        return verdict, True


# --------------------------------------------------------------------------- configs

def holdfast_conf(port, backends, variant):
    b1, b2, b3 = backends
    lines = ['listen: ["127.0.0.1:%d"]' % port, "workers: 1", "drain_timeout: 2s",
             "client: {keepalive_requests: 100000000}", "upstreams:", "  app:", "    servers:"]
    app = (b1, b2) if variant == "A" else (b2, b3)
    lines += ["      - 127.0.0.1:%d" % s for s in app]
    if variant == "B":
        lines += ["  other:", "    servers:", "      - 127.0.0.1:%d" % b3]
    lines += ["routes:", "  - match: {path_prefix: /a}", "    upstream: app"]
    if variant == "B":
        lines += ["  - match: {path_prefix: /b}", "    upstream: other"]
    lines += ["  - match: {path_prefix: /}", "    upstream: app",
              # info: the reload lines ("reload: version N active", "reload failed: ...") are logged at info.
              'log: {level: info, access: "off"}']
    return "\n".join(lines) + "\n"


def nginx_conf(head, temps, port, backends, variant):
    b1, b2, b3 = backends
    app = (b1, b2) if variant == "A" else (b2, b3)
    loc = ('    location %s { proxy_pass http://%s; proxy_http_version 1.1; '
           'proxy_set_header Connection ""; }\n')
    ups = "  upstream app {\n%s    keepalive 32;\n  }\n" % "".join("    server 127.0.0.1:%d;\n" % s for s in app)
    locs = loc % ("/a", "app")
    if variant == "B":
        ups += "  upstream other {\n    server 127.0.0.1:%d;\n    keepalive 32;\n  }\n" % b3
        locs += loc % ("/b", "other")
    locs += loc % ("/", "app")
    return head + """
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
%s
%s
  server {
    listen 127.0.0.1:%d;
%s  }
}
""" % (temps, ups, port, locs)


def haproxy_conf(port, backends, variant):
    b1, b2, b3 = backends
    app = (b1, b2) if variant == "A" else (b2, b3)
    fe = "  acl is_a path_beg /a\n  use_backend app if is_a\n"
    if variant == "B":
        fe += "  acl is_b path_beg /b\n  use_backend other if is_b\n"
    be = "backend app\n  balance roundrobin\n  http-reuse always\n" + "".join(
        "  server s%d 127.0.0.1:%d\n" % (i + 1, s) for i, s in enumerate(app))
    if variant == "B":
        be += "\nbackend other\n  http-reuse always\n  server s3 127.0.0.1:%d\n" % b3
    return """global
  nbthread 1
  maxconn 1000

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 75s
  timeout server 60s
  timeout http-keep-alive 75s

frontend fe
  bind 127.0.0.1:%d
%s  default_backend app

%s""" % (port, fe, be)


def backend_nginx_conf(head, temps, port, name):
    """A backend for the row: answers every GET and POST with 200 and its name; stub_status counts accepts."""
    return head + """
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
%s
  server {
    listen 127.0.0.1:%d backlog=1024;
    location = /nginx_status { stub_status; }
    location / { return 200 "%s\\n"; }
  }
}
""" % (temps, port, name)
