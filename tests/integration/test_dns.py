"""Upstream servers named by DNS, with a real resolver on loopback.

dnsmasq (dnslib.Dnsmasq) answers for backend.holdfast.test; the backends listen
on 127.0.0.2, 127.0.0.3 and 127.0.0.4, one port. holdfast resolves the name
through `resolver` every `resolve_interval`: addresses that appear become
servers, those that disappear are drained, all without a failed request; when
the resolver goes away the last answer stays.
"""

import re
import time
import unittest

from dnslib import Dnsmasq
from harness import SLOW, HttpClient, KeepAliveBackend, ProxyTestCase, get, make_config, wait_until
from metrics_lib import ADMIN, admin_get
from test_reload import Load

NAME = "backend.holdfast.test"
INTERVAL = 0.5  # seconds


class DnsTest(ProxyTestCase):
    def backends(self):
        first = self.backend(name="b2", host="127.0.0.2")
        port = first.port
        return {"127.0.0.2": first,
                "127.0.0.3": self.backend(name="b3", host="127.0.0.3", port=port),
                "127.0.0.4": self.backend(name="b4", host="127.0.0.4", port=port)}, port

    def config(self, dns, port):
        cfg = make_config([], upstream={"servers": [{"address": f"{NAME}:{port}"}],
                                        "resolve_interval": f"{int(INTERVAL * 1000)}ms"},
                          client={"keepalive_requests": 1000000},  # the load's connections last
                          top=dict(ADMIN, resolver=[dns.resolver]))
        return cfg

    def served_by(self, backends):
        return {ip: len(b.requests) for ip, b in backends.items()}

    def test_addresses_that_come_and_go_move_traffic_without_failures(self):
        backends, port = self.backends()
        dns = Dnsmasq({NAME: ["127.0.0.2"]})
        self.addCleanup(dns.stop)
        dns.start()
        p = self.proxy(self.config(dns, port))
        load = Load(p.port, clients=4)
        self.assertTrue(wait_until(lambda: load.done > 100, 20 * SLOW))
        self.assertEqual(len(backends["127.0.0.3"].requests), 0)

        # An address appears: within one interval it takes traffic.
        dns.set(NAME, ["127.0.0.2", "127.0.0.3"])
        t0 = time.monotonic()
        self.assertTrue(wait_until(lambda: len(backends["127.0.0.3"].requests) > 0, 10 * SLOW),
                        p.stderr_text()[-2000:])
        took = time.monotonic() - t0
        self.assertLess(took, 2 * INTERVAL + 1.0 * SLOW, f"new address took {took:.2f}s to get traffic")
        # The line comes once every worker has switched, and through a pipe: waited for.
        line = r"reload: version 2 active \(DNS: backend\.holdfast\.test -> 127\.0\.0\.2 127\.0\.0\.3\)"
        wait_until(lambda: re.search(line, p.stderr_text()), 5 * SLOW)
        self.assertRegex(p.stderr_text(), line)

        # An address disappears: it is drained (its connections close) and
        # gets nothing more.
        dns.set(NAME, ["127.0.0.3"])
        self.assertTrue(wait_until(lambda: "version 3 active" in p.stderr_text(), 10 * SLOW), p.stderr_text()[-2000:])
        b2 = backends["127.0.0.2"]
        self.assertTrue(wait_until(lambda: len(b2.closed_conns) >= b2.accepted, 10 * SLOW),
                        f"b2's connections were not drained: accepted {b2.accepted}, closed {b2.closed_conns}")
        before = len(b2.requests)
        more = load.done + 100
        self.assertTrue(wait_until(lambda: load.done > more, 20 * SLOW),
                        f"load stalled: {load.failures}\n{p.stderr_text()[-3000:]}")
        self.assertEqual(len(b2.requests), before, "a removed address still got requests")

        # The resolver goes away: lookups fail, the last answer stays.
        dns.kill()
        failures_seen = wait_until(
            lambda: re.search(r'holdfast_dns_resolution_failures_total [1-9]', admin_get(p, "/metrics").body.decode()),
            10 * SLOW)
        self.assertTrue(failures_seen, admin_get(p, "/metrics").body.decode()[-3000:])
        b3 = backends["127.0.0.3"]
        before = len(b3.requests)
        more = load.done + 100
        self.assertTrue(wait_until(lambda: load.done > more, 20 * SLOW))
        self.assertGreater(len(b3.requests), before, "traffic stopped after the resolver went away")
        self.assertNotIn("version 4 active", p.stderr_text())

        done, failures = load.finish()
        self.assertEqual(failures, [], f"{len(failures)} failed of {done}")
        print(f"DNS: {done} requests, 0 failed; new address took {took:.2f}s (resolve_interval {INTERVAL}s)")

    def test_a_name_that_does_not_resolve_at_start_is_a_startup_error(self):
        backends, port = self.backends()
        dns = Dnsmasq({"other.holdfast.test": ["127.0.0.2"]})
        self.addCleanup(dns.stop)
        dns.start()
        from harness import Proxy, ProxyStartError
        with self.assertRaises(ProxyStartError) as e:
            Proxy(self.config(dns, port))
        self.assertIn(NAME, str(e.exception))

    def test_each_address_keeps_its_pool_across_answers(self):
        backends, port = self.backends()
        dns = Dnsmasq({NAME: ["127.0.0.2"]})
        self.addCleanup(dns.stop)
        dns.start()
        p = self.proxy(self.config(dns, port))
        c = HttpClient(p.port)
        self.addCleanup(c.close)
        for _ in range(5):
            self.assertEqual(c.request("GET", "/").status, 200)
        b2 = backends["127.0.0.2"]
        self.assertEqual(b2.accepted, 1)
        dns.set(NAME, ["127.0.0.2", "127.0.0.4"])
        self.assertTrue(wait_until(lambda: "version 2 active" in p.stderr_text(), 10 * SLOW), p.stderr_text()[-2000:])
        for _ in range(10):
            self.assertEqual(c.request("GET", "/").status, 200)
        # 127.0.0.2 is in both answers: its one pooled connection was kept.
        self.assertEqual(b2.accepted, 1, "the kept address's pooled connection was reopened")
        self.assertEqual(b2.closed_conns, [])
        self.assertGreater(len(backends["127.0.0.4"].requests), 0)


if __name__ == "__main__":
    unittest.main()
