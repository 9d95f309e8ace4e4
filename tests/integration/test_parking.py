"""Idle keep-alive client connections park (give up their event, their socket
waits in the worker's own epoll set) after 100 ms without a byte, and come back
at once when the client sends, closes, or the proxy has to end them.

The holdfast_client_connections_parked gauge shows which state they are in, so
each case first waits until the connections it uses are parked."""

import os
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402
from metrics_lib import ADMIN, Metrics, wait_metric  # noqa: E402

PARKED = "holdfast_client_connections_parked"
CONNS = "holdfast_client_connections"


class ParkingTest(h.ProxyTestCase):

    def park(self, p, n):
        self.assertEqual(wait_metric(p, PARKED, n, timeout=5), n, "connections not parked")

    def test_parked_connections_serve_their_next_requests(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top=ADMIN))
        clients = [self.client(p.port) for _ in range(30)]
        for i, c in enumerate(clients):
            self.assertEqual(c.request("GET", f"/first/{i}").status, 200)
        self.park(p, 30)
        m = Metrics(p)
        self.assertEqual(m.value(CONNS, state="idle"), 30, "parked connections count as idle")
        # Woken by their requests, in an order unlike the one they parked in.
        for i, c in reversed(list(enumerate(clients))):
            r = c.request("GET", f"/second/{i}")
            self.assertEqual(r.status, 200)
            self.assertIn(f"GET /second/{i}".encode(), r.body)
        # Idle again, they park again, and go on serving.
        self.park(p, 30)
        for i, c in enumerate(clients):
            self.assertEqual(c.request("GET", f"/third/{i}").status, 200)
        # One pooled upstream connection carried it all: parking is on the client side only.
        self.assertEqual(b.accepted, 1)
        self.assertEqual(len(b.requests), 90)

    def test_pipelined_and_split_requests_wake_a_parked_connection(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top=ADMIN))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/a").status, 200)
        self.park(p, 1)
        c.send(h.build_request("GET", "/p1") + h.build_request("GET", "/p2"))
        self.assertIn(b"GET /p1", c.read_response().body)
        self.assertIn(b"GET /p2", c.read_response().body)
        self.park(p, 1)
        # Half a head wakes it; the rest comes after the park delay has passed.
        raw = h.build_request("GET", "/split")
        c.send(raw[:10])
        time.sleep(0.6)
        self.assertEqual(Metrics(p).value(PARKED), 0, "a connection reading a head must not park")
        c.send(raw[10:])
        self.assertIn(b"GET /split", c.read_response().body)

    def test_large_answer_and_upload_on_a_woken_connection(self):
        b = self.backend(body_size=4 * 1024 * 1024)
        p = self.proxy(make_config([b.port], top=ADMIN))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/warm").status, 200)
        self.park(p, 1)
        # The answer is larger than the socket buffers take: the proxy waits
        # for write edges, which only a connection with its event gets.
        r = c.request("GET", "/big")
        self.assertEqual(len(r.body), 4 * 1024 * 1024)
        self.park(p, 1)
        body = os.urandom(3 * 1024 * 1024)
        r = c.request("POST", "/up", body=body)
        self.assertEqual(r.status, 200)
        self.assertEqual(b.requests[-1].body, body)

    def test_client_close_reaches_a_parked_connection(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top=ADMIN))
        clients = [self.client(p.port) for _ in range(5)]
        for c in clients:
            self.assertEqual(c.request("GET", "/").status, 200)
        self.park(p, 5)
        clients[0].close()
        # A reset too: SO_LINGER with a zero timeout makes close() send RST.
        s = clients[1].sock
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        clients[1].close()
        self.assertEqual(wait_metric(p, PARKED, 3, timeout=5), 3)
        self.assertEqual(wait_metric(p, CONNS, 3, timeout=5, state="idle"), 3)
        for c in clients[2:]:
            self.assertEqual(c.request("GET", "/still").status, 200)

    def test_keepalive_timeout_closes_parked_connections(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top=ADMIN, client={"keepalive_timeout": "2s", "keepalive_grace": "0s"}))
        clients = [self.client(p.port) for _ in range(4)]
        for c in clients:
            self.assertEqual(c.request("GET", "/").status, 200)
        self.park(p, 4)
        for c in clients:
            self.assertClosed(c, timeout=5, msg="parked connection outlived keepalive_timeout")
        self.assertEqual(wait_metric(p, PARKED, 0, timeout=5), 0)
        self.assertEqual(wait_metric(p, CONNS, 0, timeout=5, state="idle"), 0)

    def test_sigterm_closes_parked_connections(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top={"drain_timeout": "10s", **ADMIN}))
        clients = [self.client(p.port) for _ in range(3)]
        for c in clients:
            self.assertEqual(c.request("GET", "/").status, 200)
        self.park(p, 3)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        for c in clients:
            self.assertClosed(c, timeout=5, msg="parked connection not closed on SIGTERM")
        res = p.wait_exit(10 * h.SLOW)
        self.assertIsNotNone(res, "holdfast did not exit with only parked connections")
        self.assertEqual(res.code, 0)
        self.assertLess(time.monotonic() - t0, 8 * h.SLOW)


if __name__ == "__main__":
    unittest.main()
