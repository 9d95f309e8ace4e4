"""Header rules (issue 2, "HTTP behaviour"): hop-by-hop fields stay on their leg,
end-to-end fields pass unchanged, forwarding fields are added, and holdfast states
its own persistence policy toward clients."""

import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import backend_conn, make_config  # noqa: E402

HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"]
KEEPALIVE_RE = re.compile(r"^\s*timeout=(\d+)\s*,\s*max=(\d+)\s*$", re.I)


def end_to_end(headers, names):
    """The (lowercased name, value) pairs of `headers` whose name is in `names`, in order."""
    return [(k.lower(), v) for k, v in headers if k.lower() in names]


class RequestHeadersTest(h.ProxyTestCase):

    def setUp(self):
        self.b = self.backend(name="b1")
        self.p = self.proxy(make_config([self.b.port]))

    def test_connection_token_cannot_strip_host(self):
        c = self.client(self.p.port)
        r = c.request("GET", "/host-token", [("Connection", "host")])
        self.assertEqual(r.status, 200)
        self.assertEqual(self.b.requests[-1].headers.get("Host"), "holdfast.test")

    def test_hop_by_hop_request_fields_never_reach_backend(self):
        c = self.client(self.p.port)
        r = c.request("GET", "/hop", [
            ("Connection", "keep-alive, X-Secret"),
            ("Connection", "X-Other-Hop"),
            ("Keep-Alive", "timeout=5, max=10"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "websocket"),
            ("X-Secret", "s3cret"),
            ("X-Other-Hop", "hop"),
            ("X-Kept", "yes"),
        ])
        self.assertEqual(r.status, 200, r)
        got = self.b.requests[-1].headers
        for name in ["keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
                     "x-secret", "x-other-hop"]:
            self.assertFalse(got.has(name), f"{name} reached the backend: {self.b.requests[-1].raw_head!r}")
        # holdfast may state its own policy upstream, but none of the client's tokens may pass.
        self.assertTrue(set(got.tokens("connection")) <= {"keep-alive"},
                        f"client Connection tokens reached the backend: {got.get_all('connection')}")
        self.assertEqual(got.get("X-Kept"), "yes")
        self.assertStillOpen(c)

    def test_connection_close_with_named_field_from_client(self):
        c = self.client(self.p.port)
        r = c.request("GET", "/close", [("Connection", "close, X-Secret"), ("X-Secret", "s3cret")])
        self.assertEqual(r.status, 200)
        got = self.b.requests[-1].headers
        self.assertFalse(got.has("x-secret"), self.b.requests[-1].raw_head)
        self.assertNotIn("close", got.tokens("connection"),
                         "the client's close must not reach the backend (the upstream connection stays pooled)")
        self.assertIn("close", r.headers.tokens("connection"))
        self.assertFalse(r.headers.has("keep-alive"), r.headers)
        self.assertClosed(c)
        # The upstream connection was pooled despite the client's close.
        self.assertEqual(backend_conn(h.get(self.p.port, "/again")), 1)

    def test_end_to_end_fields_pass_unchanged_in_order_with_repeats(self):
        sent = [
            ("Accept", "text/plain"),
            ("X-A", "1"),
            ("Cookie", "a=1"),
            ("X-B", "two words,  and spaces"),
            ("X-A", "3"),
            ("Cookie", "b=2"),
            ("User-Agent", "holdfast-tests/1.0"),
            ("X-Mixed-Case", "VaLuE"),
            ("Cache-Control", "no-cache"),
        ]
        r = h.get(self.p.port, "/e2e", sent, host="api.example.test:8080")
        self.assertEqual(r.status, 200)
        got = self.b.requests[-1].headers
        names = {k.lower() for k, _ in sent}
        self.assertEqual(end_to_end(got, names), [(k.lower(), v) for k, v in sent],
                         self.b.requests[-1].raw_head)
        self.assertEqual(got.get_all("host"), ["api.example.test:8080"])

    def test_forwarding_fields_added(self):
        r = h.get(self.p.port, "/fwd", [("X-Forwarded-For", "203.0.113.7"), ("Via", "1.0 edge")],
                  host="shop.example.test")
        self.assertEqual(r.status, 200)
        got = self.b.requests[-1].headers
        xff = [t.strip() for t in got.get("X-Forwarded-For", "").split(",")]
        self.assertEqual(xff, ["203.0.113.7", "127.0.0.1"], got.get_all("X-Forwarded-For"))
        self.assertEqual(got.get("X-Forwarded-Proto"), "http")
        self.assertEqual(got.get("X-Forwarded-Host"), "shop.example.test")
        # No Via of holdfast's own towards the backend by default; the client's passes.
        self.assertEqual(got.get_all("Via"), ["1.0 edge"])
        self.assertEqual(got.get_all("host"), ["shop.example.test"])

    def test_forwarding_fields_added_without_existing_ones(self):
        r = h.get(self.p.port, "/fwd2", host="plain.test")
        self.assertEqual(r.status, 200)
        got = self.b.requests[-1].headers
        self.assertEqual(got.get("X-Forwarded-For"), "127.0.0.1")
        self.assertIsNone(got.get("Via"), "Via upstream stops nginx compressing; off by default")
        self.assertEqual(got.get("X-Forwarded-Proto"), "http")
        self.assertEqual(got.get("X-Forwarded-Host"), "plain.test")
        self.assertEqual(r.headers.get("Via"), "1.1 holdfast")

    def test_requests_ask_for_keep_alive(self):
        # Persistence is the default in HTTP/1.1, but saying so is what makes
        # Apache state its timeout; the client's own tokens never cross.
        r = h.get(self.p.port, "/ask", [("Connection", "close")])
        self.assertEqual(r.status, 200)
        self.assertEqual(self.b.requests[-1].headers.get_all("Connection"), ["keep-alive"])


class LastRequestTest(h.ProxyTestCase):

    def test_last_request_on_a_connection_asks_for_the_close(self):
        b = self.backend(name="b1")
        p = self.proxy(make_config([b.port], keepalive={"max_requests": 2}))
        c = self.client(p.port)
        for i in range(3):
            self.assertEqual(c.request("GET", f"/l{i}").status, 200)
        self.assertEqual([r.headers.get_all("Connection") for r in b.requests],
                         [["keep-alive"], ["close"], ["keep-alive"]])
        self.assertEqual([r.conn_index for r in b.requests], [1, 1, 2])


class ViaChoiceTest(h.ProxyTestCase):

    def test_via_per_direction(self):
        b = self.backend(name="b1")
        p = self.proxy(make_config([b.port], top={"via": {"upstream": True, "client": False}}))
        r = h.get(p.port, "/via", [("Via", "1.0 edge")])
        self.assertEqual(r.status, 200)
        via = [t.strip() for t in b.requests[-1].headers.get("Via", "").split(",")]
        self.assertEqual(via, ["1.0 edge", "1.1 holdfast"], b.requests[-1].headers.get_all("Via"))
        self.assertIsNone(r.headers.get("Via"), r.raw_head)


class ResponseHeadersTest(h.ProxyTestCase):

    def test_hop_by_hop_response_fields_never_reach_client(self):
        extra = [
            ("Connection", "keep-alive, X-Backend-Secret"),
            ("Keep-Alive", "timeout=300, max=77"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "h2c"),
            ("X-Backend-Secret", "hidden"),
            ("X-E", "1"),
            ("Set-Cookie", "a=1; Path=/"),
            ("X-E", "2"),
            ("Set-Cookie", "b=2; Path=/"),
            ("Cache-Control", "max-age=5"),
        ]
        b = self.backend(name="b1", extra_headers=extra)
        p = self.proxy(make_config([b.port], client={"keepalive_timeout": "30s", "keepalive_requests": 100}))
        c = self.client(p.port)
        for i in range(2):
            r = c.request("GET", f"/resp{i}")
            self.assertEqual(r.status, 200)
            for name in ["proxy-connection", "te", "trailer", "upgrade", "x-backend-secret"]:
                self.assertFalse(r.headers.has(name), f"{name} reached the client: {r.raw_head!r}")
            # Only holdfast's own policy fields, with holdfast's values.
            self.assertEqual(r.headers.tokens("connection"), ["keep-alive"], r.raw_head)
            ka = r.headers.get_all("keep-alive")
            self.assertEqual(len(ka), 1, r.raw_head)
            m = KEEPALIVE_RE.match(ka[0])
            self.assertIsNotNone(m, f"Keep-Alive is not holdfast's 'timeout=N, max=M': {ka}")
            self.assertEqual(int(m.group(1)), 30, "Keep-Alive timeout must be the client keepalive_timeout")
            self.assertEqual(int(m.group(2)), 100 - 1 - i)
            te = r.headers.tokens("transfer-encoding")
            self.assertIn(te, ([], ["chunked"]), "only holdfast's own framing may appear")
            names = {"x-e", "set-cookie", "cache-control", "content-type", "x-backend"}
            self.assertEqual(end_to_end(r.headers, names), [
                ("content-type", "text/plain"), ("x-backend", "b1"), ("x-e", "1"), ("set-cookie", "a=1; Path=/"),
                ("x-e", "2"), ("set-cookie", "b=2; Path=/"), ("cache-control", "max-age=5")])
            self.assertEqual(r.headers.get("Via"), "1.1 holdfast")
            self.assertTrue(r.body.startswith(f"b1 conn=1 req={i + 1} GET /resp{i}".encode()), r.body)

    def test_chunked_response_transfer_encoding_is_holdfasts_framing(self):
        b = self.backend(mode="chunked", extra_headers=[("Trailer", "X-Sum")], trailers=[("X-Sum", "abc")])
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        r = c.request("GET", "/chunked")
        self.assertEqual(r.status, 200)
        self.assertFalse(r.headers.has("trailer"), r.raw_head)
        self.assertTrue(r.body.startswith(b"backend conn=1 req=1 GET /chunked"))
        # Still usable afterwards.
        self.assertEqual(c.request("GET", "/after").status, 200)


class PersistenceTest(h.ProxyTestCase):

    def setUp(self):
        self.b = self.backend(name="b1")

    def test_http11_is_persistent(self):
        p = self.proxy(make_config([self.b.port]))
        c = self.client(p.port)
        for i in range(3):
            r = c.request("GET", f"/p{i}")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers.tokens("connection"), ["keep-alive"])
        self.assertStillOpen(c)

    def test_client_connection_close_gets_close_and_closed(self):
        p = self.proxy(make_config([self.b.port]))
        c = self.client(p.port)
        r = c.request("GET", "/bye", [("Connection", "close")])
        self.assertEqual(r.status, 200)
        self.assertIn("close", r.headers.tokens("connection"))
        self.assertClosed(c)

    def test_http10_without_keepalive_closes(self):
        p = self.proxy(make_config([self.b.port]))
        c = self.client(p.port)
        r = c.request("GET", "/old", version="HTTP/1.0")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.body.startswith(b"b1 conn=1 req=1 GET /old"), r.body)
        self.assertNotIn("keep-alive", r.headers.tokens("connection"))
        self.assertNotIn("chunked", r.headers.tokens("transfer-encoding"), "an HTTP/1.0 client cannot read chunked")
        self.assertClosed(c)

    def test_http10_with_keepalive_stays_open(self):
        p = self.proxy(make_config([self.b.port]))
        c = self.client(p.port)
        for i in range(3):
            r = c.request("GET", f"/old{i}", [("Connection", "keep-alive")], version="HTTP/1.0")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers.tokens("connection"), ["keep-alive"], r.raw_head)
            self.assertIsNotNone(r.headers.get("content-length"), "a persistent HTTP/1.0 response needs a length")
            self.assertTrue(r.body.endswith(f"GET /old{i}\n".encode()))
        self.assertStillOpen(c)

    def test_keepalive_requests_limit_and_max_counts_down(self):
        p = self.proxy(make_config([self.b.port], client={"keepalive_timeout": "12s", "keepalive_requests": 3}))
        c = self.client(p.port)
        seen = []
        for i in range(3):
            r = c.request("GET", f"/k{i}")
            self.assertEqual(r.status, 200)
            seen.append((r.headers.tokens("connection"), r.headers.get("keep-alive")))
        self.assertEqual(seen[0], (["keep-alive"], "timeout=12, max=2"), seen)
        self.assertEqual(seen[1], (["keep-alive"], "timeout=12, max=1"), seen)
        self.assertEqual(seen[2], (["close"], None), seen)
        self.assertClosed(c)
        # The limit is per client connection: a new one starts over.
        with h.HttpClient(p.port) as c2:
            r = c2.request("GET", "/new")
            self.assertEqual(r.headers.get("keep-alive"), "timeout=12, max=2")

    def test_client_keepalive_timeout_closes_idle_client(self):
        p = self.proxy(make_config([self.b.port], client={"keepalive_timeout": "1s"}))
        c = self.client(p.port)
        r = c.request("GET", "/idle")
        self.assertEqual(r.status, 200)
        self.assertEqual((r.headers.get("keep-alive") or "").split(",")[0], "timeout=1", r.raw_head)
        self.assertClosed(c, timeout=10)


if __name__ == "__main__":
    unittest.main()
