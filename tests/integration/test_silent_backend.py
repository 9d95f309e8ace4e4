"""Keep-alive without configuration (issue: both legs): backends that never state
their idle timeout. holdfast asks for the hint, learns the timeout from the
backend's first idle close, and from then on never sends a POST into that close,
whether the backend's FIN leaves at once or arrives 250 ms late."""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import backend_conn, make_config  # noqa: E402
from metrics_lib import ADMIN, Metrics  # noqa: E402

sys.path.insert(0, os.path.join(h.REPO, "scripts"))
import racelib  # noqa: E402

T = 1.0
N_SWEEP = 60                       # POSTs over gaps 0.9T..1.1T, shared by SHARDS proxies
SHARDS = 6
N_STEADY = 30                      # then gaps of 0.3T on the first shard
FIN_CASES = {"immediate_fin": 0.0, "late_fin": racelib.FIN_DELAY}
UPSTREAM = {"keepalive": {"margin": "200ms"}}   # nothing about the backend's timeout
C = "holdfast_"


def server_labels(port):
    return {"upstream": "app", "server": f"{h.LOOPBACK}:{port}"}


def learn_first_close(proxy, backend, fin_delay):
    """One request, then an idle pause past the backend's close: holdfast sees the EOF."""
    with h.HttpClient(proxy.port) as c:
        r = c.request("GET", "/warm")
        assert r.status == 200, r
    time.sleep(T + fin_delay + 0.3 * h.SLOW)


class SilentRaceTest(unittest.TestCase):
    """Every (FIN case, shard) pair runs against its own backend and holdfast, all at once."""

    results = {}

    @classmethod
    def setUpClass(cls):
        runs = []
        try:
            for case, fin_delay in FIN_CASES.items():
                for shard in range(SHARDS):
                    backend = racelib.RaceBackend(timeout=T, fin_delay=fin_delay).start()
                    runs.append((case, shard, fin_delay, backend, None))
                    proxy = h.Proxy(make_config([backend.port], upstream=UPSTREAM, log={"access": "off"}, top=ADMIN))
                    runs[-1] = (case, shard, fin_delay, backend, proxy)
        except Exception:
            for _, _, _, b, p in runs:
                if p:
                    p.stop(timeout=10)
                b.stop()
            raise
        errors = []

        def run(case, shard, fin_delay, backend, proxy):
            try:
                learn_first_close(proxy, backend, fin_delay)
                m = Metrics(proxy)
                learned = m.value(C + "upstream_observed_keepalive_timeout_seconds", **server_labels(backend.port))
                steady_n = N_STEADY if shard == 0 else 0
                res = racelib.run_race(h.LOOPBACK, proxy.port, T, ("POST",), N_SWEEP, 0,
                                       tag=f"{case}-{shard}", shard=(shard, SHARDS))
                before = backend.snapshot()
                steady = racelib.run_race(h.LOOPBACK, proxy.port, T, ("POST",), 0, steady_n, tag=f"{case}-{shard}-s")
                after = backend.snapshot()
                cls.results[(case, shard)] = {
                    "learned": learned,
                    "sweep": res["methods"]["POST"],
                    "steady": steady["methods"]["POST"],
                    "steady_connections": after["connections"] - before["connections"],
                }
            except Exception as e:
                errors.append((case, shard, repr(e)))

        threads = [threading.Thread(target=run, args=r, daemon=True) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        for case, shard, _, backend, proxy in runs:
            res = proxy.stop()
            entry = cls.results.setdefault((case, shard), {})
            entry["backend"] = backend.snapshot()
            entry["exit"] = res
            backend.stop()
        cls.errors = errors
        print("\nsilent backend (T = 1s, margin 200ms, nothing declared):", file=sys.stderr)
        for key, e in sorted(cls.results.items()):
            if "sweep" in e:
                print(f"  {key}: learned {e['learned']}s, sweep failures {e['sweep']['failed']}/{e['sweep']['sent']} "
                      f"{e['sweep']['phases']['sweep']['kinds']}, steady {e['steady']['failed']}/{e['steady']['sent']} "
                      f"on {e['steady_connections']} backend connections; backend {e['backend']}", file=sys.stderr)

    def entry(self, case, shard):
        self.assertEqual(self.errors, [])
        e = self.results.get((case, shard), {})
        self.assertIn("sweep", e, f"{case}/{shard} did not complete")
        return e

    def test_first_close_teaches_a_deadline_below_the_backend_timeout(self):
        for case in FIN_CASES:
            for shard in range(SHARDS):
                learned = self.entry(case, shard)["learned"]
                # The pool keeps connections at most learned - margin idle.
                self.assertIsNotNone(learned, case)
                self.assertLess(learned - 0.2, T, (case, learned))
                self.assertGreater(learned - 0.2, 0.3 * T, (case, learned))

    def test_no_post_fails_after_the_first_close(self):
        for case in FIN_CASES:
            sent = failed = 0
            for shard in range(SHARDS):
                e = self.entry(case, shard)
                sent += e["sweep"]["sent"] + e["steady"]["sent"]
                failed += e["sweep"]["failed"] + e["steady"]["failed"]
                self.assertEqual(e["backend"]["dropped"], 0, (case, shard, e["backend"]))
            self.assertEqual(sent, N_SWEEP + N_STEADY, case)
            self.assertEqual(failed, 0, case)

    def test_no_post_sent_twice(self):
        for case in FIN_CASES:
            for shard in range(SHARDS):
                self.assertEqual(self.entry(case, shard)["backend"]["posts_executed_twice"], [], case)

    def test_connections_reused_below_the_timeout(self):
        for case in FIN_CASES:
            e = self.entry(case, 0)
            self.assertEqual(e["steady"]["failed"], 0)
            self.assertLessEqual(e["steady_connections"], N_STEADY // 6, (case, e["steady_connections"]))

    def test_learned_closes_counted_and_clean_exit(self):
        for key, e in self.results.items():
            res = e["exit"]
            self.assertIsNone(res.sanitizer_report(), key)
            self.assertEqual(res.code, 0, key)
            self.assertGreaterEqual((res.stats or {}).get("idle_closes_learned", 0), 1, (key, res.stats))


class AskedHintTest(h.ProxyTestCase):

    def test_hint_given_only_when_asked_is_learned(self):
        # Apache's way: Keep-Alive: timeout=N only for requests that carry
        # Connection: keep-alive.
        def hook(req, data, close):
            if "keep-alive" in req.headers.tokens("connection"):
                i = data.index(b"\r\n\r\n")
                data = data[:i] + b"\r\nKeep-Alive: timeout=5, max=100" + data[i:]
            return data, close

        b = self.backend(response_hook=hook)
        p = self.proxy(make_config([b.port], top=ADMIN))
        self.assertEqual(h.get(p.port, "/a").status, 200)
        m = Metrics(p)
        self.assertEqual(m.value(C + "upstream_hints_learned_total", **server_labels(b.port)), 1)
        self.assertEqual(m.value(C + "upstream_learned_keepalive_timeout_seconds", **server_labels(b.port)), 5.0)


class ObservedCloseTest(h.ProxyTestCase):

    def test_backend_idle_close_shortens_the_pool(self):
        # A backend that closes idle connections after 1 s without a word:
        # after its first close, holdfast closes pooled connections first.
        b = self.backend(idle_close=1.0)
        p = self.proxy(make_config([b.port], upstream=UPSTREAM, top=ADMIN))
        c = self.client(p.port)
        self.assertEqual(backend_conn(c.request("GET", "/a")), 1)
        self.assertEqual(b.wait_closed_conn(1, 5), "idle_close")
        self.assertTrue(h.wait_until(
            lambda: Metrics(p).value(C + "upstream_idle_closes_learned_total", **server_labels(b.port)) == 1,
            5 * h.SLOW))
        self.assertEqual(backend_conn(c.request("GET", "/b")), 2)
        t0 = time.monotonic()
        reason = b.wait_closed_conn(2, 5)
        idle = time.monotonic() - t0
        self.assertEqual(reason, "eof", "holdfast, not the backend, should close the second connection")
        self.assertLess(idle, 0.95 * h.SLOW, "holdfast should close before the backend's 1 s")
        m = Metrics(p)
        self.assertEqual(m.value(C + "upstream_observed_keepalive_timeout_seconds", **server_labels(b.port)), 1.0)
        self.assertGreaterEqual(m.value(C + "pool_evictions_total", reason="hint", **server_labels(b.port)), 1)


if __name__ == "__main__":
    unittest.main()
