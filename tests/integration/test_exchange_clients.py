"""Graceful stop under load (defect 15) and real clients a user would run through
holdfast: Python `requests` (python3-requests) and curl."""

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import backend_conn, make_config  # noqa: E402

try:
    import requests
except ImportError:  # scripts/setup installs python3-requests
    requests = None


def peer_closed(sock):
    """True if the peer already closed (FIN or reset) and nothing is left to read."""
    r, _, _ = select.select([sock], [], [], 0)
    if not r:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class GracefulStopTest(h.ProxyTestCase):

    CLIENTS = 100

    def test_15_sigterm_under_load_fails_no_request(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], top={"drain_timeout": "5s"}, log={"access": "off"}),
                       check_exit=False)
        lock = threading.Lock()
        counts = {"ok": 0, "failed": 0, "refused": 0}
        failures = []
        stop_by = time.monotonic() + 20 * h.SLOW

        def client(i):
            c = None
            for _ in range(100000):
                if time.monotonic() > stop_by:
                    break
                if c is None:
                    try:
                        c = h.HttpClient(p.port, 10 * h.SLOW)
                    except ConnectionRefusedError:
                        with lock:
                            counts["refused"] += 1
                        return
                if peer_closed(c.sock):  # closed while idle, before we wrote: not a failure
                    c.close()
                    c = None
                    continue
                try:
                    c.send(h.build_request("GET", f"/c{i}"))
                except OSError:
                    c.close()
                    c = None
                    continue
                try:
                    r = c.read_response()
                except (h.IncompleteMessage, OSError) as e:
                    with lock:
                        counts["failed"] += 1
                        failures.append(repr(e))
                    c.close()
                    c = None
                    continue
                with lock:
                    counts["ok"] += 1
                if "close" in r.headers.tokens("connection"):
                    c.close()
                    c = None
            if c is not None:
                c.close()

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(self.CLIENTS)]
        for t in threads:
            t.start()
        self.assertTrue(h.wait_until(lambda: counts["ok"] >= 2000, 15 * h.SLOW), counts)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        res = p.wait_exit((5 + 3) * h.SLOW)
        for t in threads:
            t.join(max(1.0, stop_by - time.monotonic()))
        self.assertIsNotNone(res, "holdfast did not exit within drain_timeout")
        self.assertLess(time.monotonic() - t0, (5 + 3) * h.SLOW + 25)
        self.assertEqual(res.code, 0, res.stderr[-2000:])
        self.assertIsNone(res.sanitizer_report())
        print(f"\n  graceful stop: {counts}", file=sys.stderr)
        self.assertEqual(counts["failed"], 0, f"{counts}; first failures: {failures[:5]}")
        self.assertGreater(counts["refused"], 0, counts)


@unittest.skipIf(requests is None, "python3-requests is not installed (scripts/setup installs it)")
class RequestsClientTest(h.ProxyTestCase):

    def test_requests_session_keeps_one_backend_connection(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], log={"access": "off"}))
        with requests.Session() as s:
            for i in range(200):
                r = s.get(f"http://{h.LOOPBACK}:{p.port}/r{i}", timeout=10 * h.SLOW)
                self.assertEqual(r.status_code, 200, r.text)
                self.assertEqual(r.text, f"backend conn=1 req={i + 1} GET /r{i}\n")
        self.assertEqual(b.accepted, 1, "connections accepted by the backend")

    def test_requests_post_body(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], log={"access": "off"}))
        data = h.pattern_block(7, 300000)
        r = requests.post(f"http://{h.LOOPBACK}:{p.port}/post", data=data, timeout=10 * h.SLOW)
        self.assertEqual(r.status_code, 200)
        self.assertEqual(b.requests[-1].body, data)


@unittest.skipIf(shutil.which("curl") is None, "curl is not installed")
class CurlClientTest(h.ProxyTestCase):

    def test_curl_chunked_upload(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], log={"access": "off"}))
        data = h.pattern_block(3, 200000)
        out = subprocess.run(["curl", "--http1.1", "-sS", "--max-time", str(int(20 * h.SLOW)), "-T", "-",
                              "-H", "Expect:", f"http://{h.LOOPBACK}:{p.port}/upload"],
                             input=data, capture_output=True, timeout=30 * h.SLOW)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, b"backend conn=1 req=1 PUT /upload\n")
        req = b.requests[-1]
        self.assertEqual(req.framing, "chunked")
        self.assertEqual(req.body, data)

    def test_curl_keepalive_reuses_connections(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], log={"access": "off"}))
        urls = [f"http://{h.LOOPBACK}:{p.port}/k{i}" for i in range(20)]
        out = subprocess.run(["curl", "--http1.1", "-sS", "--max-time", str(int(20 * h.SLOW))] + urls,
                             capture_output=True, timeout=30 * h.SLOW)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, b"".join(b"backend conn=1 req=%d GET /k%d\n" % (i + 1, i) for i in range(20)))
        self.assertEqual(b.accepted, 1)
        self.assertEqual(backend_conn(h.get(p.port, "/last")), 1)


if __name__ == "__main__":
    unittest.main()
