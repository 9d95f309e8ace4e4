"""Malformed requests (issue 2, "HTTP behaviour"): each gets the right 4xx, the
connection is closed, and nothing is forwarded to the backend."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402

HOST = b"Host: holdfast.test\r\n"


class MalformedRequestTest(h.ProxyTestCase):

    def setUp(self):
        self.b = self.backend()
        self.p = self.proxy(make_config([self.b.port], client={"max_header_bytes": "4k"}))

    def check_refused(self, raw, status, allow_connect=False):
        c = self.client(self.p.port)
        c.send(raw)
        try:
            r = c.read_response()
        except h.IncompleteMessage as e:
            self.fail(f"no complete {status} response before the connection ended "
                      f"(reset={c.reader.reset}, got {e.got[:200]!r})")
        if isinstance(status, tuple):
            self.assertIn(r.status, status, r)
        else:
            self.assertEqual(r.status, status, r)
        self.assertClosed(c, msg=f"connection not closed after {status}")
        # Nothing was forwarded: the backend saw no byte (and, normally, no connection).
        self.assertEqual(self.b.bytes_received, 0, f"bytes reached the backend: {self.b.requests}")
        self.assertEqual(self.b.requests, [])
        if not allow_connect:
            self.assertEqual(self.b.accepted, 0, "holdfast connected to the backend for a malformed request")
        # holdfast is still healthy and the backend reachable, so the zero counts above mean something.
        r = h.get(self.p.port, "/healthy")
        self.assertEqual(r.status, 200)
        self.assertEqual([q.target for q in self.b.requests], ["/healthy"])
        return r

    def test_content_length_and_transfer_encoding(self):
        self.check_refused(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"0\r\n\r\n", 400)

    def test_transfer_encoding_and_content_length(self):
        self.check_refused(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                           b"0\r\n\r\n", 400)

    def test_two_different_content_lengths(self):
        self.check_refused(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n"
                           b"hello!", 400)

    def test_content_length_list_with_different_values(self):
        self.check_refused(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5, 6\r\n\r\nhello!", 400)

    def test_transfer_encoding_not_ending_in_chunked(self):
        self.check_refused(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\nabcdef", 400)

    def test_transfer_encoding_chunked_then_gzip(self):
        self.check_refused(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400)

    def test_bad_chunk_size(self):
        # The head is valid; the error is in the body that arrives with it. holdfast may have
        # started a connection when the head completed, but must not forward a byte.
        self.check_refused(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\nhello\r\n0\r\n\r\n", 400, allow_connect=True)

    def test_obs_fold(self):
        self.check_refused(b"GET / HTTP/1.1\r\n" + HOST + b"X-Folded: first\r\n second\r\n\r\n", 400)

    def test_field_line_without_a_name(self):
        # llhttp lets a line start with its colon; a field name is at least one character.
        self.check_refused(b"GET / HTTP/1.1\r\n" + HOST + b": value\r\n\r\n", 400)

    def test_whitespace_before_colon(self):
        self.check_refused(b"GET / HTTP/1.1\r\n" + HOST + b"X-Spaced : value\r\n\r\n", 400)

    def test_control_character_in_field_value(self):
        self.check_refused(b"GET / HTTP/1.1\r\n" + HOST + b"X-Ctl: a\x01b\r\n\r\n", 400)

    def test_nul_in_field_value(self):
        self.check_refused(b"GET / HTTP/1.1\r\n" + HOST + b"X-Nul: a\x00b\r\n\r\n", 400)

    def test_head_over_max_header_bytes(self):
        fields = b"".join(b"X-Pad-%03d: %s\r\n" % (i, b"v" * 90) for i in range(80))  # ~8 KiB > 4k
        self.check_refused(b"GET / HTTP/1.1\r\n" + HOST + fields + b"\r\n", 431)

    def test_long_url_over_max_header_bytes(self):
        self.check_refused(b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414)

    def test_garbage_request_line(self):
        self.check_refused(b"this is not http at all\r\n\r\n", 400)

    def test_bad_http_version(self):
        self.check_refused(b"GET / HTTP/9.z\r\n" + HOST + b"\r\n", (400, 505))


if __name__ == "__main__":
    unittest.main()
