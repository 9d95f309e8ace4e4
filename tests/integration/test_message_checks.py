"""Message checks on both legs: trailer sections are bounded like heads, a transfer
coding list may name chunked once, and a backend status must be three digits from
100 to 599 (RFC 9110 15). A refused request is never forwarded; a refused response
head never reaches the client."""

import os
import select
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402

HOST = b"Host: holdfast.test\r\n"
RESPONSE_HEAD_LIMIT = 64 * 1024   # the bound holdfast's response parser is built with
WAIT = 5.0 * h.SLOW               # how long a refusal may take; far below the timeouts configured


def trailer_lines(total):
    out = bytearray()
    i = 0
    while len(out) < total:
        out += b"X-T%d: %s\r\n" % (i, b"v" * 60)
        i += 1
    return bytes(out)


def read_one_response_bytewise(sock, limit=4096):
    """One response read a byte at a time, so that nothing past its end is consumed.
    Returns (head bytes, body bytes); the body must be framed by Content-Length."""
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        if len(head) > limit:
            raise h.ProtocolError(f"no end of head within {limit} bytes: {bytes(head)!r}")
        b = sock.recv(1)
        if not b:
            raise h.IncompleteMessage("EOF inside the head", got=bytes(head))
        head += b
    _, headers = h.parse_head(bytes(head))
    length = int(headers.get("Content-Length"))
    body = bytearray()
    while len(body) < length:
        b = sock.recv(1)
        if not b:
            raise h.IncompleteMessage("EOF inside the body", got=bytes(body))
        body += b
    return bytes(head), bytes(body)


class RequestTrailerLimitTest(h.ProxyTestCase):

    def setUp(self):
        self.b = self.backend()
        self.p = self.proxy(make_config([self.b.port], client={"max_header_bytes": "4k"}))

    def test_trailer_section_over_max_header_bytes_is_431(self):
        c = self.client(self.p.port, timeout=WAIT)
        # The trailer section never ends; the limit must end it.
        c.send(b"POST /up HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n" +
               trailer_lines(8 * 1024))
        try:
            r = c.read_response()
        except socket.timeout:
            self.fail(f"no answer within {WAIT:.0f}s to a trailer section over the limit")
        self.assertEqual(r.status, 431, r)
        self.assertClosed(c)
        self.assertEqual(self.b.requests, [], "a request with an oversized trailer section was forwarded")
        self.assertEqual(h.get(self.p.port, "/healthy").status, 200)

    def test_trailer_section_within_max_header_bytes_passes(self):
        c = self.client(self.p.port)
        trailers = [(f"X-T{i}", "v" * 60) for i in range(30)]   # about 2.2 KiB
        c.send(b"POST /up HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" +
               h.encode_chunked(b"x" * 10000, 1000, trailers=trailers))
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        got = self.b.requests[-1]
        self.assertEqual((got.body_len, len(got.trailers.items)), (10000, 30))


class ResponseTrailerLimitTest(h.ProxyTestCase):

    def test_trailer_section_over_the_limit_closes_both_legs(self):
        upstream_closed = threading.Event()

        def endless_trailers(conn, index):
            if h.read_request(h.Reader(conn)) is None:
                return
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n" +
                             trailer_lines(2 * RESPONSE_HEAD_LIMIT))
                conn.settimeout(WAIT)
                if conn.recv(1) == b"":
                    upstream_closed.set()
            except (ConnectionResetError, BrokenPipeError):
                upstream_closed.set()
            except socket.timeout:
                pass

        b = self.scripted(endless_trailers)
        p = self.proxy(make_config([b.port], upstream={"read_timeout": "60s"}))
        c = self.client(p.port, timeout=WAIT)
        c.send(h.build_request("GET", "/trailers"))
        try:
            r = c.read_response()
            self.fail(f"a response with an oversized trailer section was ended as if whole: {r}")
        except socket.timeout:
            self.fail(f"the client was still waiting {WAIT:.0f}s after the trailer section passed the limit")
        except h.IncompleteMessage as e:
            # The head and body were already relayed; the only honest end is an abort.
            self.assertEqual(e.partial.status, 200)
            self.assertEqual(e.partial.trailers.items, [], "trailer fields were relayed")
        self.assertTrue(c.reader.eof, "the client connection should be closed")
        self.assertTrue(upstream_closed.wait(WAIT), "the upstream connection was not closed")
        # The log comes through a pipe read by another thread: wait for the line.
        h.wait_for(lambda: "trailer section larger than the limit" in p.stderr_text(), 5 * h.SLOW,
                   "the reason was not logged")


class DoubleChunkedTest(h.ProxyTestCase):

    def setUp(self):
        self.b = self.backend()
        self.p = self.proxy(make_config([self.b.port]))

    def test_request_naming_chunked_twice_is_400_and_not_forwarded(self):
        for te in [b"Transfer-Encoding: chunked, chunked\r\n",
                   b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                   b"Transfer-Encoding: chunked;x=1, chunked\r\n"]:
            with self.subTest(te=te):
                c = self.client(self.p.port)
                c.send(b"POST / HTTP/1.1\r\n" + HOST + te + b"\r\n5\r\nhello\r\n0\r\n\r\n")
                r = c.read_response()
                self.assertEqual(r.status, 400, r)
                self.assertClosed(c)
                self.assertEqual((self.b.accepted, self.b.bytes_received), (0, 0))

    def test_response_naming_chunked_twice_is_502(self):
        def double_chunked(conn, index):
            reader = h.Reader(conn)
            req = h.read_request(reader)
            if req is None:
                return
            te = (b"Transfer-Encoding: chunked, chunked\r\n" if req.target == "/one-field"
                  else b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + te + b"\r\n5\r\nhello\r\n0\r\n\r\n")
            conn.settimeout(WAIT)
            try:
                conn.recv(1)   # until holdfast closes its side
            except OSError:
                pass

        b = self.scripted(double_chunked)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        for target in ["/one-field", "/two-fields"]:
            with self.subTest(target=target):
                r = c.request("GET", target)
                self.assertEqual(r.status, 502, r)
        self.assertEqual(b.accepted, 2)


class BadStatusTest(h.ProxyTestCase):

    BAD = {"/twenty": b"HTTP/1.1 20 OK\r\n", "/four-digits": b"HTTP/1.1 2000 OK\r\n",
           "/leading-zero": b"HTTP/1.1 0200 OK\r\n", "/below": b"HTTP/1.1 099 X\r\n",
           "/above": b"HTTP/1.1 600 X\r\n"}

    def test_status_outside_three_digits_100_to_599_is_502_and_client_stays_usable(self):
        def handler(conn, index):
            reader = h.Reader(conn)
            for _ in range(100):
                req = h.read_request(reader)
                if req is None:
                    return
                status_line = self.BAD.get(req.target)
                if status_line is None:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    continue
                conn.sendall(status_line + b"Content-Length: 2\r\n\r\nhi")
                conn.settimeout(WAIT)
                try:
                    conn.recv(1)   # until holdfast closes its side
                except OSError:
                    pass
                return

        b = self.scripted(handler)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        for target in self.BAD:
            with self.subTest(target=target):
                c.send(h.build_request("GET", target))
                head, body = read_one_response_bytewise(c.sock)
                self.assertTrue(head.startswith(b"HTTP/1.1 502 "), head)
                self.assertIn(b"upstream sent an invalid response", body)
                # Nothing else follows the 502 (no relayed head or body of the bad response).
                readable, _, _ = select.select([c.sock], [], [], 0.3)
                self.assertEqual(readable, [], f"bytes after the 502: {c.sock.recv(200)!r}" if readable else "")
                c.send(h.build_request("GET", "/good"))
                head, body = read_one_response_bytewise(c.sock)
                self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
                self.assertEqual(body, b"ok")


if __name__ == "__main__":
    unittest.main()
