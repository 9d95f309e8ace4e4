"""Bodies stream (issue 2): 64 MiB each way pass intact while holdfast's resident
memory stays bounded, and the first bytes reach the other side before the whole
body has arrived."""

import hashlib
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend_lib as bl  # noqa: E402
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402

MIB = 1024 * 1024
BIG = 64 * MIB
BLOCK = 64 * 1024
# Growth allowed in holdfast's VmRSS during a 64 MiB transfer. ASan keeps freed memory
# in quarantine and adds redzones, so a sanitized build gets a looser bound.
RSS_GROWTH_LIMIT_KB = (64 if h.SANITIZED else 16) * 1024
ASAN_ENV = {"ASAN_OPTIONS": ":".join(filter(None, [os.environ.get("ASAN_OPTIONS", ""),
                                                    "quarantine_size_mb=16"]))} if h.SANITIZED else None


def blocks(total):
    """Deterministic body blocks (generated, never held whole)."""
    for i in range(total // BLOCK):
        yield h.pattern_block(i, BLOCK)


def expected_digest(total):
    d = hashlib.sha256()
    for b in blocks(total):
        d.update(b)
    return d.hexdigest()


class RssMonitor:
    """Samples holdfast's VmRSS every 20 ms until stopped (bounded by `limit_s`)."""

    def __init__(self, proxy, limit_s=300):
        self.proxy = proxy
        self.samples = []
        self._stop = threading.Event()
        self._limit = limit_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _run(self):
        deadline = time.monotonic() + self._limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            rss = self.proxy.rss_kb()
            if rss is not None:
                self.samples.append(rss)
            self._stop.wait(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        return False

    @property
    def peak(self):
        return max(self.samples) if self.samples else None


class StreamingTest(h.ProxyTestCase):

    def warm_up(self, p):
        # One small exchange each way so that buffers and pools that exist for any
        # traffic are part of the baseline.
        with h.HttpClient(p.port) as c:
            self.assertEqual(c.request("POST", "/warm", body=b"w" * 100000).status, 200)
            self.assertEqual(c.request("GET", "/warm").status, 200)
        time.sleep(0.2)
        return p.rss_kb()

    def test_64mib_upload_intact_with_bounded_memory(self):
        result = {}
        first_body_bytes = threading.Event()

        def sink_backend(conn, index):
            reader = h.Reader(conn, 60 * h.SLOW)
            for _ in range(10):
                digest = hashlib.sha256()
                count = [0]

                def sink(piece):
                    count[0] += len(piece)
                    digest.update(piece)
                    first_body_bytes.set()

                req = h.read_request(reader, sink=sink)
                if req is None:
                    return
                if req.target == "/upload":
                    result["digest"], result["count"] = digest.hexdigest(), count[0]
                    result["framing"] = req.framing
                body = f"{count[0]} {digest.hexdigest()}".encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

        b = self.scripted(sink_backend)
        p = self.proxy(make_config([b.port]), env=ASAN_ENV)
        baseline = self.warm_up(p)
        first_body_bytes.clear()
        want = expected_digest(BIG)
        c = self.client(p.port, 60 * h.SLOW)
        with RssMonitor(p) as mon:
            c.send(b"POST /upload HTTP/1.1\r\nHost: holdfast.test\r\nContent-Type: application/octet-stream\r\n"
                   b"Content-Length: %d\r\n\r\n" % BIG)
            streamed_early = None
            sent = 0
            for block in blocks(BIG):
                c.send(block)
                sent += len(block)
                if sent == 4 * MIB:
                    # The backend must see body bytes while the client is still sending.
                    streamed_early = first_body_bytes.wait(20 * h.SLOW)
            r = c.read_response()
        self.assertTrue(streamed_early, "the backend saw no body byte after 4 MiB of a 64 MiB upload had been sent")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(result.get("count"), BIG)
        self.assertEqual(result.get("digest"), want, "uploaded body corrupted")
        self.assertEqual(r.body, f"{BIG} {want}".encode())
        growth = mon.peak - baseline
        self.assertLess(growth, RSS_GROWTH_LIMIT_KB,
                        f"holdfast RSS grew {growth} KiB (baseline {baseline} KiB, peak {mon.peak} KiB) "
                        f"during a 64 MiB upload; limit {RSS_GROWTH_LIMIT_KB} KiB")
        print(f"\nupload: RSS baseline {baseline} KiB, peak {mon.peak} KiB, growth {growth} KiB", file=sys.stderr)

    def test_64mib_download_intact_with_bounded_memory(self):
        client_got_bytes = threading.Event()
        backend_waited = {}

        def respond(conn, req):
            if req.target != "/download":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\n\r\n" % BIG)
            sent = 0
            for block in blocks(BIG):
                conn.sendall(block)
                sent += len(block)
                if sent == 4 * MIB:
                    # The client must see body bytes while the backend is still sending.
                    backend_waited["early"] = client_got_bytes.wait(20 * h.SLOW)

        b = self.scripted(bl.serve_requests(respond, max_requests=10))
        p = self.proxy(make_config([b.port]), env=ASAN_ENV)
        baseline = self.warm_up(p)
        c = self.client(p.port, 60 * h.SLOW)
        digest = hashlib.sha256()
        count = [0]

        def sink(piece):
            count[0] += len(piece)
            digest.update(piece)
            client_got_bytes.set()

        with RssMonitor(p) as mon:
            c.send(h.build_request("GET", "/download"))
            r = c.read_response(sink=sink)
        self.assertEqual(r.status, 200)
        self.assertTrue(backend_waited.get("early"),
                        "the client saw no body byte after the backend had sent 4 MiB of a 64 MiB response")
        self.assertEqual(count[0], BIG)
        self.assertEqual(digest.hexdigest(), expected_digest(BIG), "downloaded body corrupted")
        growth = mon.peak - baseline
        self.assertLess(growth, RSS_GROWTH_LIMIT_KB,
                        f"holdfast RSS grew {growth} KiB (baseline {baseline} KiB, peak {mon.peak} KiB) "
                        f"during a 64 MiB download; limit {RSS_GROWTH_LIMIT_KB} KiB")
        print(f"\ndownload: RSS baseline {baseline} KiB, peak {mon.peak} KiB, growth {growth} KiB", file=sys.stderr)
        # The connection is still usable after a large body.
        self.assertEqual(c.request("GET", "/after").status, 200)

    def test_slow_reading_client_backpressure(self):
        # The client reads nothing for a while: holdfast must stop reading the backend
        # rather than buffer the response (watermarks), and then deliver it intact.
        size = 32 * MIB
        b = self.backend(body_size=size)
        p = self.proxy(make_config([b.port]), env=ASAN_ENV)
        baseline = self.warm_up(p)
        c = self.client(p.port, 60 * h.SLOW)
        c.send(h.build_request("GET", "/slowreader"))
        with RssMonitor(p) as mon:
            time.sleep(2.0)  # holdfast sees the whole response offered while the client stalls
            r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(len(r.body), size)
        growth = mon.peak - baseline
        self.assertLess(growth, RSS_GROWTH_LIMIT_KB,
                        f"holdfast RSS grew {growth} KiB while a client did not read a 32 MiB response")

    def test_chunked_download_streams(self):
        got_first = threading.Event()
        waited = {}

        def chunked(conn, index):
            reader = h.Reader(conn)
            req = h.read_request(reader)
            if req is None:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            conn.sendall(b"10000\r\n" + b"a" * 0x10000 + b"\r\n")
            waited["early"] = got_first.wait(20 * h.SLOW)
            conn.sendall(b"10000\r\n" + b"b" * 0x10000 + b"\r\n0\r\n\r\n")
            h.read_request(reader)

        b = self.scripted(chunked)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        c.send(h.build_request("GET", "/chunks"))
        head = c.reader.read_until(b"\r\n\r\n", 65536)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        # First body bytes arrive while the backend holds back the rest.
        c.reader.sock.settimeout(20 * h.SLOW)
        while not c.reader.buf:
            self.assertTrue(c.reader._fill(), "connection closed before the first chunk")
        got_first.set()
        # Put the head back and parse the whole response normally.
        c.reader.buf[:0] = head
        r = c.read_response()
        self.assertTrue(waited.get("early"), "the first chunk did not reach the client before the last was sent")
        self.assertEqual(r.body, b"a" * 0x10000 + b"b" * 0x10000)


if __name__ == "__main__":
    unittest.main()
