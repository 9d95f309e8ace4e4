"""Real backends left silent about their idle timeout (issue: keep-alive without
configuration): gunicorn (gthread worker, keepalive 2s by default, no Keep-Alive
field) and nginx (keepalive_timeout 2s, no timeout stated), each behind holdfast
at its defaults. POSTs sent after idle gaps around the backend's timeout must
all succeed once holdfast has seen the backend close one idle connection.

Skipped when the server is not installed (scripts/setup installs both)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402

T = 2.0                                          # both backends' idle timeout
GAPS = [1.6, 1.8, 1.95, 2.0, 2.05, 2.2, 2.5]     # idle gaps around it, in seconds
SYSTEM_PYTHON = "/usr/bin/python3"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

WSGI_APP = '''
def app(environ, start_response):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n) if n else b""
    out = b"ok %d\\n" % len(body)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
'''

NGINX_CONF = '''
worker_processes 1;
daemon off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %(d)s/body;
  proxy_temp_path %(d)s/proxy;
  fastcgi_temp_path %(d)s/fastcgi;
  uwsgi_temp_path %(d)s/uwsgi;
  scgi_temp_path %(d)s/scgi;
  keepalive_timeout 2s;
  server {
    listen 127.0.0.1:%(port)d;
    location / { return 200 "ok\\n"; }
  }
}
'''


def gunicorn_available():
    return os.path.exists(SYSTEM_PYTHON) and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gunicorn"], capture_output=True, timeout=20).returncode == 0


def free_port():
    s = socket.socket()
    s.bind((h.LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection((h.LOOPBACK, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


class RealBackend:
    def __init__(self, kind):
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix=f"holdfast-{kind}-")
        self.port = free_port()
        if kind == "gunicorn":
            with open(os.path.join(self.dir, "app.py"), "w") as f:
                f.write(WSGI_APP)
            # gthread: the worker that keeps connections alive (keepalive 2s by default).
            cmd = [SYSTEM_PYTHON, "-m", "gunicorn", "--bind", f"{h.LOOPBACK}:{self.port}", "--workers", "1",
                   "--threads", "4", "--chdir", self.dir, "app:app"]
        else:
            with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
                f.write(NGINX_CONF % {"d": self.dir, "port": self.port})
            cmd = [NGINX, "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf")]
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not wait_port(self.port, self.proc):
            self.stop()
            raise AssertionError(f"{kind} did not start on port {self.port}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if self.kind == "gunicorn" else signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def available(kind):
    return gunicorn_available() if kind == "gunicorn" else os.path.exists(NGINX)


class RealBackendTest(unittest.TestCase):

    def run_against(self, kind, out):
        backend = RealBackend(kind)
        try:
            with h.Proxy(make_config([backend.port], log={"access": "off"})) as proxy:
                c = h.HttpClient(proxy.port, timeout=10)
                try:
                    # The first idle close teaches holdfast the silent timeout.
                    assert c.request("GET", "/learn").status == 200
                    time.sleep(T + 1.5)
                    failures = []
                    for i, gap in enumerate(GAPS * 2):
                        time.sleep(gap)
                        try:
                            r = c.request("POST", f"/p{i}", body=b"x" * 100)
                            if r.status != 200:
                                failures.append((gap, r.status))
                        except (OSError, h.IncompleteMessage, h.ProtocolError) as e:
                            failures.append((gap, repr(e)))
                            c.close()
                            c = h.HttpClient(proxy.port, timeout=10)
                finally:
                    c.close()
                res = proxy.stop()
            out[kind] = {"failures": failures, "stats": res.stats}
        finally:
            backend.stop()

    def test_posts_across_a_silent_backends_timeout(self):
        kinds = [k for k in ("gunicorn", "nginx") if available(k)]
        if not kinds:
            self.skipTest("neither gunicorn nor nginx is installed")
        out, errors = {}, []

        def run(kind):
            try:
                self.run_against(kind, out)
            except Exception as e:
                errors.append((kind, repr(e)))

        threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in kinds]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        for kind in kinds:
            r = out[kind]
            stats = r["stats"] or {}
            print(f"\n{kind}: {len(r['failures'])} POST failures of {len(GAPS) * 2}; idle_closes_learned "
                  f"{stats.get('idle_closes_learned')}, evict_hint {stats.get('evict_hint')}, "
                  f"retries_refused {stats.get('retries_refused')}", file=sys.stderr)
            self.assertEqual(r["failures"], [], kind)
            self.assertGreaterEqual(stats.get("idle_closes_learned", 0), 1, (kind, stats))
            self.assertEqual(stats.get("retries_refused", 0), 0, (kind, stats))


if __name__ == "__main__":
    unittest.main()
