"""Failover and passive health: a dead backend costs no request that could
have been saved (issue "Failover, health checks and balancing")."""

import os
import re
import shutil
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402
from metrics_lib import ADMIN, Metrics, status  # noqa: E402

sys.path.insert(0, os.path.join(h.REPO, "scripts"))
import failoverlib  # noqa: E402

C = "holdfast_"


def srv(port):
    return {"upstream": "app", "server": f"127.0.0.1:{port}"}


class FailoverTest(h.ProxyTestCase):

    def test_refused_server_costs_no_request_any_method(self):
        b = self.backend(name="b1")
        dead = h.closed_port()
        p = self.proxy(make_config([dead, b.port], upstream={"max_fails": 0}, top=ADMIN))
        c = self.client(p.port)
        for i in range(10):
            r = c.request("POST" if i % 2 else "GET", f"/r{i}", body=b"payload" if i % 2 else None)
            self.assertEqual(r.status, 200, r.body)
        self.assertEqual(len(b.requests), 10)
        self.assertEqual([q.body for q in b.requests if q.method == "POST"], [b"payload"] * 5)
        m = Metrics(p)
        # Round robin sends every other request to the dead server first; each moves on.
        self.assertEqual(m.value(C + "upstream_failovers_total", **srv(dead)), 5)
        self.assertEqual(m.value(C + "upstream_connect_failures_total", reason="refused", **srv(dead)), 5)
        self.assertEqual(m.value(C + "responses_total", code="5xx", **srv(b.port)), 0)
        self.assertEqual(m.value(C + "upstream_ejections_total", **srv(dead)), 0)

    def test_race_retry_stays_with_its_server(self):
        # The keep-alive race on server A says nothing against A: the retry goes
        # on a fresh connection to A, not to whichever server comes next.
        seen_a = []
        a = self.scripted(h.race_handler(seen_a))
        b = self.backend(name="b")
        p = self.proxy(make_config([a.port, b.port]))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/1").body, b"conn=1")      # A, pooled
        self.assertEqual(c.request("GET", "/2").status, 200)           # B
        r = c.request("GET", "/3")                                     # A reused: race, retried
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"conn=2", "the retry left server A")
        self.assertEqual([(i, q.target) for i, q in seen_a], [(1, "/1"), (1, "/3"), (2, "/3")])
        self.assertEqual([q.target for q in b.requests], ["/2"])

    def test_passive_ejection_window_and_doubling(self):
        b = self.backend(name="b1")
        dead = h.closed_port()
        fail_timeout = 1.0 * h.SLOW
        p = self.proxy(make_config([dead, b.port], upstream={
            "max_fails": 2, "fail_timeout": f"{int(fail_timeout * 1000)}ms"}, top=ADMIN))
        c = self.client(p.port)
        refused = lambda: Metrics(p).value(C + "upstream_connect_failures_total", reason="refused", **srv(dead))  # noqa
        # Taken before the ejection (at /a2), so the window is timed from a
        # point no later than its start, however slowly the requests ran.
        t_before = time.monotonic()
        for i in range(4):        # rr: dead, b1, dead (2nd failure: ejected), b1
            self.assertEqual(c.request("GET", f"/a{i}").status, 200)
        self.assertEqual(refused(), 2)
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t_before < fail_timeout * 0.6 and n < 200:
            self.assertEqual(c.request("GET", f"/b{n}").status, 200)
            n += 1
            time.sleep(0.005)
        self.assertGreater(n, 0)
        self.assertEqual(refused(), 2, "an ejected server got a request before fail_timeout passed")
        # Past the window however fast the loop above ran (it may stop at 200 requests).
        time.sleep(max(0.0, t0 + fail_timeout * 1.2 - time.monotonic()))
        for i in range(4):        # probation: the first request to it fails once more and ejects it again
            self.assertEqual(c.request("GET", f"/c{i}").status, 200)
        self.assertEqual(refused(), 3)
        self.assertEqual(Metrics(p).value(C + "upstream_ejections_total", **srv(dead)), 2)
        self.assertEqual(Metrics(p).value(C + "upstream_server_up", **srv(dead)), 0)
        self.assertEqual(Metrics(p).value(C + "upstream_server_up", **srv(b.port)), 1)
        self.assertEqual(status(p)["upstreams"][0]["servers"][0]["state"], "down")
        pattern = r"server 127\.0\.0\.1:%d ejected for (\S+)" % dead
        # The log comes through a pipe read by another thread: wait for the lines.
        h.wait_until(lambda: len(re.findall(pattern, p.stderr_text())) >= 2, 5 * h.SLOW)
        lines = re.findall(pattern, p.stderr_text())
        self.assertEqual(len(lines), 2, "one log line per ejection, not one per request")
        self.assertEqual(lines, [f"{int(fail_timeout)}s", f"{int(2 * fail_timeout)}s"] if fail_timeout == 1.0
                         else lines, "the second ejection lasts twice as long")

    def test_all_servers_down_503_with_retry_after_at_once(self):
        d1, d2 = h.closed_port(), h.closed_port()
        p = self.proxy(make_config([d1, d2], upstream={"max_fails": 1, "fail_timeout": "30s"}, top=ADMIN))
        c = self.client(p.port)
        r = c.request("GET", "/first")
        self.assertEqual(r.status, 502)   # both tried, both refused: the last cause is told
        t0 = time.monotonic()
        r = c.request("POST", "/second", body=b"x")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.headers.get("Retry-After"), "1")
        self.assertLess(time.monotonic() - t0, 1.0 * h.SLOW)
        # The log is read by a pipe pump thread: wait for the line rather than race it.
        h.wait_for(lambda: "all 2 server(s) of upstream 'app' are out" in p.stderr_text(), 5 * h.SLOW,
                   "the 503 was not logged with its reason")
        self.assertEqual(Metrics(p).value(C + "upstream_unavailable_total"), 1)

    def test_kill_restart_under_load_loses_nothing_that_never_reached_it(self):
        work = tempfile.mkdtemp(prefix="holdfast-failover-")
        self.addCleanup(shutil.rmtree, work, True)
        steady = failoverlib.Backend("steady", failoverlib.free_port(), work).start()
        victim = failoverlib.Backend("victim", failoverlib.free_port(), work).start()
        self.addCleanup(steady.stop)
        self.addCleanup(victim.stop)
        p = self.proxy(make_config([steady.port, victim.port], upstream={"fail_timeout": "1s"},
                                   log={"access": "off"}, top=ADMIN))
        res = failoverlib.run_load(p.port, victim, duration=12.0, kill_every=3.0, down_for=0.5, clients=4)
        print(f"\nkill/restart: {res['requests']} requests ({res['posts']} POST), {res['kills']} kills, "
              f"{res['failures']} failures, {res['in_flight_failures']} in flight on the killed backend "
              f"({res['in_flight_logged']} read by it), "
              f"{res['lost']} lost", file=sys.stderr)
        self.assertGreaterEqual(res["kills"], 3)
        self.assertGreater(res["requests"], 500)
        self.assertEqual(res["lost"], 0, f"requests that never reached the killed backend failed: {res['lost_examples']}")


class ActiveHealthCheckTest(h.ProxyTestCase):

    def test_server_answering_500_is_out_within_fall_and_back_within_rise(self):
        # Counted, not timed: when the backend is asked its (fall+1)-th
        # failing check, holdfast has read the fall-th answer and must
        # already have the server out; likewise in with the (rise+1)-th pass.
        sick = {"on": False}
        seen = {"fails": 0, "passes": 0, "up_at_3rd_fail": None, "up_at_3rd_pass": None}

        def hook(req, data, close):
            if not req.target.startswith("/healthz") or sick["on"] is None:
                return data, close
            if sick["on"]:
                seen["fails"] += 1
                if seen["fails"] == 3:
                    seen["up_at_3rd_fail"] = up()
                return b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", close
            if seen["fails"] >= 3:  # recovering
                seen["passes"] += 1
                if seen["passes"] == 3:
                    seen["up_at_3rd_pass"] = up()
            return data, close

        b1 = self.backend(name="b1", response_hook=hook)
        b2 = self.backend(name="b2")
        interval = 0.2 * h.SLOW
        p = self.proxy(make_config([b1.port, b2.port], upstream={"health_check": {
            "path": "/healthz", "interval": f"{int(interval * 1000)}ms", "rise": 2, "fall": 2}}, top=ADMIN))
        up = lambda: Metrics(p).value(C + "upstream_server_up", **srv(b1.port))  # noqa: E731
        self.assertTrue(h.wait_until(lambda: any(r.target == "/healthz" for r in b1.requests), 5 * h.SLOW))
        self.assertEqual(up(), 1)
        sick["on"] = True
        self.assertTrue(h.wait_until(lambda: seen["up_at_3rd_fail"] is not None, 20 * interval))
        self.assertEqual(seen["up_at_3rd_fail"], 0, "still in after fall (2) failed checks")
        self.assertEqual(up(), 0)
        before = sum(1 for r in b1.requests if not r.target.startswith("/healthz"))
        for i in range(10):
            r = h.get(p.port, f"/x{i}")
            self.assertEqual(r.headers.get("X-Backend"), "b2")
        self.assertEqual(sum(1 for r in b1.requests if not r.target.startswith("/healthz")), before)
        sick["on"] = False
        self.assertTrue(h.wait_until(lambda: seen["up_at_3rd_pass"] is not None, 20 * interval))
        self.assertEqual(seen["up_at_3rd_pass"], 1, "still out after rise (2) passed checks")
        sick["on"] = None  # the hook stops counting
        h.wait_until(lambda: f"server 127.0.0.1:{b1.port} is up" in p.stderr_text(), 5 * h.SLOW)
        log = p.stderr_text()
        self.assertEqual(log.count(f"server 127.0.0.1:{b1.port} is down"), 1, log)
        self.assertEqual(log.count(f"server 127.0.0.1:{b1.port} is up"), 1, log)
        # Checks use their own connections: the pool's figures do not count them.
        m = Metrics(p)
        self.assertGreater(m.value(C + "upstream_health_check_failures_total", **srv(b1.port)), 1)

    def test_start_down_gets_no_traffic_until_checks_pass(self):
        b1, b2 = self.backend(name="b1"), self.backend(name="b2")
        p = self.proxy(make_config([b1.port, b2.port], upstream={"health_check": {
            "path": "/", "interval": "100ms", "rise": 1, "fall": 1, "start": "down"}}, top=ADMIN))
        # Each server comes up on its own first passing check: both are waited for.
        self.assertTrue(h.wait_until(lambda: all(Metrics(p).value(C + "upstream_server_up", **srv(b.port)) == 1
                                                 for b in (b1, b2)), 5 * h.SLOW))
        names = {h.get(p.port, f"/y{i}").headers.get("X-Backend") for i in range(6)}
        self.assertEqual(names, {"b1", "b2"})


if __name__ == "__main__":
    unittest.main()
