"""Request targets and routing: absolute-form targets are routed and forwarded by their
own authority (RFC 9112 3.2.2), routes match the normalised path while the target is
forwarded byte for byte (RFC 3986 6.2.2), and `OPTIONS *` reaches the default route."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402


def routed_config(groups, routes):
    """A config with one upstream group per (name, backend) and the given routes
    (a list of (match dict, group name)), in order."""
    first = groups[0][1]
    cfg = make_config([first.port])
    cfg["upstreams"] = {name: {"servers": [{"address": b.address}], "connect_timeout": "2s", "read_timeout": "20s"}
                        for name, b in groups}
    cfg["routes"] = [{"match": match, "upstream": name} for match, name in routes]
    return cfg


class AbsoluteFormTest(h.ProxyTestCase):

    def setUp(self):
        self.a = self.backend(name="a")
        self.b = self.backend(name="b")
        self.p = self.proxy(routed_config([("a", self.a), ("b", self.b)], [
            ({"host": "a.example", "path_prefix": "/"}, "a"),
            ({"host": "b.example", "path_prefix": "/"}, "b"),
        ]))

    def test_authority_of_the_target_routes_and_replaces_host(self):
        c = self.client(self.p.port)
        c.send(b"GET http://a.example/x?q=1 HTTP/1.1\r\nHost: b.example\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("X-Backend"), "a", "routed by Host instead of the target's authority")
        self.assertEqual(self.b.requests, [])
        got = self.a.requests[-1]
        self.assertEqual(got.target, "/x?q=1", got.raw_head)
        self.assertEqual(got.headers.get_all("Host"), ["a.example"], got.raw_head)
        self.assertStillOpen(c)

    def test_empty_path_becomes_slash_and_query_is_kept(self):
        c = self.client(self.p.port)
        c.send(b"GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n")
        self.assertEqual(c.read_response().status, 200)
        c.send(b"GET http://A.example:8080?k=v HTTP/1.1\r\nHost: b.example\r\n\r\n")
        self.assertEqual(c.read_response().status, 200)
        self.assertEqual([q.target for q in self.a.requests], ["/", "/?k=v"])
        self.assertEqual(self.a.requests[-1].headers.get_all("Host"), ["A.example:8080"])

    def test_host_added_when_absent(self):
        c = self.client(self.p.port)
        c.send(b"GET http://b.example/y HTTP/1.0\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        got = self.b.requests[-1]
        self.assertEqual((got.target, got.headers.get_all("Host")), ("/y", ["b.example"]), got.raw_head)

    def test_userinfo_in_the_target_is_refused(self):
        c = self.client(self.p.port)
        c.send(b"GET http://b.example@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        self.assertEqual(c.read_response().status, 400)
        self.assertClosed(c)
        self.assertEqual(self.a.accepted + self.b.accepted, 0)


class NormalisedPathTest(h.ProxyTestCase):

    def setUp(self):
        self.v1 = self.backend(name="v1")
        self.admin = self.backend(name="admin")
        self.p = self.proxy(routed_config([("v1", self.v1), ("admin", self.admin)], [
            ({"path_prefix": "/v1/"}, "v1"),
            ({"path_prefix": "/admin"}, "admin"),
        ]))

    def test_dot_segments_do_not_escape_a_route(self):
        c = self.client(self.p.port)
        for target in ["/v1/../admin", "/v1/%2e%2E/admin/x", "/v1/./../admin?from=/v1/"]:
            with self.subTest(target=target):
                r = c.request("GET", target)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers.get("X-Backend"), "admin", f"{target} was routed to {r.headers}")
                # Routing looked at the normalised path; the backend sees the target as sent.
                self.assertEqual(self.admin.requests[-1].target, target)
        self.assertEqual(self.v1.requests, [])

    def test_unmatched_after_normalising_is_404(self):
        c = self.client(self.p.port)
        r = c.request("GET", "/v1/../other")
        self.assertEqual(r.status, 404, r)
        self.assertEqual((self.v1.accepted, self.admin.accepted), (0, 0))

    def test_percent_encoded_unreserved_characters_match(self):
        c = self.client(self.p.port)
        r = c.request("GET", "/%76%31/a%2fb")
        self.assertEqual(r.headers.get("X-Backend"), "v1", r)
        self.assertEqual(self.v1.requests[-1].target, "/%76%31/a%2fb")


class AsteriskFormTest(h.ProxyTestCase):

    def setUp(self):
        self.api = self.backend(name="api")
        self.default = self.backend(name="default")
        self.p = self.proxy(routed_config([("api", self.api), ("default", self.default)], [
            ({"path_prefix": "/api/"}, "api"),
            ({"path_prefix": "/"}, "default"),
        ]))

    def test_options_asterisk_goes_to_the_default_route_as_asterisk(self):
        c = self.client(self.p.port)
        r = c.request("OPTIONS", "*")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("X-Backend"), "default")
        got = self.default.requests[-1]
        self.assertEqual((got.method, got.target), ("OPTIONS", "*"), got.raw_head)
        self.assertStillOpen(c)

    def test_asterisk_with_another_method_is_refused(self):
        c = self.client(self.p.port)
        r = c.request("GET", "*")
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.default.accepted + self.api.accepted, 0)


if __name__ == "__main__":
    unittest.main()
