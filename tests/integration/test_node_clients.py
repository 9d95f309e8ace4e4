"""Node's fetch (undici) and http.Agent through holdfast, as users run them: they
reuse their connections and lose nothing across idle gaps swept around the
advertised timeout (holdfast closes only after timeout + keepalive_grace, so a
client that honours the hint never races it). Each keeps a safety threshold
below the advertised timeout (http.Agent 1 s, undici 2 s), so undici gets a
4 s timeout: at 2 s it would never reuse a connection."""

import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402

NODE = shutil.which("node")

# Requests with the given idle gaps (ms) before each; prints one JSON line:
# {"ok": n, "failed": [...]}. `agent`: "fetch" (undici) or "http" (http.Agent keepAlive).
SCRIPT = r"""
const [port, kind, gapsJson] = process.argv.slice(1);  // node -e: no script path in argv
const gaps = JSON.parse(gapsJson);
const http = require('http');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function viaHttp(path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: Number(port), path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(10000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}
async function viaFetch(path) {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(10000) });
  return { status: r.status, body: await r.text() };
}
(async () => {
  let ok = 0;
  const failed = [];
  for (let i = 0; i < gaps.length; i++) {
    await new Promise((r) => setTimeout(r, gaps[i]));
    try {
      const r = await (kind === 'fetch' ? viaFetch : viaHttp)(`/n${i}`);
      if (r.status === 200 && r.body.includes(`GET /n${i}`)) ok++;
      else failed.push(`${i}: status ${r.status}`);
    } catch (e) {
      failed.push(`${i}: ${e.cause ? e.cause.code || e.cause.message : e.message}`);
    }
  }
  console.log(JSON.stringify({ ok, failed }));
  agent.destroy();
})();
"""


CLIENTS = {
    # kind: (advertised keepalive_timeout in s, idle gaps in ms before the short ones)
    # undici: around its own cut-off (4 s - 2 s) and the advertised 4 s.
    "fetch": (4, [1800, 2000, 2200, 3700, 3950, 4050, 4300]),
    # http.Agent: around its cut-off (2 s - 1 s) and the advertised 2 s.
    "http": (2, [900, 1100, 1700, 1950, 2050, 2300, 2600]),
}
SHORT = [50] * 8


@unittest.skipIf(NODE is None, "node is not installed (scripts/setup installs nodejs)")
class NodeClientsTest(unittest.TestCase):
    """Both clients run at once, each against its own backend and holdfast (the run
    is their idle gaps); each test then checks its own client's outcome."""

    runs = {}

    @classmethod
    def setUpClass(cls):
        for kind, (timeout_s, sweep) in CLIENTS.items():
            b = h.KeepAliveBackend()
            cls.addClassCleanup(b.stop)
            p = h.Proxy(make_config([b.port], client={"keepalive_timeout": f"{timeout_s}s"}, log={"access": "off"}))
            cls.addClassCleanup(p.stop)
            gaps = [0] + sweep + SHORT
            node = subprocess.Popen([NODE, "-e", SCRIPT, str(p.port), kind, json.dumps(gaps)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            cls.addClassCleanup(cls.reap, node)
            cls.runs[kind] = (p, node, gaps)

    @staticmethod
    def reap(node):
        if node.poll() is None:
            node.kill()
        node.communicate(timeout=10)

    def run_node(self, kind):
        _, node, gaps = self.runs[kind]
        out, err = node.communicate(timeout=(sum(gaps) / 1000 + 60) * h.SLOW)
        self.assertEqual(node.returncode, 0, err)
        return json.loads(out.strip().splitlines()[-1])

    def check_client(self, kind):
        p, _, gaps = self.runs[kind]
        sweep = CLIENTS[kind][1]
        result = self.run_node(kind)
        self.assertEqual(result["failed"], [], f"{kind}: requests lost at the keep-alive boundary")
        self.assertEqual(result["ok"], 1 + len(sweep) + len(SHORT))
        # The short gaps reused the client connection: holdfast accepted far
        # fewer connections than it served requests.
        res = p.stop()
        self.assertIsNone(res.sanitizer_report(), res.sanitizer_report())
        self.assertFalse(res.killed, res.stderr[-3000:])
        self.assertEqual(res.code, 0, res.stderr[-3000:])
        stats = res.stats
        self.assertLess(stats["client_connections"], 1 + len(sweep) + 2, stats)
        self.assertEqual(stats["requests"], 1 + len(sweep) + len(SHORT), stats)

    def test_fetch_undici(self):
        self.check_client("fetch")

    def test_http_agent_keepalive(self):
        self.check_client("http")


if __name__ == "__main__":
    unittest.main()
