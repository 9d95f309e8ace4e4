"""The shipped demo backend behind holdfast, as scripts/run sets it up: answers come
from both backends in turn over pooled connections."""

import os
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402


def start_demo(name):
    """Starts the demo backend on a free loopback port; returns (process, port)."""
    last = ""
    for _ in range(5):
        port = h.closed_port()
        proc = subprocess.Popen([h.DEMO_BACKEND, "--listen", f"{h.LOOPBACK}:{port}", "--name", name],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10 * h.SLOW
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection((h.LOOPBACK, port), timeout=1).close()
                return proc, port
            except OSError:
                time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        last = proc.stderr.read().decode(errors="replace")
    raise AssertionError(f"demo backend did not start: {last}")


class DemoBackendTest(h.ProxyTestCase):

    def setUp(self):
        if not os.path.exists(h.DEMO_BACKEND):
            self.skipTest(f"demo backend not built at {h.DEMO_BACKEND}")
        self.ports = []
        for name in ("backend-1", "backend-2"):
            proc, port = start_demo(name)
            self.addCleanup(self.stop_demo, proc)
            self.ports.append(port)

    @staticmethod
    def stop_demo(proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        proc.stderr.close()

    def test_requests_alternate_over_pooled_connections(self):
        p = self.proxy(make_config(self.ports))
        c = self.client(p.port)
        seen = []
        for i in range(10):
            r = c.request("GET", f"/demo/{i}")
            self.assertEqual(r.status, 200, r)
            name = r.headers.get("X-Backend")
            conn = r.headers.get("X-Backend-Connection")
            req = r.headers.get("X-Backend-Request")
            self.assertEqual(r.body, f"{name} conn={conn} req={req} GET /demo/{i}\n".encode())
            seen.append((name, conn, req))
        names = [s[0] for s in seen]
        self.assertEqual(sorted(set(names)), ["backend-1", "backend-2"], seen)
        self.assertTrue(all(a != b for a, b in zip(names, names[1:])), f"servers did not take turns: {names}")
        self.assertEqual({s[1] for s in seen}, {"1"}, f"each backend should be reached over one pooled connection: {seen}")
        self.assertEqual([s[2] for s in seen], [str(i // 2 + 1) for i in range(10)], seen)


if __name__ == "__main__":
    unittest.main()
