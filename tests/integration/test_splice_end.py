"""The end of a spliced response body decides the connection's reuse as the
buffered path does: bytes the backend sends past the Content-Length in the same
write (here a whole forged response) refuse reuse and never reach a client, and
a backend that closes right after the body costs the next request nothing (it
goes on a fresh connection, without a retry). A clean end keeps the connection."""

import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import metrics_lib as m  # noqa: E402
import test_splice as tsp  # noqa: E402  (helpers only; its tests are not collected here)

KIB = 1024
# A complete response: were it read as the next request's answer, the client would get it.
FORGED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
# 64 KiB (read with a small head step, then one splice), odd sizes, and bodies
# longer than one splice call (the last call is the one that ends the body).
SIZES = (64 * KIB, 64 * KIB + 1, 100 * KIB + 7, 300 * KIB, 1024 * KIB + 3)


class SpliceEndTest(h.ProxyTestCase):
    config = tsp.SpliceTest.config
    read_digest = tsp.SpliceTest.read_digest
    fetch = tsp.SpliceTest.fetch

    def backend(self, after_body):
        """Answers /n/BYTES with head and body in one write, followed in that same
        write by FORGED when after_body is "surplus"; with "close" it closes the
        connection at once after the body. Anything else: "conn=INDEX"."""
        def handler(conn, index):
            reader = h.Reader(conn, 60 * h.SLOW)
            for _ in range(20):
                req = h.read_request(reader)
                if req is None:
                    return
                if not req.target.startswith("/n/"):
                    body = b"conn=%d" % index
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    continue
                n = int(req.target[3:])
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n
                extra = FORGED if after_body == "surplus" else b""
                if after_body == "close":
                    # Corked: the body's last segment waits for the FIN and
                    # leaves with it, so the FIN reaches holdfast with the last
                    # body bytes, before the client can ask again.
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                conn.sendall(head + b"".join(tsp.exact_blocks(n)) + extra)
                if after_body == "close":
                    conn.shutdown(socket.SHUT_WR)
                    return
        return self.scripted(handler)

    def test_surplus_after_spliced_body_refuses_reuse(self):
        b = self.backend("surplus")
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        before = tsp.spliced(p, "response")
        for i, n in enumerate(SIZES, start=1):
            self.fetch(c, n)
            # Asked right away, on the same client connection: the pooled
            # connection (if it were kept) holds the forged answer.
            r = c.request("GET", "/who")
            self.assertEqual((r.status, r.body), (200, b"conn=%d" % (i + 1)),
                             f"after {n} bytes and surplus, the connection was reused")
            # The answer to /who came on a connection that stays (clean end).
            self.assertEqual(c.request("GET", "/who").body, b"conn=%d" % (i + 1))
        self.assertGreater(tsp.spliced(p, "response") - before, sum(SIZES) - len(SIZES) * 64 * KIB,
                           "the bodies did not go by splice")
        # Each connection that carried surplus bytes was dropped for them:
        # refused when the response ended, closed by the pool's idle watch
        # that read them, or by the peek before its reuse (each is counted).
        met = m.Metrics(p)
        dropped = sum(met.value("holdfast_pool_evictions_total", reason=r) or 0
                      for r in ("not_reusable", "closed_by_backend", "dead_at_checkout"))
        self.assertGreaterEqual(dropped, len(SIZES), "a connection with surplus bytes was not dropped for them")

    def test_fin_right_after_spliced_body(self):
        b = self.backend("close")
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        for i, n in enumerate(SIZES * 2, start=1):
            self.fetch(c, n)
            self.assertEqual(b.accepted, i)
        # Every request found a connection the backend had not closed: none
        # was sent on a closed one and retried.
        self.assertEqual(m.Metrics(p).value("holdfast_upstream_retries_total", reason="closed_before_response") or 0, 0)
        self.assertEqual(c.request("GET", "/who").body, b"conn=%d" % (len(SIZES) * 2 + 1))

    def test_clean_end_keeps_connection(self):
        b = self.backend("nothing")
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        for n in SIZES:
            self.fetch(c, n)
            self.assertEqual(c.request("GET", "/who").body, b"conn=1")
        self.assertEqual(b.accepted, 1, "the upstream connection was not reused")


if __name__ == "__main__":
    unittest.main()
