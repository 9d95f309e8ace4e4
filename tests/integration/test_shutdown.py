"""Graceful shutdown (issue 2, "Operations"): SIGTERM/SIGINT stop accepting, let
in-flight exchanges finish up to drain_timeout, close idle connections, exit 0."""

import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402


class ShutdownTest(h.ProxyTestCase):

    def in_flight(self, p, target):
        """Starts a request in a thread; returns (thread, holder of the response or error)."""
        box = {}

        def run():
            try:
                c = h.HttpClient(p.port, 30 * h.SLOW)
                box["client"] = c
                box["response"] = c.request("GET", target)
                box["closed_after"] = c.wait_closed(5)
            except Exception as e:  # asserted by the test
                box["error"] = e
            finally:
                if "client" in box:
                    box["client"].close()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, box

    def test_sigterm_lets_in_flight_request_finish_and_exits_0(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top={"drain_timeout": "10s"}))
        t, box = self.in_flight(p, "/slow?wait=go")
        self.assertEqual(b.wait_requests(1), 1)
        p.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        self.assertTrue(p.alive(), "holdfast exited with an exchange in flight")
        b.release("go")
        t.join(30 * h.SLOW)
        self.assertNotIn("error", box, box.get("error"))
        r = box["response"]
        self.assertEqual(r.status, 200)
        self.assertTrue(r.body.startswith(b"backend conn=1 req=1 GET /slow"), r.body)
        self.assertTrue(box["closed_after"], "client connection not closed after its last response during drain")
        res = p.wait_exit(10 * h.SLOW)
        self.assertIsNotNone(res, "holdfast did not exit after the in-flight request finished")
        self.assertEqual(res.code, 0)
        self.assertIsNotNone(res.stats, "no 'stats:' line at exit")
        self.assertEqual(res.stats.get("requests"), 1, res.stats)

    def test_sigterm_closes_idle_client_connections(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top={"drain_timeout": "10s"}))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/one").status, 200)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        self.assertClosed(c, timeout=5, msg="idle client connection not closed on SIGTERM")
        res = p.wait_exit(10 * h.SLOW)
        self.assertIsNotNone(res, "holdfast did not exit with only idle connections")
        self.assertEqual(res.code, 0)
        # Idle connections do not hold the drain: well under drain_timeout.
        self.assertLess(time.monotonic() - t0, 8 * h.SLOW)
        # The idle pooled upstream connection was closed too.
        self.assertIn(b.wait_closed_conn(1, 5), ("eof", "reset"))

    def test_new_connections_refused_after_sigterm(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top={"drain_timeout": "10s"}))
        port = p.port
        t, box = self.in_flight(p, "/hold?wait=go")
        self.assertEqual(b.wait_requests(1), 1)
        p.send_signal(signal.SIGTERM)

        def refused():
            try:
                s = socket.create_connection((h.LOOPBACK, port), timeout=2)
            except ConnectionRefusedError:
                return True
            except OSError:
                return False
            s.close()
            return False

        try:
            self.assertTrue(h.wait_until(refused, 5 * h.SLOW, 0.1),
                            "new connections still accepted after SIGTERM")
            self.assertTrue(p.alive(), "exited before the in-flight request finished")
        finally:
            b.release("go")
        t.join(30 * h.SLOW)
        self.assertEqual(box["response"].status, 200)
        res = p.wait_exit(10 * h.SLOW)
        self.assertIsNotNone(res)
        self.assertEqual(res.code, 0)

    def test_drain_timeout_bounds_shutdown(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top={"drain_timeout": "1s"}))
        t, box = self.in_flight(p, "/forever?wait=never")
        self.assertEqual(b.wait_requests(1), 1)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        res = p.wait_exit(15 * h.SLOW)
        elapsed = time.monotonic() - t0
        b.release("never")
        self.assertIsNotNone(res, "holdfast did not exit after drain_timeout")
        self.assertEqual(res.code, 0)
        self.assertGreaterEqual(elapsed, 0.8, "holdfast did not wait for the in-flight exchange")
        t.join(10 * h.SLOW)
        if "response" in box:  # an error page is acceptable, a success is not
            self.assertGreaterEqual(box["response"].status, 500, box["response"])

    def test_sigint_behaves_like_sigterm(self):
        b = self.backend()
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/x").status, 200)
        res = p.stop(signal.SIGINT)
        self.assertFalse(res.killed, "holdfast ignored SIGINT")
        self.assertEqual(res.code, 0)
        self.assertTrue(c.wait_closed(5))


if __name__ == "__main__":
    unittest.main()
