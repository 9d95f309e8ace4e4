"""Message framing both ways (issue 2, "Framing"): Content-Length, chunked (with
extensions and trailers), close-delimited, HEAD, 1xx / Expect: 100-continue,
204 and 304, pipelining."""

import hashlib
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402


def body_of(n, seed=0):
    out = b"".join(h.pattern_block(seed * 1000 + i, 4096) for i in range(n // 4096 + 1))
    return out[:n]


class RequestBodyTest(h.ProxyTestCase):

    def setUp(self):
        self.b = self.backend()
        self.p = self.proxy(make_config([self.b.port]))

    def test_content_length_body_reaches_backend_intact(self):
        c = self.client(self.p.port)
        for size in (1, 1000, 300 * 1024):
            body = body_of(size, size)
            r = c.request("POST", f"/cl{size}", [("Content-Type", "application/octet-stream")], body)
            self.assertEqual(r.status, 200)
            got = self.b.requests[-1]
            self.assertEqual(got.target, f"/cl{size}")
            self.assertEqual(len(got.body), size)
            self.assertEqual(hashlib.sha256(got.body).hexdigest(), hashlib.sha256(body).hexdigest())
        self.assertEqual(self.b.accepted, 1)

    def test_empty_content_length_body(self):
        c = self.client(self.p.port)
        r = c.request("POST", "/empty", body=b"")
        self.assertEqual(r.status, 200)
        self.assertEqual(self.b.requests[-1].body, b"")
        self.assertEqual(c.request("GET", "/after").status, 200)

    def test_chunked_body_with_extensions_and_trailers_reaches_backend_intact(self):
        c = self.client(self.p.port)
        raw = (b"POST /chunked HTTP/1.1\r\nHost: holdfast.test\r\nTransfer-Encoding: chunked\r\n"
               b"Trailer: X-Checksum\r\n\r\n"
               b"5;ext=1\r\nhello\r\n"
               b"1;name\r\n \r\n"
               b"5;c=\"quoted value\";d=e\r\nworld\r\n"
               b"0\r\nX-Checksum: 1234\r\n\r\n")
        c.send(raw)
        r = c.read_response()
        self.assertEqual(r.status, 200)
        got = self.b.requests[-1]
        self.assertEqual(got.body, b"hello world")
        # A second request on the same client connection still works: framing was consumed exactly.
        r = c.request("GET", "/after")
        self.assertEqual(r.status, 200)
        self.assertEqual(self.b.requests[-1].target, "/after")

    # llhttp 8.1.0 (Debian 12's node-llhttp) refuses a quoted extension value that follows a
    # token=token extension ("Invalid character in chunk size"), although RFC 9112 7.1.1 allows it.
    # holdfast does not second-guess its parser: the request gets a clear 400, the connection is
    # closed because framing is in doubt, and nothing reaches the backend. If llhttp starts
    # accepting the form, this test fails and should become a pass-through test.
    def test_chunk_extension_quoted_value_after_token_value(self):
        c = self.client(self.p.port)
        c.send(b"POST /ext HTTP/1.1\r\nHost: holdfast.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;a=b;c=\"q\"\r\nhello\r\n0\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 400)
        self.assertEqual(self.b.requests, [])

    def test_large_chunked_body(self):
        body = body_of(500 * 1024, 7)
        c = self.client(self.p.port)
        r = c.request("POST", "/bigchunked", body=body, chunked=True, chunk_size=7000)
        self.assertEqual(r.status, 200)
        self.assertEqual(hashlib.sha256(self.b.requests[-1].body).hexdigest(), hashlib.sha256(body).hexdigest())
        self.assertEqual(c.request("GET", "/after").status, 200)

    def test_expect_100_continue(self):
        c = self.client(self.p.port)
        c.send(b"POST /expect HTTP/1.1\r\nHost: holdfast.test\r\nExpect: 100-continue\r\n"
               b"Content-Length: 11\r\n\r\n")
        # The client waits for the interim response before sending the body.
        r = c.read_response(keep_informational=True)
        self.assertEqual(r.status, 100, r)
        c.send(b"hello world")
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(self.b.requests[-1].body, b"hello world")
        self.assertEqual(c.request("GET", "/after").status, 200)

    def test_expect_100_continue_with_chunked_body(self):
        # holdfast buffers the start of a chunked body before contacting the
        # backend; a client that waits for 100 Continue must not stall on that.
        c = self.client(self.p.port)
        c.send(b"POST /expect-chunked HTTP/1.1\r\nHost: holdfast.test\r\nExpect: 100-continue\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        r = c.read_response(keep_informational=True)
        self.assertEqual(r.status, 100, r)
        c.send(b"5\r\nhello\r\n0\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(self.b.requests[-1].body, b"hello")

    def test_request_split_into_tiny_segments(self):
        c = self.client(self.p.port)
        raw = h.build_request("POST", "/split", [("X-A", "1")], b"0123456789abcdef", chunked=True, chunk_size=5)
        h.send_raw(c.sock, raw, piece=3, pause=0.003)
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(self.b.requests[-1].body, b"0123456789abcdef")
        self.assertEqual(self.b.requests[-1].headers.get("X-A"), "1")

    def test_pipelined_requests_answered_in_order(self):
        c = self.client(self.p.port)
        # The first is the slowest, so answering out of order would show.
        c.send(h.build_request("GET", "/p1?delay=400") + h.build_request("POST", "/p2?delay=100", body=b"two")
               + h.build_request("GET", "/p3"))
        bodies = [c.read_response().body for _ in range(3)]
        for body, target in zip(bodies, ["/p1?delay=400", "/p2?delay=100", "/p3"]):
            self.assertTrue(body.endswith(f" {target}\n".encode()), bodies)
        self.assertEqual([q.target for q in self.b.requests], ["/p1?delay=400", "/p2?delay=100", "/p3"])
        self.assertEqual(self.b.requests[1].body, b"two")
        self.assertStillOpen(c)


class ResponseBodyTest(h.ProxyTestCase):

    def test_other_transfer_codings_survive_rechunking(self):
        # Transfer-Encoding is hop-by-hop and holdfast re-frames the body, but a
        # coding such as gzip describes the content: the client must still see it.
        def gzip_chunked(conn, index):
            reader = h.Reader(conn)
            if h.read_request(reader) is None:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                         b"5\r\nabcde\r\n0\r\n\r\n")
            h.read_request(reader)
        b = self.scripted(gzip_chunked)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        r = c.request("GET", "/gz")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.tokens("transfer-encoding"), ["gzip", "chunked"])
        self.assertEqual(r.body, b"abcde")

    def run_mode(self, mode, size, **kw):
        b = self.backend(mode=mode, body_size=size, **kw)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        for i in range(3):
            r = c.request("GET", f"/{mode}{i}")
            self.assertEqual(r.status, 200, r)
            # close-delimited: a new upstream connection each time; otherwise one reused connection.
            origin = f"backend conn={i + 1} req=1" if mode == "close" else f"backend conn=1 req={i + 1}"
            self.assertTrue(r.body.startswith(f"{origin} GET /{mode}{i}\n".encode()), r.body[:100])
            if size:
                self.assertEqual(len(r.body), size)
        return b, c, r

    def test_content_length_response(self):
        b, c, r = self.run_mode("length", 200 * 1024)
        self.assertEqual(r.framing, "length")
        self.assertEqual(b.accepted, 1)
        self.assertStillOpen(c)

    def test_chunked_response(self):
        b, c, r = self.run_mode("chunked", 200 * 1024, chunk_ext="x=1", trailers=[("X-Trailer", "t")])
        self.assertEqual(b.accepted, 1)
        self.assertStillOpen(c)

    def test_close_delimited_response_reframed_as_chunked(self):
        b, c, r = self.run_mode("close", 100 * 1024)
        self.assertEqual(r.framing, "chunked",
                         "a close-delimited upstream response must be re-framed as chunked for an HTTP/1.1 client")
        self.assertEqual(b.accepted, 3, "a close-delimited response's connection cannot be reused")
        self.assertStillOpen(c)

    def test_close_delimited_response_to_http10_client(self):
        b = self.backend(mode="close")
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        r = c.request("GET", "/old", version="HTTP/1.0")
        self.assertEqual(r.status, 200)
        self.assertNotIn("chunked", r.headers.tokens("transfer-encoding"))
        self.assertTrue(r.body.startswith(b"backend conn=1 req=1 GET /old"), r.body)
        self.assertClosed(c)

    def test_chunked_response_to_http10_client_is_not_chunked(self):
        b = self.backend(mode="chunked", body_size=5000)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        r = c.request("GET", "/old10", version="HTTP/1.0")
        self.assertEqual(r.status, 200)
        self.assertNotIn("chunked", r.headers.tokens("transfer-encoding"), "an HTTP/1.0 client cannot read chunked")
        self.assertEqual(len(r.body), 5000)
        self.assertTrue(r.body.startswith(b"backend conn=1 req=1 GET /old10"))

    def test_response_split_into_tiny_segments(self):
        def handler(conn, index):
            reader = h.Reader(conn)
            for _ in range(5):
                req = h.read_request(reader)
                if req is None:
                    return
                resp = (b"HTTP/1.1 200 OK\r\nX-Split: yes\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + h.encode_chunked(b"split response body", 4))
                h.send_raw(conn, resp, piece=2, pause=0.003)

        b = self.scripted(handler)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        for _ in range(2):
            r = c.request("GET", "/split")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers.get("X-Split"), "yes")
            self.assertEqual(r.body, b"split response body")
        self.assertEqual(b.accepted, 1)

    def test_head_response_has_no_body(self):
        b = self.backend(body_size=1234)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        r = c.request("HEAD", "/head")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.get("content-length"), "1234")
        # If holdfast sent body bytes after the HEAD response, this parse would fail.
        r = c.request("GET", "/get")
        self.assertEqual(r.status, 200)
        self.assertEqual(len(r.body), 1234)
        self.assertTrue(r.body.startswith(b"backend conn=1 req=2 GET /get"), r.body[:60])

    def test_head_on_chunked_backend(self):
        b = self.backend(mode="chunked")
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        self.assertEqual(c.request("HEAD", "/h").status, 200)
        r = c.request("GET", "/g")
        self.assertTrue(r.body.startswith(b"backend conn=1 req=2 GET /g"), r.body)

    def test_204_and_304_have_no_body(self):
        b = self.backend()
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        for status in (204, 304, 204):
            r = c.request("GET", f"/status/{status}")
            self.assertEqual(r.status, status)
            self.assertFalse(r.headers.has("transfer-encoding"), f"{status} must not be framed: {r.raw_head!r}")
            if status == 204:
                self.assertIn(r.headers.get("content-length"), (None, "0"))
            # The next response parses only if nothing followed the head.
            r2 = c.request("GET", f"/after{status}")
            self.assertEqual(r2.status, 200, r2)
            self.assertTrue(r2.body.endswith(f"GET /after{status}\n".encode()), r2.body)
        self.assertEqual(b.accepted, 1, "204/304 responses end exactly; their connection is reusable")
        self.assertStillOpen(c)

    def test_backend_100_continue_passed_or_absorbed(self):
        # The backend sends its own 100 Continue; the client must still get exactly one final response.
        b = self.backend()
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        r = c.request("POST", "/e", [("Expect", "100-continue")], b"body")
        self.assertEqual(r.status, 200)
        self.assertEqual(b.requests[-1].body, b"body")
        r = c.request("GET", "/after")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.body.endswith(b"GET /after\n"))


if __name__ == "__main__":
    unittest.main()
