"""A real Prometheus server (Debian's prometheus) scrapes holdfast's admin
listener on loopback; the test reads figures back through Prometheus's query API."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402
from metrics_lib import ADMIN  # noqa: E402

START_TIMEOUT = 60.0 * h.SLOW   # Prometheus answering /-/ready
SCRAPE_TIMEOUT = 60.0 * h.SLOW  # a figure reaching the query API


def free_port():
    s = socket.socket()
    s.bind((h.LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Prometheus:
    def __init__(self, target_port):
        binary = shutil.which("prometheus")
        if not binary:
            raise AssertionError("prometheus missing: scripts/setup installs Debian's prometheus package")
        self.dir = tempfile.mkdtemp(prefix="holdfast-prom-")
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: holdfast\n"
                    f"    static_configs:\n      - targets: ['{h.LOOPBACK}:{target_port}']\n")
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "log"), "w+")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address={h.LOOPBACK}:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path):
        with urllib.request.urlopen(f"http://{h.LOOPBACK}:{self.port}{path}", timeout=5) as r:
            return r.status, r.read()

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.get("/-/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus did not become ready:\n{self.log_text()}")

    def query(self, expr):
        """The value of an instant query with one result, or None."""
        status, body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        data = json.loads(body)
        if status != 200 or data.get("status") != "success" or len(data["data"]["result"]) != 1:
            return None
        return float(data["data"]["result"][0]["value"][1])

    def wait_value(self, expr, expected):
        deadline = time.monotonic() + SCRAPE_TIMEOUT
        value = None
        while time.monotonic() < deadline:
            value = self.query(expr)
            if value == expected:
                return value
            time.sleep(0.25)
        return value

    def log_text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrometheusScrapeTest(h.ProxyTestCase):

    def test_prometheus_reads_reuse_counter_and_pool_gauge(self):
        b = self.backend(name="b1")
        p = self.proxy(make_config([b.port], top=ADMIN))
        prom = Prometheus(p.admin_port)
        self.addCleanup(prom.stop)
        prom.wait_ready()
        c = self.client(p.port)
        for i in range(20):
            self.assertEqual(c.request("GET", f"/prom/{i}").status, 200)
        server = f'upstream="app",server="127.0.0.1:{b.port}"'
        reused = prom.wait_value(f"holdfast_upstream_requests_reused_total{{{server}}}", 19.0)
        self.assertEqual(reused, 19.0, prom.log_text())
        idle = prom.wait_value(f'holdfast_upstream_connections{{{server},state="idle"}}', 1.0)
        self.assertEqual(idle, 1.0)
        self.assertEqual(prom.query(f'holdfast_upstream_connections{{{server},state="active"}}'), 0.0)
        self.assertEqual(prom.query('up{job="holdfast"}'), 1.0, "the scrape itself failed")


if __name__ == "__main__":
    unittest.main()
