"""Reload without losing a request or a connection.

SIGHUP (and, with reload_on_change, a change of the config file or a
ConfigMap-style symlink swap) makes a new configuration version; exchanges in
flight finish on theirs, no client connection is closed, and the pools of
servers present in both versions are kept (counted at the backends).
"""

import os
import random
import re
import signal
import socket
import threading
import time
import unittest

from metrics_lib import ADMIN, admin_get
from harness import (LOOPBACK, SLOW, HttpClient, closed_port, KeepAliveBackend, ProxyTestCase, Proxy, get, make_config,
                     to_yaml, wait_until)


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def versions_active(proxy):
    return [int(m) for m in re.findall(r"reload: version (\d+) active", proxy.stderr_text())]


def reload_and_wait(test, proxy, version, timeout=10.0):
    proxy.send_signal(signal.SIGHUP)
    ok = wait_until(lambda: version in versions_active(proxy) or "reload failed" in proxy.stderr_text(), timeout * SLOW)
    test.assertTrue(ok, f"no reload line for version {version}:\n{proxy.stderr_text()[-2000:]}")
    test.assertIn(version, versions_active(proxy), proxy.stderr_text()[-2000:])


class Load:
    """Keep-alive clients sending GETs and POSTs with bodies until stopped;
    every failure (error, non-200, a connection the proxy closed) is kept."""

    def __init__(self, port, clients=6, seconds_max=120):
        self.port = port
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.done = 0
        self.failures = []
        self.deadline = time.monotonic() + seconds_max
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(clients)]
        for t in self.threads:
            t.start()

    def run(self, i):
        rnd = random.Random(i)
        try:
            c = HttpClient(self.port, timeout=20)
        except OSError as e:
            with self.lock:
                self.failures.append(f"client {i}: connect: {e}")
            return
        n = 0
        # Bounded: stops when told, at the deadline, or after 200k requests.
        while not self.stop_flag.is_set() and time.monotonic() < self.deadline and n < 200_000:
            n += 1
            try:
                if rnd.random() < 0.4:
                    body = os.urandom(rnd.choice([0, 10, 1000, 20_000]))
                    r = c.request("POST", f"/a/post?n={n}", body=body)
                else:
                    r = c.request("GET", f"/a/get?n={n}")
                if r is None:
                    raise ConnectionError("closed by the proxy (EOF instead of a response)")
                if r.status != 200:
                    raise ConnectionError(f"status {r.status}: {r.body[:200]!r}")
                if r.headers.get("connection", "").lower() == "close":
                    raise ConnectionError("the proxy said Connection: close")
            except Exception as e:  # noqa: BLE001 - every failure is the test's finding
                with self.lock:
                    self.failures.append(f"client {i} request {n}: {type(e).__name__}: {e}")
                c.close()
                return
            with self.lock:
                self.done += 1
        c.close()

    def finish(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30 * SLOW)
        return self.done, self.failures


class ReloadTest(ProxyTestCase):
    def configs(self, a, b, c):
        """Two versions that differ in servers and routes; b is in both."""
        # keepalive_requests above what the load sends on one connection.
        one = make_config([a.port, b.port], client={"keepalive_requests": 1000000})
        two = make_config([b.port, c.port], client={"keepalive_requests": 1000000}, top={
            "upstreams": {"side": {"servers": [{"address": c.address}]}},
            "routes": [{"match": {"path_prefix": "/side"}, "upstream": "side"},
                       {"match": {"path_prefix": "/"}, "upstream": "app"}],
        })
        return to_yaml(one) + "\n", to_yaml(two) + "\n"

    def test_twenty_reloads_under_load_lose_nothing(self):
        a, b, c = self.backend(name="a"), self.backend(name="b"), self.backend(name="c")
        one, two = self.configs(a, b, c)
        p = self.proxy(one)
        load = Load(p.port)
        # Warm up so that b's pool holds what the load needs.
        wait_until(lambda: load.done > 300, 20 * SLOW)
        b_accepted = b.accepted
        b_closed = len(b.closed_conns)
        idle = self.client(p.port)  # an idle keep-alive client across every reload
        self.assertEqual(idle.request("GET", "/idle").status, 200)
        for i in range(20):
            write_atomically(p.config_path, two if i % 2 == 0 else one)
            reload_and_wait(self, p, i + 2)
            before = load.done
            wait_until(lambda: load.done >= before + 30, 10 * SLOW)
        r = idle.request("GET", "/idle")
        self.assertEqual(r.status, 200, "an idle client connection did not survive the reloads")
        done, failures = load.finish()
        self.assertEqual(failures, [], f"{len(failures)} failed of {done}")
        self.assertGreater(done, 600)
        # b is in both versions: none of its pooled connections was closed by
        # a reload (a close would show at the backend as an ended connection).
        self.assertEqual(len(b.closed_conns) - b_closed, 0, f"b's connections closed: {b.closed_conns}")
        print(f"reloads: 20, requests: {done}, failed: 0, b accepted {b_accepted} before and {b.accepted} after")
        # The second version's route went to c.
        write_atomically(p.config_path, two)
        reload_and_wait(self, p, 22)
        r = get(p.port, "/side/x")
        self.assertIn(b"c conn=", r.body)
        self.assertNotIn("reload failed", p.stderr_text())

    def test_invalid_config_changes_nothing(self):
        a = self.backend(name="a")
        p = self.proxy(make_config([a.port], top=ADMIN))
        client = self.client(p.port)
        self.assertEqual(client.request("GET", "/").status, 200)
        cfg = make_config([a.port], top=ADMIN)
        busy = dict(cfg)
        busy["listen"] = cfg["listen"] + [a.address]  # a's port is taken: the bind fails
        more_workers = dict(cfg)
        more_workers["workers"] = 2
        cases = [
            ("upstreams:\n  app:\n    servers: [\"127.0.0.1:0\"]\n", r"holdfast\.yaml:3: upstreams\.app\.servers\[0\]"),
            (to_yaml(more_workers) + "\n", r"workers: 1 -> 2 needs a restart"),
            (to_yaml(busy) + "\n", r"reload failed \(SIGHUP\): .*listen: "),
        ]
        failed = 0
        for text, pattern in cases:
            write_atomically(p.config_path, text)
            p.send_signal(signal.SIGHUP)
            failed += 1
            self.assertTrue(wait_until(lambda: len(re.findall("still running version", p.stderr_text())) >= failed,
                                       10 * SLOW),
                            p.stderr_text()[-2000:])
            self.assertRegex(p.stderr_text(), pattern)
            self.assertEqual(client.request("GET", "/").status, 200, "stopped serving after a failed reload")
        self.assertEqual(versions_active(p), [])
        metrics = admin_get(p, "/metrics").body.decode()
        self.assertIn('holdfast_config_reloads_total{result="failed"} 3', metrics)
        self.assertIn("holdfast_config_version 1", metrics)

    def test_removing_health_checks_brings_their_servers_back(self):
        a, b = self.backend(name="a"), self.backend(name="b")
        checked = make_config([a.port, b.port], upstream={"health_check": {
            "path": "/status/500", "interval": "100ms", "timeout": "100ms", "fall": 1, "rise": 1}})
        p = self.proxy(checked)
        self.assertTrue(wait_until(lambda: get(p.port, "/").status == 503, 10 * SLOW), "checks never took them out")
        plain = make_config([a.port, b.port])
        write_atomically(p.config_path, to_yaml(plain) + "\n")
        reload_and_wait(self, p, 2)
        self.assertEqual(get(p.port, "/").status, 200, "servers stayed down after their checks were removed")

    def test_an_idle_watch_stays_idle(self):
        a = self.backend(name="a")
        cfg = make_config([a.port], top={"reload_on_change": True})
        p = self.proxy(cfg)
        cfg["drain_timeout"] = "6s"
        write_atomically(p.config_path, to_yaml(cfg) + "\n")
        self.assertTrue(wait_until(lambda: 2 in versions_active(p), 5 * SLOW), p.stderr_text()[-2000:])

        def cpu_ticks():
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        before = cpu_ticks()
        time.sleep(1.0)
        spent = (cpu_ticks() - before) / os.sysconf("SC_CLK_TCK")
        # Watches set again after a change must not wake the loop by themselves.
        self.assertLess(spent, 0.3, f"holdfast used {spent:.2f}s of CPU in 1s with nothing to do")
        self.assertEqual(versions_active(p), [2])

    def test_listeners_added_and_removed(self):
        a = self.backend(name="a")
        cfg = make_config([a.port])
        p = self.proxy(cfg)
        extra = closed_port()  # free now, listened on after the reload
        old = self.client(p.port)
        self.assertEqual(old.request("GET", "/").status, 200)
        cfg2 = dict(cfg)
        cfg2["listen"] = cfg["listen"] + [f"{LOOPBACK}:{extra}"]
        write_atomically(p.config_path, to_yaml(cfg2) + "\n")
        reload_and_wait(self, p, 2)
        on_new = self.client(extra)
        self.assertEqual(on_new.request("GET", "/").status, 200)
        self.assertEqual(old.request("GET", "/").status, 200)
        write_atomically(p.config_path, to_yaml(cfg) + "\n")
        reload_and_wait(self, p, 3)
        # The removed listener no longer accepts; what it accepted stays open.
        with self.assertRaises(OSError):
            socket.create_connection((LOOPBACK, extra), timeout=2).close()
        self.assertEqual(on_new.request("GET", "/").status, 200)
        self.assertEqual(old.request("GET", "/").status, 200)

    def test_configmap_symlink_swap_reloads_within_a_second(self):
        a, b = self.backend(name="a"), self.backend(name="b")
        root = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"holdfast-cm-{os.getpid()}-{random.randrange(1 << 30)}")
        os.makedirs(os.path.join(root, "..v1"))
        self.addCleanup(lambda: os.system(f"rm -rf '{root}'"))
        first = make_config([a.port], top={"reload_on_change": True})
        with open(os.path.join(root, "..v1", "holdfast.yaml"), "w") as f:
            f.write(to_yaml(first) + "\n")
        os.symlink("..v1", os.path.join(root, "..data"))
        os.symlink("..data/holdfast.yaml", os.path.join(root, "holdfast.yaml"))
        p = Proxy(first, start=False)
        p.config_path = os.path.join(root, "holdfast.yaml")
        p.start()
        self.addCleanup(p.__exit__, None, None, None)
        self.assertIn(b"a conn=", get(p.port, "/").body)
        # What the kubelet does: a new directory, a new symlink, renamed over ..data.
        os.makedirs(os.path.join(root, "..v2"))
        second = make_config([b.port], top={"reload_on_change": True})
        with open(os.path.join(root, "..v2", "holdfast.yaml"), "w") as f:
            f.write(to_yaml(second) + "\n")
        os.symlink("..v2", os.path.join(root, "..data_tmp"))
        t0 = time.monotonic()
        os.rename(os.path.join(root, "..data_tmp"), os.path.join(root, "..data"))
        self.assertTrue(wait_until(lambda: 2 in versions_active(p), 5 * SLOW), p.stderr_text()[-2000:])
        took = time.monotonic() - t0
        self.assertLess(took, 1.0 * SLOW, f"reload took {took:.2f}s after the swap")
        self.assertIn(b"b conn=", get(p.port, "/").body)
        # A touch that changes nothing is not a reload.
        os.utime(os.path.join(root, "..v2", "holdfast.yaml"))
        time.sleep(0.5)
        self.assertEqual(versions_active(p), [2])


if __name__ == "__main__":
    unittest.main()
