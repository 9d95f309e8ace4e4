"""The admin listener: /metrics moved by real traffic, /status, /ready, /live, 404
and the JSON access log (issue "See the pools")."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402
from metrics_lib import ADMIN, Metrics, admin_get, status, wait_metric  # noqa: E402
import test_errors  # noqa: E402  (its retry backend; its tests are not collected here)

C = "holdfast_"


class AdminEndpointsTest(h.ProxyTestCase):

    def test_paths_methods_ready_live(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top=ADMIN))
        self.assertNotEqual(p.admin_port, p.port, "the admin listener must be its own socket")
        self.assertEqual(admin_get(p, "/ready").status, 200)
        self.assertEqual(admin_get(p, "/live").status, 200)
        self.assertEqual(admin_get(p, "/nope").status, 404)
        self.assertEqual(admin_get(p, "/metrics", method="POST").status, 405)
        r = admin_get(p, "/metrics")
        self.assertTrue(r.headers.get("Content-Type").startswith("text/plain; version=0.0.4"), r.headers)
        # The proxy's port does not serve admin paths: they go to the backend.
        self.assertIn(b"/metrics", h.get(p.port, "/metrics").body)

    def test_admin_off_unless_configured(self):
        b = self.backend()
        p = self.proxy(make_config([b.port]))
        h.get(p.port, "/")
        self.assertIsNone(p.admin_port)

    def test_promtool_accepts_the_exposition(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool missing: scripts/setup installs Debian's prometheus package")
        b1, b2 = self.backend(name="b1"), self.backend(name="b2")
        p = self.proxy(make_config([b1.port, b2.port, h.closed_port()], top=ADMIN))
        for i in range(12):
            h.get(p.port, f"/p{i}")
        text = Metrics(p).text
        res = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
        self.assertEqual(res.returncode, 0, (res.stdout + res.stderr).decode())


class CountersTest(h.ProxyTestCase):
    """Each counter and gauge moved by real traffic and read back from /metrics."""

    def test_requests_responses_bytes_reuse_and_histograms(self):
        b = self.backend(name="b1")
        p = self.proxy(make_config([b.port], top=ADMIN))
        c = self.client(p.port)
        got = 0
        for i in range(10):
            r = c.request("GET", f"/r{i}")
            self.assertEqual(r.status, 200)
            got += len(r.body)
        self.assertEqual(c.request("GET", "/status/404").status, 404)
        c.send(b"BAD REQUEST LINE\r\n\r\n")
        self.assertEqual(c.read_response().status, 400)
        m = Metrics(p)
        srv = {"upstream": "app", "server": f"127.0.0.1:{b.port}"}
        self.assertEqual(m.value(C + "client_connections_accepted_total"), 1)
        self.assertEqual(m.value(C + "requests_total"), 11)
        self.assertEqual(m.value(C + "responses_total", code="2xx", **srv), 10)
        self.assertEqual(m.value(C + "responses_total", code="4xx", **srv), 1)
        self.assertEqual(m.value(C + "local_responses_total"), 1)
        self.assertEqual(m.value(C + "upstream_connections_opened_total", **srv), 1)
        self.assertEqual(m.value(C + "upstream_requests_reused_total", **srv), 10)
        self.assertGreater(m.value(C + "request_bytes_total", **srv), 11 * len("GET /r0 HTTP/1.1\r\n"))
        self.assertGreater(m.value(C + "response_bytes_total", **srv), got)
        self.assertEqual(m.value(C + "upstream_connect_duration_seconds_count", **srv), 1)
        self.assertEqual(m.value(C + "upstream_first_byte_seconds_count", **srv), 11)
        self.assertEqual(m.value(C + "exchange_duration_seconds_count", **srv), 11)
        self.assertEqual(m.value(C + "exchange_duration_seconds_bucket", le="+Inf", **srv), 11)
        self.assertGreater(m.value(C + "exchange_duration_seconds_sum", **srv), 0)

    def test_connection_gauges_while_a_request_is_in_flight(self):
        b = self.backend(name="b1")
        p = self.proxy(make_config([b.port], top=ADMIN))
        idle_clients = [self.client(p.port) for _ in range(3)]
        for c in idle_clients:
            self.assertEqual(c.request("GET", "/warm").status, 200)
        busy = self.client(p.port)
        busy.send(h.build_request("GET", "/hold?wait=g1"))
        self.assertEqual(b.wait_requests(4), 4)
        srv = {"upstream": "app", "server": f"127.0.0.1:{b.port}"}
        m = Metrics(p)
        self.assertEqual(m.value(C + "client_connections", state="idle"), 3)
        self.assertEqual(m.value(C + "client_connections", state="active"), 1)
        self.assertEqual(m.value(C + "upstream_connections", state="active", **srv), 1)
        b.release("g1")
        self.assertEqual(busy.read_response().status, 200)
        self.assertEqual(wait_metric(p, C + "upstream_connections", 0, state="active", **srv), 0)
        m = Metrics(p)
        self.assertEqual(m.value(C + "upstream_connections", state="idle", **srv), 1)
        self.assertEqual(m.value(C + "client_connections", state="idle"), 4)

    def test_connect_failures_and_failing_gauge(self):
        dead = h.closed_port()
        p = self.proxy(make_config([dead], top=ADMIN))
        self.assertEqual(h.get(p.port, "/x").status, 502)
        m = Metrics(p)
        srv = {"upstream": "app", "server": f"127.0.0.1:{dead}"}
        self.assertEqual(m.value(C + "upstream_connect_failures_total", reason="refused", **srv), 1)
        self.assertEqual(m.value(C + "upstream_connect_failing", **srv), 1)
        self.assertEqual(m.value(C + "responses_total", code="5xx", **srv), 1)
        self.assertEqual(m.value(C + "upstream_errors_total"), 1)
        self.assertEqual(status(p)["upstreams"][0]["servers"][0]["state"], "failing")

    def test_connect_timeout(self):
        # A listener whose backlog is full and that never accepts: SYNs are dropped.
        lst = socket.socket()
        self.addCleanup(lst.close)
        lst.bind((h.LOOPBACK, 0))
        lst.listen(0)
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(lst.getsockname())
            fillers.append(s)
            self.addCleanup(s.close)
        time.sleep(0.2)
        port = lst.getsockname()[1]
        p = self.proxy(make_config([port], upstream={"connect_timeout": "300ms"}, top=ADMIN))
        self.assertEqual(h.get(p.port, "/x").status, 504)
        srv = {"upstream": "app", "server": f"127.0.0.1:{port}"}
        self.assertEqual(Metrics(p).value(C + "upstream_connect_failures_total", reason="timeout", **srv), 1)

    def eviction(self, p, reason, port, expected=1, timeout=10.0):
        srv = {"upstream": "app", "server": f"127.0.0.1:{port}"}
        got = wait_metric(p, C + "pool_evictions_total", expected, timeout=timeout, reason=reason, **srv)
        self.assertEqual(got, expected, f"pool_evictions_total{{reason={reason}}}")

    def test_eviction_idle_timeout(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], keepalive={"idle_timeout": "300ms"}, top=ADMIN))
        h.get(p.port, "/a")
        self.eviction(p, "idle_timeout", b.port)

    def test_eviction_and_gauge_from_learned_hint(self):
        b = self.backend(extra_headers=[("Keep-Alive", "timeout=1")])
        p = self.proxy(make_config([b.port], top=ADMIN))
        h.get(p.port, "/a")
        self.eviction(p, "hint", b.port)
        srv = {"upstream": "app", "server": f"127.0.0.1:{b.port}"}
        m = Metrics(p)
        self.assertEqual(m.value(C + "upstream_hints_learned_total", **srv), 1)
        self.assertEqual(m.value(C + "upstream_learned_keepalive_timeout_seconds", **srv), 1.0)

    def test_learned_timeout_gauge(self):
        b = self.backend(extra_headers=[("Keep-Alive", "timeout=7, max=100")])
        p = self.proxy(make_config([b.port], top=ADMIN))
        h.get(p.port, "/a")
        srv = {"upstream": "app", "server": f"127.0.0.1:{b.port}"}
        self.assertEqual(Metrics(p).value(C + "upstream_learned_keepalive_timeout_seconds", **srv), 7.0)
        self.assertEqual(status(p)["upstreams"][0]["servers"][0]["gauges"]["upstream_learned_keepalive_timeout_seconds"], 7)

    def test_eviction_max_requests(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], keepalive={"max_requests": 2}, top=ADMIN))
        c = self.client(p.port)
        for i in range(4):
            self.assertEqual(c.request("GET", f"/m{i}").status, 200)
        self.eviction(p, "max_requests", b.port, expected=2)

    def test_eviction_lifetime(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], keepalive={"max_lifetime": "300ms"}, top=ADMIN))
        h.get(p.port, "/a")
        self.eviction(p, "lifetime", b.port)

    def test_eviction_closed_by_backend(self):
        b = self.backend(idle_close=0.3)
        p = self.proxy(make_config([b.port], top=ADMIN))
        h.get(p.port, "/a")
        self.eviction(p, "closed_by_backend", b.port)

    def test_eviction_not_reusable(self):
        b = self.backend(close_on=[1])
        p = self.proxy(make_config([b.port], top=ADMIN))
        h.get(p.port, "/a")
        self.eviction(p, "not_reusable", b.port)

    def test_eviction_pool_full(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], keepalive={"max_idle": 1}, top=ADMIN))
        clients = [self.client(p.port) for _ in range(2)]
        for c in clients:
            c.send(h.build_request("GET", "/hold?wait=g"))
        self.assertEqual(b.wait_requests(2), 2)
        b.release("g")
        for c in clients:
            self.assertEqual(c.read_response().status, 200)
        self.eviction(p, "pool_full", b.port)

    def stopped_while_backend_closes(self, method):
        """holdfast is stopped while the client's request arrives, and only then
        the backend closes the idle connection. Returns the proxy,
        the backend and the status of that request."""
        closers = []

        def handler(conn, index):
            reader = h.Reader(conn)
            req = h.read_request(reader)
            if req is None:
                return
            done = threading.Event()
            closers.append((conn, done))  # before the answer: the test reads it after the answer
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            done.wait(30 * h.SLOW)
            if index > 1:
                h.read_request(reader)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        b = self.scripted(handler)
        p = self.proxy(make_config([b.port], top=ADMIN))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/a").status, 200)
        time.sleep(0.1)
        p.pause()
        try:
            c.send(h.build_request(method, "/b", body=b"x" if method == "POST" else None))
            time.sleep(0.1)
            conn, done = closers[0]
            conn.shutdown(socket.SHUT_RDWR)
            done.set()
            time.sleep(0.1)
        finally:
            p.send_signal(signal.SIGCONT)
        status = c.read_response().status
        for _, done in closers:
            done.set()
        return p, b, status

    def test_eviction_dead_at_checkout(self):
        # A POST always gets the peek before reuse. On waking, holdfast sees
        # the request and the FIN in one epoll_wait; whichever it handles
        # first, the dead connection is dropped (by the peek, or as closed by
        # the backend) and the POST goes out on a new connection.
        p, b, status = self.stopped_while_backend_closes("POST")
        self.assertEqual(status, 200)
        srv = {"upstream": "app", "server": f"127.0.0.1:{b.port}"}
        self.assertEqual(self.counted_once(p, srv, ("pool_evictions_total", "dead_at_checkout"),
                                           ("pool_evictions_total", "closed_by_backend")), 1)
        self.assertEqual(Metrics(p).value(C + "upstream_retries_total", **srv) or 0, 0)

    def test_get_after_unseen_close_is_retried_or_peeked(self):
        # A GET may skip the peek when the loop has seen the connection quiet
        # since it went idle; here the FIN is seen with the request, so it is
        # dropped by the peek or as closed by the backend, and were it missed,
        # the GET would be retried on a new connection. The client gets its
        # answer in every case, and exactly one of the three is counted.
        p, b, status = self.stopped_while_backend_closes("GET")
        self.assertEqual(status, 200)
        srv = {"upstream": "app", "server": f"127.0.0.1:{b.port}"}
        self.assertEqual(self.counted_once(p, srv, ("pool_evictions_total", "dead_at_checkout"),
                                           ("pool_evictions_total", "closed_by_backend"),
                                           ("upstream_retries_total", "closed_before_response")), 1)

    def counted_once(self, p, srv, *counters):
        """The sum of the (counter, reason) samples, scraped until it is 1 or 10 s passed."""
        deadline = time.monotonic() + 10 * h.SLOW
        while True:
            m = Metrics(p)
            total = sum(m.value(C + name, reason=reason, **srv) or 0 for name, reason in counters)
            if total == 1 or time.monotonic() > deadline:
                return total
            time.sleep(0.05)


class RetryCountersTest(h.ProxyTestCase):
    """Connection 1 serves one request, then reads the next and closes unanswered."""

    backend_closing_second = test_errors.RetryTest.make_backend

    def test_retry_by_reason(self):
        b = self.backend_closing_second()
        p = self.proxy(make_config([b.port], top=ADMIN))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/a").status, 200)
        self.assertEqual(c.request("GET", "/b").status, 200)
        srv = {"upstream": "app", "server": f"127.0.0.1:{b.port}"}
        m = Metrics(p)
        self.assertEqual(m.value(C + "upstream_retries_total", reason="closed_before_response", **srv), 1)
        self.assertEqual(m.value(C + "upstream_retries_refused_total", **srv), 0)

    def test_refused_retry(self):
        b = self.backend_closing_second()
        p = self.proxy(make_config([b.port], top=ADMIN))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/a").status, 200)
        self.assertEqual(c.request("POST", "/b", body=b"x").status, 502)
        srv = {"upstream": "app", "server": f"127.0.0.1:{b.port}"}
        self.assertEqual(Metrics(p).value(C + "upstream_retries_refused_total", **srv), 1)


class AggregationTest(h.ProxyTestCase):

    def test_figures_summed_over_workers_and_status_agrees(self):
        b1, b2 = self.backend(name="b1"), self.backend(name="b2")
        p = self.proxy(make_config([b1.port, b2.port], top=dict(ADMIN, workers=2)))
        for i in range(40):
            self.assertEqual(h.get(p.port, f"/w{i}").status, 200)
        m = Metrics(p)
        self.assertEqual(m.value(C + "requests_total"), 40)
        self.assertEqual(m.value(C + "client_connections_accepted_total"), 40)
        self.assertEqual(m.value(C + "responses_total", code="2xx"), 40)
        opened = m.value(C + "upstream_connections_opened_total")
        self.assertEqual(opened + m.value(C + "upstream_requests_reused_total"), 40)
        st = status(p)
        self.assertEqual(st["workers"], 2)
        servers = st["upstreams"][0]["servers"]
        self.assertEqual([s["address"] for s in servers], [f"127.0.0.1:{b1.port}", f"127.0.0.1:{b2.port}"])
        self.assertEqual(sum(s["counters"]["responses_total"]["2xx"] for s in servers), 40)


class DrainTest(h.ProxyTestCase):

    def test_ready_turns_503_at_sigterm_while_in_flight_requests_finish(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top=ADMIN))
        admin = h.HttpClient(p.admin_port)
        self.addCleanup(admin.close)
        self.assertEqual(admin.request("GET", "/ready").status, 200)
        c = self.client(p.port)
        c.send(h.build_request("GET", "/slow?wait=drain"))
        self.assertEqual(b.wait_requests(1), 1)
        p.send_signal(signal.SIGTERM)
        # The flag is set by the signal thread before any worker hears of the drain.
        self.assertTrue(h.wait_until(lambda: admin.request("GET", "/ready").status == 503, 2.0 * h.SLOW),
                        "/ready still 200 after SIGTERM")
        self.assertEqual(Metrics(p).value(C + "draining"), 1)
        self.assertEqual(admin.request("GET", "/live").status, 200)
        b.release("drain")
        r = c.read_response()
        self.assertEqual(r.status, 200, "the in-flight request did not finish")
        self.assertIsNotNone(p.wait_exit(10 * h.SLOW), "holdfast did not exit after the drain")


class AccessLogFormatTest(h.ProxyTestCase):

    def test_json_access_log(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], log={"access_format": "json"}))
        c = self.client(p.port)
        c.request("GET", "/j1?q=\"x\"")
        c.request("GET", "/j2")
        res = p.stop()
        lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
        self.assertEqual(len(lines), 2, res.stdout)
        first, second = lines
        for key in ("client", "method", "target", "status", "bytes_in", "bytes_out", "upstream", "server",
                    "reused", "retried", "connect_time", "first_byte_time", "total_time"):
            self.assertIn(key, first)
        self.assertEqual((first["method"], first["target"], first["status"]), ("GET", "/j1?q=\"x\"", 200))
        self.assertEqual((first["upstream"], first["server"]), ("app", f"127.0.0.1:{b.port}"))
        self.assertFalse(first["reused"])
        self.assertIsNotNone(first["connect_time"])
        self.assertTrue(second["reused"])
        self.assertIsNone(second["connect_time"])
        self.assertGreater(second["first_byte_time"], 0)
        self.assertGreaterEqual(second["total_time"], second["first_byte_time"])


if __name__ == "__main__":
    unittest.main()
