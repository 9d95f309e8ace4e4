"""A response head is read in small steps (kHeadReadSize, 4 KiB) while its body
may be spliced: a Content-Length body that arrives in the same segment as the
head still goes by splice, apart from the few bytes read with the head, and
comes out intact; responses of every other shape (a head larger than one step,
a body too small to splice, HEAD, 1xx before the final head) are unchanged."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend_lib as bl  # noqa: E402
import harness as h  # noqa: E402
import test_splice as tsp  # noqa: E402  (helpers only; its tests are not collected here)

KIB = 1024
# What may be read with the head: one small step (holdfast's kHeadReadSize).
HEAD_STEP = 4 * KIB


def spliced_since(proxy, before, expected):
    """Response bytes spliced since `before`, once they reach `expected` or 5 s pass:
    the worker counts a splice after the call returns, which may be after the
    client has read the bytes and asked."""
    deadline = time.monotonic() + 5
    while True:
        moved = tsp.spliced(proxy, "response") - before
        if moved >= expected or time.monotonic() > deadline:
            return moved
        time.sleep(0.01)


class SpliceHeadTest(h.ProxyTestCase):
    config = tsp.SpliceTest.config
    read_digest = tsp.SpliceTest.read_digest
    fetch = tsp.SpliceTest.fetch

    def one_write_backend(self, extra_headers=b"", interim=False):
        """Answers /n/BYTES with the head and the whole body in one sendall (one
        segment as far as loopback allows), /head-of/BYTES to HEAD with that
        Content-Length and no body, /close with a close-delimited body, anything
        else with 13 bytes."""
        def respond(conn, req):
            if req.target.startswith("/n/"):
                n = int(req.target[3:])
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (n, extra_headers)
                if interim:
                    # The 103 on its own, read before the final head arrives.
                    conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n")
                    time.sleep(0.05)
                conn.sendall(head + b"".join(tsp.exact_blocks(n)))
            elif req.target == "/close":
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nuntil close")
                return True  # the body ends with the connection
            elif req.method == "HEAD":
                n = int(req.target.rsplit("/", 1)[1])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nhello, world\n")
        return self.scripted(bl.serve_requests(respond))

    def test_head_and_body_in_one_segment_spliced_intact(self):
        b = self.one_write_backend()
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        # 64 KiB (the splice_min_body threshold itself), an odd size and 1 MiB,
        # back to back on one connection: each next response stays in the socket.
        for n in (64 * KIB, 64 * KIB + 1, 1024 * KIB):
            before = tsp.spliced(p, "response")
            self.fetch(c, n)
            moved = spliced_since(p, before, n - HEAD_STEP)
            self.assertGreaterEqual(moved, n - HEAD_STEP, f"only {moved} of {n} bytes went by splice")
            self.assertLessEqual(moved, n)
        r = c.request("GET", "/small")
        self.assertEqual((r.status, r.body), (200, b"hello, world\n"), r)
        self.assertEqual(b.accepted, 1, "the upstream connection was not reused")

    def test_after_a_rechunked_response(self):
        # The previous response went to the client chunked; the next one's head
        # is still read in small steps and its body spliced.
        b = self.one_write_backend()
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        r = c.request("GET", "/close")
        self.assertEqual((r.status, r.headers.get("transfer-encoding"), r.body), (200, "chunked", b"until close"))
        n = 64 * KIB
        before = tsp.spliced(p, "response")
        self.fetch(c, n)
        self.assertGreaterEqual(spliced_since(p, before, n - HEAD_STEP), n - HEAD_STEP)

    def test_head_larger_than_one_step(self):
        # 20 KiB of fields: the head takes several small reads, the body is still spliced.
        fields = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(20))
        b = self.one_write_backend(extra_headers=fields)
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        n = 256 * KIB
        before = tsp.spliced(p, "response")
        self.fetch(c, n)
        self.assertGreaterEqual(spliced_since(p, before, n - HEAD_STEP), n - HEAD_STEP)
        self.assertEqual(c.request("GET", "/small").body, b"hello, world\n")

    def test_interim_head_then_spliced_body(self):
        b = self.one_write_backend(interim=True)
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        n = 128 * KIB
        before = tsp.spliced(p, "response")
        c.send(h.build_request("GET", f"/n/{n}"))
        r, count, digest = self.read_digest(c)
        self.assertEqual((r.status, count, digest), (200, n, tsp.body_digest(n)))
        # After the 103 the final head is read in small steps again, so the
        # body that came with it in one write is still spliced.
        moved = spliced_since(p, before, n - HEAD_STEP)
        self.assertGreaterEqual(moved, n - HEAD_STEP, f"only {moved} of {n} bytes went by splice")
        self.assertEqual(c.request("GET", "/small").body, b"hello, world\n")

    def test_small_mid_and_head_responses_unchanged(self):
        b = self.one_write_backend()
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        before = tsp.spliced(p, "response")
        # Below splice_min_body: buffered whole, whether it fits one small read or not.
        for n in (13, HEAD_STEP - 100, HEAD_STEP, 10 * KIB, 64 * KIB - 1):
            self.fetch(c, n)
        self.assertEqual(tsp.spliced(p, "response"), before, "a body below splice_min_body was spliced")
        # HEAD announces a large length but carries no body: the next response is read as usual.
        c.send(h.build_request("HEAD", f"/head-of/{1024 * KIB}"))
        r = c.read_response(method="HEAD")
        self.assertEqual((r.status, r.headers.get("content-length"), r.body), (200, str(1024 * KIB), b""))
        self.assertEqual(c.request("GET", "/small").body, b"hello, world\n")
        self.assertEqual(b.accepted, 1, "the upstream connection was not reused")


if __name__ == "__main__":
    unittest.main()
