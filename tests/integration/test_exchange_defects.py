"""Defects of the request path before the Exchange / UpstreamRequest / DownstreamSink
rewrite, one test each (numbered as in the defect list): HEAD responses without a
length are pooled (4), chunked bodies stream as they arrive (5), lingering close
(6), send timeout is not a header timeout (8), a retry whose connect fails (9),
half-closed clients (13), body timeout answers 408 (16), trailers survive a retry (17).
Graceful stop under load (15) and real clients are in test_exchange_clients.py."""

import os
import re
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import backend_conn, make_config  # noqa: E402


def strip_header(data, name):
    """Response bytes without the `name` field line(s) in their head."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(name.lower() + b":")]
    return b"\r\n".join(lines) + sep + body


class HeadPoolingTest(h.ProxyTestCase):

    def test_4_head_response_without_length_is_pooled(self):
        def hook(req, data, close):
            return (strip_header(data, b"Content-Length") if req.method == "HEAD" else data), close

        b = self.backend(response_hook=hook)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        r = c.request("HEAD", "/h")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"")
        self.assertFalse(r.headers.has("Content-Length"), r)
        self.assertEqual(r.headers.tokens("connection"), ["keep-alive"], r)
        r2 = c.request("GET", "/after-head")
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(backend_conn(r2), 1, "the HEAD response's connection was not reused")
        self.assertEqual(b.accepted, 1, "connections accepted by the backend")


class ChunkedStreamingTest(h.ProxyTestCase):

    def test_5_chunked_request_body_streams_as_it_arrives(self):
        chunks = [bytes([65 + i]) * (100 + i) for i in range(5)]
        first_body_byte = {}
        got = {}

        def handler(conn, index):
            # Byte by byte up to the first body byte, so that its arrival time is exact.
            reader = h.Reader(conn)
            for _ in range(65536):
                ch = conn.recv(1)
                if not ch:
                    return
                reader.buf += ch
                if reader.buf.endswith(b"\r\n\r\n"):
                    break
            ch = conn.recv(1)
            first_body_byte["t"] = time.monotonic()
            reader.buf += ch
            got["req"] = h.read_request(reader)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        b = self.scripted(handler)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        c.send(h.build_request("PUT", "/trickle", [("Transfer-Encoding", "chunked")]))
        for i, piece in enumerate(chunks):
            if i:
                time.sleep(0.3)
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        last_sent = time.monotonic()
        c.send(b"0\r\n\r\n")
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"ok"), r)
        self.assertIn("t", first_body_byte)
        # The last chunk went 1.2 s after the first: the first must be there long before.
        self.assertLess(first_body_byte["t"], last_sent - 0.6,
                        f"first body byte reached the backend {first_body_byte['t'] - last_sent:+.2f}s "
                        "after the client sent its last chunk")
        self.assertEqual(got["req"].framing, "chunked")
        self.assertEqual(got["req"].body, b"".join(chunks))


class LingeringCloseTest(h.ProxyTestCase):
    """A client still sending when holdfast answers must read the answer, not a reset."""

    ROUNDS = 3

    def keep_sending(self, sock, first, total, piece=65536, pause=0.002):
        """Sends `first`, then filler up to `total` bytes from a thread; errors end it."""
        state = {"sent": 0, "error": None}

        def run():
            try:
                sock.sendall(first)
                state["sent"] = len(first)
                filler = b"z" * piece
                deadline = time.monotonic() + 20 * h.SLOW
                while state["sent"] < total and time.monotonic() < deadline:
                    sock.sendall(filler)
                    state["sent"] += piece
                    time.sleep(pause)
            except OSError as e:
                state["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, state

    def read_answer(self, c, t, state):
        """The response, then a clean end: holdfast half-closes, the client's upload is
        read and discarded (never reset), and the connection ends with a FIN."""
        try:
            r = c.read_response()
            closed = c.reader.at_eof(15 * h.SLOW)
        except (h.IncompleteMessage, ConnectionResetError) as e:
            return None, e
        finally:
            t.join(30 * h.SLOW)
        if not closed or c.reader.reset:
            return r, f"connection end: closed={closed} reset={c.reader.reset}"
        if state["error"] is not None:
            # A real client (curl, requests) gives up on a failed upload before reading the answer.
            return r, f"the upload failed after {state['sent']} bytes: {state['error']!r}"
        return r, None

    def test_6a_oversized_head_followed_by_more_data_reads_complete_431(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], client={"max_header_bytes": "4k"}))
        for attempt in range(self.ROUNDS):
            with self.subTest(attempt=attempt):
                c = self.client(p.port)
                head = b"GET /big-head HTTP/1.1\r\nHost: holdfast.test\r\nX-Big: "
                t, state = self.keep_sending(c.sock, head, 8 * 1024 * 1024)
                r, err = self.read_answer(c, t, state)
                self.assertIsNone(err, f"431: {err} (client got {c.reader.total} bytes, "
                                       f"sent {state['sent']}, reset={c.reader.reset})")
                self.assertEqual(r.status, 431, r)
                self.assertEqual(r.body, b"431 request header fields too large\n")
                self.assertEqual(r.headers.tokens("connection"), ["close"])
                c.close()
        self.assertEqual(b.accepted, 0)

    def _backend_401(self, connection_close):
        def handler(conn, index):
            reader = h.Reader(conn)
            reader.read_until(b"\r\n\r\n", h.MAX_HEAD)
            extra = b"Connection: close\r\n" if connection_close else b""
            conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\n" + extra +
                         b"WWW-Authenticate: Basic\r\n\r\nunauthorized\n")
            if not connection_close:
                # Keeps the connection and discards what comes (bounded by the socket timeout).
                for _ in range(100000):
                    if not conn.recv(65536):
                        return
        return self.scripted(handler)

    def check_early_401(self, connection_close):
        b = self._backend_401(connection_close)
        p = self.proxy(make_config([b.port]))
        size = 8 * 1024 * 1024
        for attempt in range(self.ROUNDS):
            with self.subTest(attempt=attempt):
                c = self.client(p.port)
                head = h.build_request("POST", f"/upload{attempt}", [("Content-Length", str(size))])
                t, state = self.keep_sending(c.sock, head, size)
                r, err = self.read_answer(c, t, state)
                self.assertIsNone(err, f"401: {err} (client got {c.reader.total} bytes, "
                                       f"sent {state['sent']}, reset={c.reader.reset})")
                self.assertEqual((r.status, r.body), (401, b"unauthorized\n"), r)
                self.assertEqual(r.headers.get("WWW-Authenticate"), "Basic")
                c.close()

    def test_6b_early_401_with_connection_close_while_client_uploads(self):
        self.check_early_401(True)

    def test_6b_early_401_keepalive_while_client_uploads(self):
        self.check_early_401(False)


class SendTimeoutTest(h.ProxyTestCase):

    def test_8_pipelined_client_not_reading_is_a_send_timeout_not_408(self):
        # HEAD answers with 32 KB heads: each exchange ends at once (no body to hold it),
        # so holdfast is between requests, reading the next head, when its send to the
        # client times out. Where that happens depends on the kernel's socket buffers
        # (about 4 MB on loopback), hence several clients around that size at once.
        b = self.backend(extra_headers=[("X-Pad", "p" * 32000)])
        p = self.proxy(make_config([b.port], client={"send_timeout": "1s", "header_timeout": f"{int(40 * h.SLOW)}s"}))
        clients = []
        for n in range(110, 170, 6):
            c = self.client(p.port)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            # Many requests, the last one cut short as a client blocked in send would leave it.
            c.send(b"".join(h.build_request("HEAD", f"/h{n}-{i}") for i in range(n)) +
                   b"GET /next HTTP/1.1\r\nHost: holdfast.test\r\n")
            clients.append(c)
        self.assertTrue(h.wait_until(lambda: p.stderr_text().count("send timeout") >= len(clients) // 2,
                                     8 * h.SLOW, 0.1), p.stderr_text()[-3000:])
        time.sleep(0.5)
        err, out = p.stderr_text(), p.stdout_text()
        self.assertEqual([ln for ln in err.splitlines() if re.search(r": 408 |header_timeout", ln)], [], err[-3000:])
        self.assertEqual([ln for ln in out.splitlines() if '" 408 ' in ln], [])
        for c in clients:
            c.sock.settimeout(0.5 * h.SLOW)
            try:
                received = c.reader.read_to_eof(limit=64 * 1024 * 1024)
            except socket.timeout:
                received = bytes(c.reader.buf)
            self.assertNotIn(b"HTTP/1.1 408", received)

    def test_8_slow_head_is_408_header_timeout(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], client={"send_timeout": "1s", "header_timeout": "1s"}))
        slow = self.client(p.port)
        slow.send(b"GET /slow-head HTTP/1.1\r\nHost: holdfast.test\r\n")
        r = slow.read_response()
        self.assertEqual(r.status, 408, r)
        self.assertEqual(r.body, b"408 request head timeout\n")
        self.assertClosed(slow)
        self.assertTrue(h.wait_until(lambda: "header_timeout" in p.stderr_text(), 5 * h.SLOW), p.stderr_text())


class RetryConnectFailsTest(h.ProxyTestCase):

    def test_9_retry_whose_connect_is_refused_reports_connect_refused(self):
        holder = {}
        # The backend goes away entirely: its listener closes before the unanswered request's connection.
        b = holder["b"] = self.scripted(h.race_handler([], lambda: holder["b"].close_listener()))
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/warm").status, 200)
        r = c.request("GET", "/doomed")
        self.assertEqual(r.status, 502, r)
        self.assertEqual(r.body, b"502 upstream connect refused\n")
        res = p.stop()
        self.assertEqual(res.code, 0)
        warns = [ln for ln in res.stderr.splitlines() if " warning " in ln and "upstream" in ln]
        self.assertEqual(len(warns), 1, res.stderr)
        self.assertIn("connect refused", warns[0])
        self.assertNotIn("before responding", warns[0])
        self.assertEqual(res.stats.get("retries_closed"), 0, res.stats)
        self.assertEqual(res.stats.get("retries_send_failed"), 0, res.stats)
        self.assertEqual(res.stats.get("connect_refused"), 1, res.stats)


class HalfCloseTest(h.ProxyTestCase):

    def test_13_request_then_shut_wr_gets_full_response_then_close(self):
        # The backend answers 300 ms late, so that the FIN, sent by a second
        # call just after the request, has reached holdfast before the answer
        # (a FIN that comes after the head went out cannot change that head).
        b = self.backend(body_size=100000)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        c.send(h.build_request("GET", "/one?delay=300"))
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body_len, 100000)
        self.assertTrue(r.body.startswith(b"backend conn=1 req=1 GET /one?delay=300\n"))
        self.assertEqual(r.headers.tokens("connection"), ["close"])
        self.assertClosed(c)
        # Two pipelined requests, then the half-close: both answered, in order, then closed.
        c2 = self.client(p.port)
        c2.send(h.build_request("GET", "/p1") + h.build_request("GET", "/p2?delay=300"))
        c2.sock.shutdown(socket.SHUT_WR)
        r1, r2 = c2.read_response(), c2.read_response()
        self.assertEqual((r1.status, r2.status), (200, 200))
        self.assertTrue(r1.body.startswith(b"backend conn=1 req=2 GET /p1\n"), r1.body[:60])
        self.assertTrue(r2.body.startswith(b"backend conn=1 req=3 GET /p2?delay=300\n"), r2.body[:60])
        self.assertEqual(r2.headers.tokens("connection"), ["close"])
        self.assertClosed(c2)


class BodyTimeoutTest(h.ProxyTestCase):

    def test_16_stalled_body_gets_complete_408_then_close(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], client={"body_timeout": "1s"}))
        c = self.client(p.port)
        c.send(b"POST /stalled HTTP/1.1\r\nHost: holdfast.test\r\nContent-Length: 100\r\n\r\n0123456789")
        t0 = time.monotonic()
        r = c.read_response()
        self.assertEqual(r.status, 408, r)
        self.assertEqual(r.body, b"408 request body timeout\n")
        self.assertEqual(r.headers.tokens("connection"), ["close"])
        self.assertLess(time.monotonic() - t0, 10 * h.SLOW)
        self.assertClosed(c)
        self.assertEqual(b.requests, [])


class TrailerRetryTest(h.ProxyTestCase):

    def test_17_retried_chunked_request_keeps_its_trailers(self):
        seen = []
        b = self.scripted(h.race_handler(seen))
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/warm").status, 200)
        trailers = [("X-Checksum", "abc123"), ("X-Count", "3")]
        body = b"part-one|part-two|part-three"
        c.send(h.build_request("PUT", "/upload", [("Transfer-Encoding", "chunked"), ("Trailer", "X-Checksum")])
               + h.encode_chunked(body, 9, trailers=trailers))
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"conn=2"), r)
        puts = [(i, req) for i, req in seen if req.method == "PUT"]
        self.assertEqual([(i, req.body) for i, req in puts], [(1, body), (2, body)], seen)
        self.assertEqual(puts[0][1].trailers.items, trailers, "first attempt")
        self.assertEqual(puts[1][1].trailers.items, trailers, "the retried request lost or changed its trailers")


if __name__ == "__main__":
    unittest.main()
