"""The status page in a real browser: headless Chromium (Debian's chromium) loads
the admin listener's / after traffic, runs its script against /status, and the
resulting table lists every server with its reuse. Set HOLDFAST_STATUS_SCREENSHOT
to a path to keep the screenshot (the README's docs/status-page.png is made so)."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402
from metrics_lib import ADMIN  # noqa: E402

BROWSER_TIMEOUT = 120.0 * h.SLOW
ROW_RE = re.compile(r'<tr data-server="([^"]+)" data-reuse="([^"]+)">')


def chromium(args, profile):
    binary = shutil.which("chromium")
    if not binary:
        raise AssertionError("chromium missing: scripts/setup installs Debian's chromium package")
    # --no-sandbox: the tests may run as root, where Chromium refuses its sandbox;
    # the page comes from holdfast on loopback. The virtual time budget lets the
    # page's first fetch of /status finish before the DOM or the picture is taken.
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--virtual-time-budget=4000", "--hide-scrollbars"] + args
    return subprocess.run(cmd, capture_output=True, timeout=BROWSER_TIMEOUT, stdin=subprocess.DEVNULL)


class StatusPageTest(h.ProxyTestCase):

    def test_page_lists_every_server_with_reuse(self):
        b1, b2 = self.backend(name="b1"), self.backend(name="b2")
        dead = h.closed_port()
        config = make_config([b1.port, b2.port], top=dict(ADMIN, workers=2))
        config["upstreams"]["api"] = {"servers": [{"address": f"127.0.0.1:{dead}"}], "connect_timeout": "2s"}
        config["routes"] = [{"match": {"path_prefix": "/api/"}, "upstream": "api"},
                            {"match": {"path_prefix": "/"}, "upstream": "app"}]
        p = self.proxy(config)
        clients = [self.client(p.port) for _ in range(4)]
        for i in range(40):
            self.assertEqual(clients[i % 4].request("GET", f"/page/{i}").status, 200)
        self.assertEqual(h.get(p.port, "/api/down").status, 502)
        url = f"http://127.0.0.1:{p.admin_port}/"
        work = tempfile.mkdtemp(prefix="holdfast-chromium-")
        self.addCleanup(shutil.rmtree, work, True)

        res = chromium(["--dump-dom", url], os.path.join(work, "profile-dom"))
        dom = res.stdout.decode("utf-8", "replace")
        self.assertEqual(res.returncode, 0, res.stderr.decode()[-2000:])
        rows = dict(ROW_RE.findall(dom))
        app = [f"127.0.0.1:{b1.port}", f"127.0.0.1:{b2.port}"]
        self.assertEqual(sorted(rows), sorted(app + [f"127.0.0.1:{dead}"]), dom[-3000:])
        for server in app:
            self.assertGreater(float(rows[server]), 0.5, f"{server} shows no reuse")
        self.assertEqual(float(rows[f"127.0.0.1:{dead}"]), 0.0)
        self.assertIn("failing", dom)
        self.assertIn('<div id="error" style="display: none;"></div>', dom, "the page could not read /status")

        shot = os.path.join(work, "status-page.png")
        res = chromium([f"--screenshot={shot}", "--window-size=1400,560", url], os.path.join(work, "profile-shot"))
        self.assertEqual(res.returncode, 0, res.stderr.decode()[-2000:])
        with open(shot, "rb") as f:
            data = f.read()
        self.assertTrue(data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10000, "no screenshot")
        keep = os.environ.get("HOLDFAST_STATUS_SCREENSHOT")
        if keep:
            shutil.copyfile(shot, keep)


if __name__ == "__main__":
    unittest.main()
