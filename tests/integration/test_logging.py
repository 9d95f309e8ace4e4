"""Logs (issue 2, "Operations"): one access-log line per exchange with client address,
method, target, status, bytes each way, upstream server, reuse and duration; error
lines carry the connection id; the access log can go to a file or be turned off."""

import os
import re
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402

ACCESS_RE = re.compile(r'(?P<client>127\.0\.0\.1:\d+) "(?P<method>[A-Z]+) (?P<target>\S+) HTTP/1\.[01]" '
                       r'(?P<status>\d{3}) in=(?P<in>\d+) out=(?P<out>\d+) upstream=(?P<upstream>\S+) '
                       r'reused=(?P<reused>[01]) time=(?P<time>[\d.]+)')


def access_lines(text):
    return [m.groupdict() for m in map(ACCESS_RE.search, text.splitlines()) if m]


class AccessLogTest(h.ProxyTestCase):

    def test_one_line_per_exchange_on_stdout(self):
        b = self.backend()
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        client_addr = "%s:%d" % c.sock.getsockname()
        c.request("GET", "/one")
        c.request("POST", "/two?x=1", body=b"12345")
        c.request("GET", "/status/404")
        c.close()
        res = p.stop()
        lines = access_lines(res.stdout)
        self.assertEqual([(x["method"], x["target"], x["status"]) for x in lines],
                         [("GET", "/one", "200"), ("POST", "/two?x=1", "200"), ("GET", "/status/404", "404")],
                         res.stdout)
        self.assertEqual({x["client"] for x in lines}, {client_addr})
        self.assertEqual({x["upstream"] for x in lines}, {f"127.0.0.1:{b.port}"})
        self.assertEqual([x["reused"] for x in lines], ["0", "1", "1"])
        # "in" counts the request as the client sent it: head and body.
        self.assertGreater(int(lines[0]["in"]), len("GET /one HTTP/1.1\r\n\r\n"))
        self.assertGreater(int(lines[1]["in"]), 0)
        self.assertGreater(int(lines[0]["out"]), 0)
        self.assertGreater(int(lines[1]["in"]), int(lines[0]["in"]), "the POST carried a body: more bytes in")

    def test_access_log_to_file_and_off(self):
        b = self.backend()
        log_dir = tempfile.mkdtemp(prefix="holdfast-log-")
        self.addCleanup(shutil.rmtree, log_dir, True)
        path = os.path.join(log_dir, "access.log")
        p = self.proxy(make_config([b.port], log={"access": path}))
        h.get(p.port, "/to-file")
        res = p.stop()
        with open(path) as f:
            text = f.read()
        self.assertEqual([x["target"] for x in access_lines(text)], ["/to-file"], text)
        self.assertEqual(access_lines(res.stdout), [])

        p2 = self.proxy(make_config([b.port], log={"access": "off"}))
        h.get(p2.port, "/quiet")
        res2 = p2.stop()
        self.assertEqual(access_lines(res2.stdout + res2.stderr), [])

    def test_error_lines_carry_connection_id(self):
        p = self.proxy(make_config([h.closed_port()]))
        r = h.get(p.port, "/refused")
        self.assertEqual(r.status, 502)
        res = p.stop()
        errors = [ln for ln in res.stderr.splitlines() if re.search(r"\b(warn|warning|error)\b", ln)]
        self.assertTrue(errors, f"no warning/error line for a refused upstream connect:\n{res.stderr}")
        self.assertTrue(any(re.search(r"\bconn(ection)?[ =#:]*\d+", ln) for ln in errors),
                        f"error lines do not name a connection id:\n{errors}")
        self.assertEqual([x["status"] for x in access_lines(res.stdout)], ["502"])


if __name__ == "__main__":
    unittest.main()
