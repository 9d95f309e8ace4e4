"""Upstream connection pooling: reuse, limits, closing, round robin (issue 2, "The pool")."""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import backend_conn, make_config  # noqa: E402


class PoolingTest(h.ProxyTestCase):

    def test_100_sequential_requests_over_at_most_4_upstream_connections(self):
        b = self.backend(name="b1")
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        for i in range(100):
            r = c.request("GET", f"/seq/{i}")
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.body.endswith(f"GET /seq/{i}\n".encode()), r.body)
        self.assertEqual(len(b.requests), 100)
        self.assertLessEqual(b.accepted, 4, f"100 sequential requests used {b.accepted} upstream connections")
        res = p.stop()
        self.assertIsNotNone(res.stats, "no 'stats:' line logged at exit")
        self.assertEqual(res.stats.get("requests"), 100, res.stats)
        self.assertLessEqual(res.stats.get("upstream_connects", 999), 4, res.stats)
        self.assertGreaterEqual(res.stats.get("upstream_reused", 0), 96, res.stats)

    def test_200_requests_from_4_concurrent_clients_over_at_most_4_upstream_connections(self):
        b = self.backend(name="b1")
        p = self.proxy(make_config([b.port]))
        failures = []
        counts = [0] * 4

        def run(k):
            try:
                with h.HttpClient(p.port) as c:
                    for i in range(50):
                        r = c.request("GET", f"/c{k}/{i}")
                        if r.status != 200 or not r.body.endswith(f"GET /c{k}/{i}\n".encode()):
                            failures.append((k, i, r.status, r.body[:100]))
                            return
                        counts[k] += 1
            except Exception as e:  # recorded, asserted below
                failures.append((k, repr(e)))

        threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120 * h.SLOW)
        self.assertFalse(any(t.is_alive() for t in threads), "client threads did not finish")
        self.assertEqual(failures, [])
        self.assertEqual(counts, [50] * 4)
        self.assertEqual(len(b.requests), 200)
        self.assertLessEqual(b.accepted, 4, f"200 requests from 4 clients used {b.accepted} upstream connections")

    def test_pool_is_shared_across_client_connections(self):
        b = self.backend()
        p = self.proxy(make_config([b.port]))
        for i in range(5):
            with h.HttpClient(p.port) as c:
                r = c.request("GET", f"/x{i}")
                self.assertEqual(r.status, 200)
                self.assertEqual(backend_conn(r), 1, "a new client connection did not reuse the pooled upstream")
        self.assertEqual(b.accepted, 1)

    def test_backend_connection_close_opens_new_upstream_connection(self):
        b = self.backend(close_on={3})
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        conns = []
        for i in range(5):
            r = c.request("GET", f"/r{i}")
            self.assertEqual(r.status, 200, r)
            conns.append(backend_conn(r))
        self.assertEqual(conns, [1, 1, 1, 2, 2],
                         "after the backend answered with Connection: close, the next request must use a new connection")
        self.assertEqual(b.accepted, 2)
        # The backend's close token is hop-by-hop: the client connection stays up.
        self.assertNotIn("close", r.headers.tokens("connection"))
        self.assertStillOpen(c)

    def test_idle_connection_closed_by_backend_is_not_reused(self):
        # The backend closes a connection after 0.3 s idle, without saying so.
        b = self.backend(idle_close=0.3)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        r = c.request("GET", "/first")
        self.assertEqual((r.status, backend_conn(r)), (200, 1))
        self.assertEqual(b.wait_closed_conn(1, 10), "idle_close")
        time.sleep(0.5)  # let the FIN reach holdfast's idle watcher
        # A POST is not retried, so reusing the dead connection would show as an error.
        r = c.request("POST", "/second", body=b"payload")
        self.assertEqual(r.status, 200, f"request after the backend closed an idle pooled connection: {r}")
        self.assertEqual(backend_conn(r), 2)
        self.assertEqual([q.target for q in b.requests], ["/first", "/second"])
        self.assertEqual(b.requests[1].body, b"payload")
        res = p.stop()
        self.assertIsNotNone(res.stats, "no 'stats:' line logged at exit")
        self.assertGreaterEqual(res.stats.get("evict_closed_by_backend", 0) + res.stats.get("evict_dead_at_checkout", 0),
                                1, res.stats)

    def test_max_requests_per_upstream_connection(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], keepalive={"max_requests": 3}))
        c = self.client(p.port)
        conns = []
        for i in range(7):
            r = c.request("GET", f"/m{i}")
            self.assertEqual(r.status, 200)
            conns.append(backend_conn(r))
        self.assertEqual(conns, [1, 1, 1, 2, 2, 2, 3])
        self.assertEqual(b.accepted, 3)
        # holdfast closed each used-up connection itself.
        self.assertIn(b.wait_closed_conn(1, 10), ("eof", "reset"))
        self.assertIn(b.wait_closed_conn(2, 10), ("eof", "reset"))
        res = p.stop()
        self.assertGreaterEqual((res.stats or {}).get("evict_max_requests", 0), 2, res.stats)

    def test_max_idle_zero_disables_pooling(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], keepalive={"max_idle": 0}))
        c = self.client(p.port)
        conns = [backend_conn(c.request("GET", f"/n{i}")) for i in range(3)]
        self.assertEqual(conns, [1, 2, 3])

    def test_idle_timeout_closes_pooled_connection(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], keepalive={"idle_timeout": "500ms"}))
        c = self.client(p.port)
        self.assertEqual(backend_conn(c.request("GET", "/a")), 1)
        # holdfast closes the idle connection itself at its idle timeout.
        self.assertIn(b.wait_closed_conn(1, 10), ("eof", "reset"), "pooled connection not closed at idle_timeout")
        self.assertEqual(backend_conn(c.request("GET", "/b")), 2)
        res = p.stop()
        self.assertGreaterEqual((res.stats or {}).get("evict_idle_timeout", 0), 1, res.stats)

    def test_newest_idle_connection_is_reused_first(self):
        b = self.backend()
        p = self.proxy(make_config([b.port]))
        results = {}

        def run(name, target):
            with h.HttpClient(p.port) as c:
                results[name] = c.request("GET", target)

        # Two overlapping requests need two upstream connections; "late" is released last.
        t1 = threading.Thread(target=run, args=("early", "/early?wait=early"))
        t1.start()
        self.assertEqual(b.wait_requests(1), 1)
        t2 = threading.Thread(target=run, args=("late", "/late?wait=late"))
        t2.start()
        self.assertEqual(b.wait_requests(2), 2)
        b.release("early")
        t1.join(30 * h.SLOW)
        time.sleep(0.2)
        b.release("late")
        t2.join(30 * h.SLOW)
        self.assertEqual(results["early"].status, 200)
        self.assertEqual(results["late"].status, 200)
        early, late = backend_conn(results["early"]), backend_conn(results["late"])
        self.assertNotEqual(early, late)
        r = h.get(p.port, "/next")
        self.assertEqual(backend_conn(r), late, "the most recently released idle connection should be taken first")

    def test_max_lifetime_retires_connection(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], keepalive={"max_lifetime": "1s"}))
        c = self.client(p.port)
        self.assertEqual(backend_conn(c.request("GET", "/a")), 1)
        time.sleep(1.3)
        self.assertEqual(backend_conn(c.request("GET", "/b")), 2, "a connection older than max_lifetime was reused")
        res = p.stop()
        self.assertGreaterEqual((res.stats or {}).get("evict_lifetime", 0), 1, res.stats)

    def test_unexpected_bytes_on_idle_connection_close_it(self):
        closed = threading.Event()

        def handler(conn, index):
            reader = h.Reader(conn)
            req = h.read_request(reader)
            if req is None:
                return
            body = f"conn={index}".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            if index == 1:
                time.sleep(0.3)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")  # nobody asked
                if reader.at_eof(10 * h.SLOW):
                    closed.set()
                return
            h.read_request(reader)

        b = self.scripted(handler)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/a").body, b"conn=1")
        self.assertTrue(closed.wait(10 * h.SLOW), "an idle connection that received unexpected bytes was kept")
        r = c.request("GET", "/b")
        self.assertEqual(r.body, b"conn=2", "the stale bytes must never be delivered as a response")

    def test_surplus_bytes_after_response_prevent_reuse(self):
        def handler(conn, index):
            reader = h.Reader(conn)
            for n in range(1, 10):
                req = h.read_request(reader)
                if req is None:
                    return
                body = f"conn={index} req={n}".encode()
                # The first answer carries bytes past its Content-Length in the same write.
                extra = b"SURPLUS" if (index, n) == (1, 1) else b""
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s" % (len(body), body, extra))

        b = self.scripted(handler)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/a").body, b"conn=1 req=1")
        r = c.request("GET", "/b")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"conn=2 req=1", "a connection that read past the end of its response was reused")

    def test_round_robin_across_two_servers(self):
        b1 = self.backend(name="one")
        b2 = self.backend(name="two")
        p = self.proxy(make_config([b1.port, b2.port]))
        c = self.client(p.port)
        names = []
        for i in range(10):
            r = c.request("GET", f"/rr{i}")
            self.assertEqual(r.status, 200)
            names.append(r.headers.get("X-Backend"))
        self.assertEqual(len(b1.requests), 5, names)
        self.assertEqual(len(b2.requests), 5, names)
        for a, z in zip(names, names[1:]):
            self.assertNotEqual(a, z, f"servers did not take turns: {names}")
        # Each server's connection is pooled separately and reused.
        self.assertEqual((b1.accepted, b2.accepted), (1, 1))


if __name__ == "__main__":
    unittest.main()
