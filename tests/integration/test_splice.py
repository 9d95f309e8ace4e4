"""Large bodies move socket to socket with splice(2) (splice_min_body): intact both
ways, counted in holdfast_spliced_bytes_total, with bounded memory, backpressure,
timeouts and keep-alive reuse as for buffered bodies; chunked bodies stay buffered."""

import hashlib
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend_lib as bl  # noqa: E402
import harness as h  # noqa: E402
import metrics_lib as m  # noqa: E402
import test_streaming as ts  # noqa: E402  (helpers only; its tests are not collected here)
from harness import make_config  # noqa: E402

MIB = 1024 * 1024
BIG = 64 * MIB
SPLICED = "holdfast_spliced_bytes_total"
# Bytes that may go the buffered way: those read together with the head.
HEAD_SLACK = 512 * 1024


def spliced(proxy, direction):
    return m.Metrics(proxy).value(SPLICED, direction=direction) or 0


def exact_blocks(total):
    """The first `total` bytes of the test_streaming block stream (any length)."""
    i = 0
    while total > 0:
        block = h.pattern_block(i, ts.BLOCK)[:total]
        yield block
        total -= len(block)
        i += 1


def body_digest(total):
    d = hashlib.sha256()
    for block in exact_blocks(total):
        d.update(block)
    return d.hexdigest()


def send_body(sock, total):
    for block in exact_blocks(total):
        sock.sendall(block)


class SpliceTest(h.ProxyTestCase):

    def config(self, ports, **kw):
        top = dict(m.ADMIN)
        top["splice_min_body"] = "64k"
        top.update(kw.pop("top", {}))
        return make_config(ports, top=top, **kw)

    def sized_backend(self, sizes):
        """Answers each request with the body size its target names (/n/BYTES), or 'ok'."""
        def respond(conn, req):
            if req.target.startswith("/n/"):
                n = int(req.target[3:])
                # The head and the body's first MiB in one write: holdfast's first
                # reads return full, so the switch to splice happens mid-read.
                body = exact_blocks(n)
                first = b"".join(next(body, b"") for _ in range(16))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (n, first))
                for block in body:
                    conn.sendall(block)
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return self.scripted(bl.serve_requests(respond))

    def read_digest(self, client):
        digest = hashlib.sha256()
        count = [0]

        def sink(piece):
            count[0] += len(piece)
            digest.update(piece)
        r = client.read_response(sink=sink)
        return r, count[0], digest.hexdigest()

    def fetch(self, c, n):
        """GET /n/N on client c: a 200 whose body is the N bytes of body_digest(N)."""
        c.send(h.build_request("GET", f"/n/{n}"))
        r, count, digest = self.read_digest(c)
        self.assertEqual(r.status, 200, r)
        self.assertEqual((count, digest), (n, body_digest(n)), f"body of {n} bytes corrupted")

    def test_64mib_download_spliced_intact_bounded(self):
        b = self.sized_backend(None)
        p = self.proxy(self.config([b.port]), env=ts.ASAN_ENV)
        baseline = ts.StreamingTest.warm_up(self, p)
        before = spliced(p, "response")
        c = self.client(p.port, 60 * h.SLOW)
        with ts.RssMonitor(p) as mon:
            c.send(h.build_request("GET", f"/n/{BIG}"))
            r, count, digest = self.read_digest(c)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(count, BIG)
        self.assertEqual(digest, body_digest(BIG), "downloaded body corrupted")
        # The worker counts a pump's bytes when its run() returns, which may be
        # after the client has read them.
        h.wait_until(lambda: spliced(p, "response") - before > BIG - HEAD_SLACK, 5 * h.SLOW)
        moved = spliced(p, "response") - before
        self.assertGreater(moved, BIG - HEAD_SLACK, f"only {moved} of {BIG} bytes went by splice")
        self.assertLessEqual(moved, BIG)
        growth = mon.peak - baseline
        self.assertLess(growth, ts.RSS_GROWTH_LIMIT_KB, f"holdfast RSS grew {growth} KiB during a spliced download")
        print(f"\nspliced download: RSS growth {growth} KiB, {moved} bytes spliced", file=sys.stderr)
        self.assertEqual(c.request("GET", "/after").status, 200)

    def test_64mib_upload_spliced_intact_bounded(self):
        stalled = []

        def sink_backend(conn, index):
            reader = h.Reader(conn, 60 * h.SLOW)
            for _ in range(10):
                digest = hashlib.sha256()
                count = [0]

                def sink(piece):
                    count[0] += len(piece)
                    digest.update(piece)
                    if count[0] >= 8 * MIB and not stalled:
                        # The backend stops reading for a while: holdfast must stop
                        # reading the client (the pipe is full), not buffer the body.
                        stalled.append(True)
                        time.sleep(1.5)
                req = h.read_request(reader, sink=sink)
                if req is None:
                    return
                body = f"{count[0]} {digest.hexdigest()}".encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

        b = self.scripted(sink_backend)
        p = self.proxy(self.config([b.port]), env=ts.ASAN_ENV)
        baseline = ts.StreamingTest.warm_up(self, p)
        before = spliced(p, "request")
        c = self.client(p.port, 60 * h.SLOW)
        with ts.RssMonitor(p) as mon:
            c.send(b"POST /upload HTTP/1.1\r\nHost: holdfast.test\r\nContent-Length: %d\r\n\r\n" % BIG)
            send_body(c.sock, BIG)
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, f"{BIG} {body_digest(BIG)}".encode(), "uploaded body corrupted")
        self.assertTrue(stalled)
        moved = spliced(p, "request") - before
        self.assertGreater(moved, BIG - HEAD_SLACK, f"only {moved} of {BIG} bytes went by splice")
        self.assertLessEqual(moved, BIG)
        growth = mon.peak - baseline
        self.assertLess(growth, ts.RSS_GROWTH_LIMIT_KB, f"holdfast RSS grew {growth} KiB during a spliced upload")
        print(f"\nspliced upload: RSS growth {growth} KiB, {moved} bytes spliced", file=sys.stderr)
        self.assertEqual(c.request("GET", "/after").status, 200)

    def test_keepalive_both_legs_after_spliced_bodies(self):
        b = self.sized_backend(None)
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        sizes = [8 * MIB, 3 * MIB + 17]
        for n in sizes:
            self.fetch(c, n)
        r = c.request("GET", "/small")
        self.assertEqual((r.status, r.body), (200, b"ok"), r)
        self.assertEqual(b.accepted, 1, "the upstream connection was not reused after spliced bodies")
        self.assertGreater(spliced(p, "response"), sum(sizes) - 2 * HEAD_SLACK)

    def test_pipelined_request_after_spliced_upload(self):
        seen = []

        def handler(conn, index):
            reader = h.Reader(conn, 60 * h.SLOW)
            for _ in range(5):
                digest = hashlib.sha256()
                count = [0]

                def sink(piece):
                    count[0] += len(piece)
                    digest.update(piece)
                req = h.read_request(reader, sink=sink)
                if req is None:
                    return
                seen.append(req.target)
                body = f"{req.target} {count[0]} {digest.hexdigest()}".encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

        b = self.scripted(handler)
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        n = 8 * MIB
        c.send(b"POST /up HTTP/1.1\r\nHost: holdfast.test\r\nContent-Length: %d\r\n\r\n" % n)
        send_body(c.sock, n)
        # The next request follows the body's last byte at once, in the same stream.
        c.send(h.build_request("GET", "/next"))
        r1 = c.read_response()
        r2 = c.read_response()
        self.assertEqual(r1.body, f"/up {n} {body_digest(n)}".encode())
        self.assertEqual(r2.body, f"/next 0 {hashlib.sha256().hexdigest()}".encode())
        self.assertEqual(seen, ["/up", "/next"])
        self.assertGreater(spliced(p, "request"), n - HEAD_SLACK)

    def test_chunked_bodies_stay_buffered(self):
        n = 16 * MIB

        def handler(conn, index):
            reader = h.Reader(conn, 60 * h.SLOW)
            for _ in range(5):
                digest = hashlib.sha256()
                count = [0]

                def sink(piece):
                    count[0] += len(piece)
                    digest.update(piece)
                req = h.read_request(reader, sink=sink)
                if req is None:
                    return
                if req.method == "POST":
                    body = f"{count[0]} {digest.hexdigest()}".encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    continue
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for block in ts.blocks(n):
                    conn.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                conn.sendall(b"0\r\n\r\n")

        b = self.scripted(handler)
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        c.send(h.build_request("GET", "/chunked"))
        r, count, digest = self.read_digest(c)
        self.assertEqual((r.status, count, digest), (200, n, body_digest(n)))
        c.send(b"POST /up HTTP/1.1\r\nHost: holdfast.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        for block in ts.blocks(n):
            c.send(b"%x\r\n%s\r\n" % (len(block), block))
        c.send(b"0\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.body, f"{n} {body_digest(n)}".encode())
        self.assertEqual(spliced(p, "response"), 0)
        self.assertEqual(spliced(p, "request"), 0)

    def test_close_delimited_response_to_http10_client_spliced(self):
        n = 16 * MIB

        def handler(conn, index):
            reader = h.Reader(conn, 60 * h.SLOW)
            if h.read_request(reader) is None:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            send_body(conn, n)

        b = self.scripted(handler)
        p = self.proxy(self.config([b.port]))
        c = self.client(p.port, 60 * h.SLOW)
        c.send(b"GET /eof HTTP/1.0\r\nHost: holdfast.test\r\n\r\n")
        digest = hashlib.sha256()
        count = [0]

        def sink(piece):
            count[0] += len(piece)
            digest.update(piece)
        head = c.reader.read_until(b"\r\n\r\n", 65536)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        c.reader.read_to_eof(sink=sink)
        self.assertEqual((count[0], digest.hexdigest()), (n, body_digest(n)))
        self.assertGreater(spliced(p, "response"), n - HEAD_SLACK)

    def test_backend_stalls_mid_body_read_timeout_closes_client(self):
        n = 16 * MIB
        release = threading.Event()
        self.addCleanup(release.set)

        def handler(conn, index):
            reader = h.Reader(conn, 60 * h.SLOW)
            if h.read_request(reader) is None:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
            send_body(conn, 4 * MIB)
            release.wait(30)

        b = self.scripted(handler)
        p = self.proxy(self.config([b.port], upstream={"read_timeout": "1s"}))
        c = self.client(p.port, 30 * h.SLOW)
        c.send(h.build_request("GET", "/stall"))
        head = c.reader.read_until(b"\r\n\r\n", 65536)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        got = [0]
        started = time.monotonic()
        c.reader.read_to_eof(sink=lambda piece: got.__setitem__(0, got[0] + len(piece)))
        self.assertEqual(got[0], 4 * MIB, "the client did not get exactly what the backend sent")
        self.assertLess(time.monotonic() - started, 20 * h.SLOW)
        self.assertGreater(spliced(p, "response"), 4 * MIB - HEAD_SLACK)
        m.wait_metric(p, "holdfast_upstream_errors_total", 1)

    def test_slow_reading_client_backpressure_bounded(self):
        b = self.sized_backend(None)
        p = self.proxy(self.config([b.port]), env=ts.ASAN_ENV)
        baseline = ts.StreamingTest.warm_up(self, p)
        sock = socket.create_connection((h.LOOPBACK, p.port), timeout=60 * h.SLOW)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(h.build_request("GET", f"/n/{BIG}"))
        reader = h.Reader(sock, 60 * h.SLOW)
        with ts.RssMonitor(p) as mon:
            time.sleep(2.0)  # holdfast is offered the whole body while the client reads nothing
            head = reader.read_until(b"\r\n\r\n", 65536)
            self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
            digest = hashlib.sha256()
            left = BIG
            if reader.buf:
                piece = bytes(reader.buf[:left])
                del reader.buf[:len(piece)]
                digest.update(piece)
                left -= len(piece)
            reads = 0
            deadline = time.monotonic() + 240 * h.SLOW
            while left > 0 and time.monotonic() < deadline:
                piece = sock.recv(min(left, 256 * 1024))
                self.assertTrue(piece, "connection closed mid-body")
                digest.update(piece)
                left -= len(piece)
                reads += 1
                if reads % 8 == 0:
                    time.sleep(0.002)
        self.assertEqual(left, 0)
        self.assertEqual(digest.hexdigest(), body_digest(BIG), "slowly read body corrupted")
        growth = mon.peak - baseline
        self.assertLess(growth, ts.RSS_GROWTH_LIMIT_KB,
                        f"holdfast RSS grew {growth} KiB while a client read a spliced 64 MiB body slowly")
        h.wait_until(lambda: spliced(p, "response") > BIG - HEAD_SLACK, 5 * h.SLOW)
        self.assertGreater(spliced(p, "response"), BIG - HEAD_SLACK)


if __name__ == "__main__":
    unittest.main()
