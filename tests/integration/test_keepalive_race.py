"""The keep-alive race (issue 4): learned Keep-Alive hints, and the race scenario of
scripts/racelib.py run through holdfast with and without the backend advertising
its timeout, and with the timeout declared in the config."""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import backend_conn, make_config  # noqa: E402

sys.path.insert(0, os.path.join(h.REPO, "scripts"))
import racelib  # noqa: E402

T = 1.0
N_SWEEP = 60
N_STEADY = 60


def insert_header(data, line):
    i = data.index(b"\r\n\r\n")
    return data[:i] + b"\r\n" + line.encode() + data[i:]


class LearnedHintTest(h.ProxyTestCase):

    def test_learned_timeout_stops_reuse_before_backend_closes(self):
        # The backend advertises timeout=2 but (unlike a real one) never closes, so a
        # reuse after the learned deadline would be visible rather than a failure.
        b = self.backend(extra_headers=[("Keep-Alive", "timeout=2")])
        p = self.proxy(make_config([b.port], keepalive={"idle_timeout": "30s", "margin": "200ms"}))
        c = self.client(p.port)
        self.assertEqual(backend_conn(c.request("GET", "/a")), 1)
        time.sleep(0.3)
        self.assertEqual(backend_conn(c.request("GET", "/b")), 1, "reused well within the learned timeout")
        # The learned deadline is 2s - 200ms after the response: holdfast closes the connection itself.
        t0 = time.monotonic()
        self.assertIn(b.wait_closed_conn(1, 10), ("eof", "reset"),
                      "holdfast did not close a connection idle past the backend's advertised timeout")
        self.assertLess(time.monotonic() - t0, 10 * h.SLOW)
        r = c.request("GET", "/c")
        self.assertEqual(backend_conn(r), 2)
        res = p.stop()
        self.assertIsNotNone(res.stats)
        self.assertGreaterEqual(res.stats.get("hints_learned", 0), 1, res.stats)
        self.assertGreaterEqual(res.stats.get("evict_hint", 0), 1, res.stats)

    def test_learned_timeout_overrides_long_idle_timeout_at_checkout(self):
        # The reuse decision after 2.1s idle: past the learned 1.8s deadline, so a new connection.
        b = self.backend(extra_headers=[("Keep-Alive", "timeout=2")])
        p = self.proxy(make_config([b.port], keepalive={"idle_timeout": "30s", "margin": "200ms"}))
        c = self.client(p.port)
        self.assertEqual(backend_conn(c.request("GET", "/a")), 1)
        time.sleep(2.1)
        self.assertEqual(backend_conn(c.request("POST", "/b", body=b"x")), 2)

    def test_hint_at_or_below_margin_means_not_pooled(self):
        b = self.backend(extra_headers=[("Keep-Alive", "timeout=1")])
        p = self.proxy(make_config([b.port], keepalive={"margin": "1s"}))
        c = self.client(p.port)
        conns = [backend_conn(c.request("GET", f"/n{i}")) for i in range(3)]
        self.assertEqual(conns, [1, 2, 3])

    def test_max_hint_is_per_connection(self):
        # Apache's way: each connection allows 3 requests and says so in every answer
        # as the number left on that connection (max=2, max=1, then max=0). The
        # backend keeps the connection open after max=0, so a reuse would show.
        def hook(req, data, close):
            return insert_header(data, f"Keep-Alive: timeout=5, max={max(0, 3 - req.req_index)}"), close

        b = self.backend(response_hook=hook)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        conns = [backend_conn(c.request("GET", f"/m{i}")) for i in range(7)]
        # A new connection gets the backend's full budget again: the spent max=0 of
        # the one before is not carried over to it.
        self.assertEqual(conns, [1, 1, 1, 2, 2, 2, 3], "after max=0 the connection must not be reused")
        self.assertEqual(b.accepted, 3, "connections opened at the backend")
        self.assertEqual(max(r.req_index for r in b.requests), 3, "a request went past its connection's max=")
        res = p.stop()
        self.assertEqual(res.stats.get("evict_max_requests"), 2, res.stats)


CASES = {
    # name: (backend advertises, upstream config)
    "no_hint": (False, {"keepalive": {"idle_timeout": "30s", "margin": "200ms"}}),
    "advertised": (True, {"keepalive": {"idle_timeout": "30s", "margin": "200ms"}}),
    "declared": (False, {"backend_keepalive_timeout": "1s", "keepalive": {"margin": "200ms"}}),
}
METHODS = ("GET", "POST")
SHARDS = range(4)


class RaceTest(unittest.TestCase):
    """Every (case, method, shard) runs against its own backend and holdfast, all at
    once, so that no run's traffic keeps another's connections fresh. The shards of
    a (case, method) share its sweep: each takes every 4th of the N_SWEEP pauses, so
    together they cover all of them, and each holdfast meets the race on its own.
    Shard 0 then runs the whole steady phase on its holdfast. The run is dominated
    by pauses: about (N_SWEEP / 4 * 1.0 + N_STEADY * 0.3) s."""

    results = {}

    @classmethod
    def setUpClass(cls):
        runs = []
        for case, (advertise, upstream) in CASES.items():
            for method in METHODS:
                for shard in SHARDS:
                    backend = racelib.RaceBackend(timeout=T, advertise=advertise).start()
                    cfg = make_config([backend.port], upstream=upstream, log={"access": "off"})
                    try:
                        proxy = h.Proxy(cfg)
                    except Exception:
                        backend.stop()
                        for _, _, _, b, p in runs:
                            p.stop(timeout=10)
                            b.stop()
                        raise
                    runs.append((case, method, shard, backend, proxy))
        errors = []

        def run(case, method, shard, backend, proxy):
            try:
                tag = f"{case}-{shard}"
                sweep = racelib.run_race(h.LOOPBACK, proxy.port, T, (method,), N_SWEEP, 0,
                                         tag=f"{tag}-sweep", shard=(shard, len(SHARDS)))
                before = backend.snapshot()
                steady_n = N_STEADY if shard == 0 else 0
                steady = racelib.run_race(h.LOOPBACK, proxy.port, T, (method,), 0, steady_n, tag=f"{tag}-steady")
                after = backend.snapshot()
                cls.results[(case, method, shard)] = {
                    "sweep": sweep["methods"][method],
                    "steady": steady["methods"][method],
                    "steady_backend_connections": after["connections"] - before["connections"],
                }
            except Exception as e:
                errors.append((case, method, shard, repr(e)))

        threads = [threading.Thread(target=run, args=r, daemon=True) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        for case, method, shard, backend, proxy in runs:
            res = proxy.stop()
            snap = backend.snapshot()
            backend.stop()
            entry = cls.results.setdefault((case, method, shard), {})
            entry["backend"] = snap
            entry["exit"] = res
        cls.errors = errors
        print("\nkeep-alive race through holdfast (T = 1s, margin 200ms):", file=sys.stderr)
        for (case, method, shard), e in sorted(cls.results.items()):
            if "sweep" in e:
                print(f"  {case:10s} {method:4s} {shard} failures: sweep {e['sweep']['failed']}/{e['sweep']['sent']} "
                      f"{e['sweep']['phases'].get('sweep', {}).get('kinds', {})}, "
                      f"steady {e['steady']['failed']}/{e['steady']['sent']}; "
                      f"backend connections {e['backend']['connections']} "
                      f"(steady phase {e['steady_backend_connections']}), "
                      f"dropped {e['backend']['dropped']}, stats {e['exit'].stats}", file=sys.stderr)

    def result(self, case, method, shard):
        self.assertEqual(self.errors, [])
        e = self.results.get((case, method, shard), {})
        self.assertIn("sweep", e, f"race {case}/{method}/{shard} did not complete")
        return e

    def shards(self, case, method):
        return [self.result(case, method, shard) for shard in SHARDS]

    def failures(self, case, method):
        return sum(e["sweep"]["failed"] + e["steady"]["failed"] for e in self.shards(case, method))

    def assert_covered(self, case, method):
        # The shards together sent the whole sweep and the whole steady phase.
        es = self.shards(case, method)
        self.assertEqual(sum(e["sweep"]["sent"] for e in es), N_SWEEP, (case, method))
        self.assertEqual(sum(e["steady"]["sent"] for e in es), N_STEADY, (case, method))

    def test_holdfast_exits_cleanly(self):
        for key, e in self.results.items():
            res = e.get("exit")
            self.assertIsNotNone(res, key)
            self.assertIsNone(res.sanitizer_report(), f"{key}: {res.sanitizer_report()}")
            self.assertEqual(res.code, 0, f"{key}: exit {res.code}\n{res.stderr[-2000:]}")

    def test_get_never_fails(self):
        for case in CASES:
            self.assert_covered(case, "GET")
            self.assertEqual(self.failures(case, "GET"), 0,
                             f"{case}: {[(e['sweep'], e['steady']) for e in self.shards(case, 'GET')]}")

    def test_post_never_fails_when_backend_advertises(self):
        self.assert_covered("advertised", "POST")
        self.assertEqual(self.failures("advertised", "POST"), 0,
                         [(e["sweep"], e["steady"]) for e in self.shards("advertised", "POST")])

    def test_post_never_fails_when_backend_timeout_declared(self):
        self.assert_covered("declared", "POST")
        self.assertEqual(self.failures("declared", "POST"), 0,
                         [(e["sweep"], e["steady"]) for e in self.shards("declared", "POST")])

    def test_post_without_hint_fails_at_most_the_first_race(self):
        self.assert_covered("no_hint", "POST")
        print(f"\nno hint, nothing declared: {self.failures('no_hint', 'POST')} of {N_SWEEP + N_STEADY} POSTs "
              f"failed over {len(SHARDS)} holdfasts; GET failures {self.failures('no_hint', 'GET')}", file=sys.stderr)
        # Nothing tells a holdfast the timeout before the backend first closes on
        # a request; that close teaches it, and no POST fails after it.
        for shard in SHARDS:
            e = self.result("no_hint", "POST", shard)
            n = e["sweep"]["failed"] + e["steady"]["failed"]
            self.assertLessEqual(n, 1, (shard, e["sweep"]))
            self.assertEqual(e["steady"]["failed"], 0, (shard, e["steady"]))
            self.assertGreaterEqual(e["exit"].stats.get("idle_closes_learned", 0), 1, (shard, e["exit"].stats))

    def test_no_post_executed_twice(self):
        for case in CASES:
            executions = 0
            for shard in SHARDS:
                backend = self.result(case, "POST", shard)["backend"]
                self.assertEqual(backend["posts_executed_twice"], [], (case, shard))
                executions += backend["post_executions"]
            self.assertLessEqual(executions, N_SWEEP + N_STEADY, case)

    def test_steady_phase_reuses_connections(self):
        for case in CASES:
            for method in METHODS:
                e = self.result(case, method, 0)
                self.assertEqual(e["steady"]["sent"], N_STEADY, (case, method))
                used = e["steady_backend_connections"]
                self.assertLessEqual(used, N_STEADY // 6,
                                     f"{case}/{method}: {used} backend connections for {N_STEADY} requests at 0.3T")

    def test_hints_counted_when_advertised(self):
        for method in METHODS:
            for shard in SHARDS:
                stats = self.result("advertised", method, shard)["exit"].stats or {}
                self.assertGreaterEqual(stats.get("hints_learned", 0), 1, (shard, stats))


if __name__ == "__main__":
    unittest.main()
