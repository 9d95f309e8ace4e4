"""Balancing policies and the max_conns wait queue, through the real binary
(issue "Failover, health checks and balancing"): what each backend saw is
counted at the backend, not taken from holdfast's own figures."""

import os
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402
from metrics_lib import ADMIN, Metrics  # noqa: E402

QUIET = {"access": "off"}
QUEUE_METRIC = "holdfast_upstream_queue_rejections_total"


class CountingBackend(h.ScriptedBackend):
    """Answers every request 200 with body NAME, after `delay` seconds, or after the
    gate named by `?wait=NAME` opens (at most 30 s). Counts, under its lock, the
    connections open and the requests in progress (read in full, not yet answered),
    and the most of each seen at once."""

    def __init__(self, name, delay=0.0):
        self.name = name
        self.delay = delay
        self.served = 0
        self.conns = self.max_conns = 0
        self.inflight = self.max_inflight = 0
        self.targets = []
        self.bodies = {}
        self._gates = {}
        super().__init__(None)

    def gate(self, name):
        with self.lock:
            return self._gates.setdefault(name, threading.Event())

    def handle(self, conn, index):
        with self.lock:
            self.conns += 1
            self.max_conns = max(self.max_conns, self.conns)
        try:
            reader = h.Reader(conn)
            for _ in range(1_000_000):
                try:
                    req = h.read_request(reader)
                except (h.IncompleteMessage, OSError):
                    return
                if req is None:
                    return
                with self.lock:
                    self.inflight += 1
                    self.max_inflight = max(self.max_inflight, self.inflight)
                    self.targets.append(req.target)
                    self.bodies[req.target] = req.body
                query = h.parse_query(req.target)
                if query.get("wait"):
                    self.gate(query["wait"]).wait(30 * h.SLOW)
                elif self.delay:
                    time.sleep(self.delay)
                body = self.name.encode()
                with self.lock:
                    # Before the answer leaves: holdfast counts the connection
                    # active until it has read the answer.
                    self.inflight -= 1
                    self.served += 1
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                             % (len(body), body, body))
        finally:
            with self.lock:
                self.conns -= 1


def run_concurrently(n, fn, timeout=30.0):
    """Runs fn(i) for i in range(n) on n threads; returns the results (exceptions kept)."""
    results = [None] * n

    def run(i):
        try:
            results[i] = fn(i)
        except Exception as e:  # a failed client is a result to assert on
            results[i] = e
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * h.SLOW)
    return results


def active_clients(p):
    """Client connections holdfast holds open as active (reading or in an exchange)."""
    return Metrics(p).value("holdfast_client_connections", state="active")


def status_of(port, target, timeout=None):
    with h.HttpClient(port, timeout) as c:
        return c.request("GET", target).status


class BalancingTest(h.ProxyTestCase):

    def test_weighted_round_robin_1_2_5(self):
        bs = [self.backend(CountingBackend, f"b{i}") for i in range(3)]
        servers = [{"address": b.address, "weight": w} for b, w in zip(bs, (1, 2, 5))]
        p = self.proxy(make_config([], upstream={"servers": servers}, client={"keepalive_requests": 100000}, log=QUIET))
        c = self.client(p.port)
        total = 8000
        for i in range(total):
            r = c.request("GET", f"/r{i}")
            self.assertEqual(r.status, 200)
        got = [b.served for b in bs]
        self.assertEqual(sum(got), total)
        for served, weight in zip(got, (1, 2, 5)):
            share = weight / 8 * total
            self.assertLessEqual(abs(served - share), 0.03 * share, got)

    def test_least_conn_spares_the_slow_server(self):
        fast = [self.backend(CountingBackend, f"fast{i}") for i in range(2)]
        slow = self.backend(CountingBackend, "slow", delay=0.2)
        p = self.proxy(make_config([b.port for b in fast + [slow]], upstream={"balance": "least_conn"}, log=QUIET))

        def client(i):
            with h.HttpClient(p.port) as c:
                return [c.request("GET", f"/c{i}/{n}").status for n in range(120)]
        results = run_concurrently(8, client)
        self.assertTrue(all(r == [200] * 120 for r in results), results)
        # Round robin would give each a third; the slow one keeps its
        # connections busy longer, so it is picked far less often.
        self.assertLess(slow.served * 3, min(b.served for b in fast), [b.served for b in fast + [slow]])

    def test_hash_on_header_sticks_and_removing_one_of_four_moves_about_a_quarter(self):
        bs = [self.backend(CountingBackend, f"b{i}") for i in range(4)]
        upstream = {"balance": "hash", "hash_key": "header:X-User"}
        keys = [f"user-{i}" for i in range(400)]

        def placement(ports):
            with h.Proxy(make_config(ports, upstream=upstream, log=QUIET)) as p, h.HttpClient(p.port) as c:
                where = {}
                for k in keys:
                    seen = {c.request("GET", "/", headers=[("X-User", k)]).headers.get("X-Backend") for _ in range(2)}
                    self.assertEqual(len(seen), 1, f"key {k} went to {seen}")
                    where[k] = seen.pop()
                return where
        before = placement([b.port for b in bs])
        self.assertEqual(len(set(before.values())), 4, "every server holds some keys")
        after = placement([b.port for b in bs[:3]])
        moved = [k for k in keys if before[k] != after[k]]
        # Only keys of the removed server move, about a quarter of them.
        self.assertLessEqual(len(moved), len(keys) // 3, len(moved))
        self.assertTrue(all(before[k] == "b3" for k in moved), [(k, before[k]) for k in moved if before[k] != "b3"])


class MaxConnsQueueTest(h.ProxyTestCase):

    def queue_config(self, b, size, timeout, workers=1):
        return make_config([b.port], upstream={"max_conns": 2, "queue": {"size": size, "timeout": timeout}},
                           log=QUIET, top=dict(ADMIN, workers=workers))

    def check_capped(self, workers):
        b = self.backend(CountingBackend, "b", delay=0.15)
        p = self.proxy(self.queue_config(b, 10, "20s", workers))
        results = run_concurrently(10, lambda i: status_of(p.port, f"/slow{i}"))
        self.assertEqual(results, [200] * 10)
        self.assertEqual(b.served, 10)
        # Never more than two at once, and the limit was reached (not vacuous).
        self.assertEqual(b.max_inflight, 2)
        return b

    def test_ten_slow_requests_never_more_than_two_connections(self):
        b = self.check_capped(workers=1)
        # One worker pools its two connections: nothing else was ever opened.
        self.assertLessEqual(b.max_conns, 2)

    def test_cap_holds_over_two_workers(self):
        self.check_capped(workers=2)

    def test_overflow_503_at_once_and_queued_requests_succeed(self):
        b = self.backend(CountingBackend, "b")
        p = self.proxy(self.queue_config(b, 3, "20s"))
        gate = b.gate("g")
        done = []
        lock = threading.Lock()

        def client(i):
            t0 = time.monotonic()
            s = status_of(p.port, "/?wait=g")
            with lock:
                done.append((s, time.monotonic() - t0))
            return s
        runner = threading.Thread(target=lambda: done.append(("all", run_concurrently(10, client))), daemon=True)
        runner.start()
        # Two at the backend, three waiting, five refused at once.
        self.assertTrue(h.wait_until(lambda: b.inflight == 2 and len(done) >= 5, 10 * h.SLOW), (b.inflight, done))
        time.sleep(0.2)
        with lock:
            early = list(done)
        self.assertEqual([s for s, _ in early], [503] * 5, early)
        gate.set()
        runner.join(30 * h.SLOW)
        statuses = sorted(done[-1][1])
        self.assertEqual(statuses, [200] * 5 + [503] * 5)
        self.assertEqual(b.served, 5)
        self.assertLessEqual(b.max_inflight, 2)
        self.assertEqual(Metrics(p).value(QUEUE_METRIC, reason="overflow"), 5)

    def hold(self, b, p, n=2):
        """Starts n requests that the backend holds until its gate `g` opens, with
        both slots taken; returns the function that waits for their statuses."""
        held = run_concurrently_async(n, lambda i: status_of(p.port, "/?wait=g"))
        self.assertTrue(h.wait_until(lambda: b.inflight == 2, 10 * h.SLOW), b.inflight)
        return held

    def test_queue_timeout_503_and_the_next_request_is_served(self):
        b = self.backend(CountingBackend, "b")
        p = self.proxy(self.queue_config(b, 5, "300ms"))
        gate = b.gate("g")
        held = self.hold(b, p)
        t0 = time.monotonic()
        waited = run_concurrently(3, lambda i: status_of(p.port, f"/late{i}"))
        elapsed = time.monotonic() - t0
        self.assertEqual(waited, [503] * 3)
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertEqual(Metrics(p).value(QUEUE_METRIC, reason="timeout"), 3)
        gate.set()
        self.assertEqual(held(), [200, 200])
        # The slots came back: a new request is served at once.
        self.assertEqual(status_of(p.port, "/after"), 200)
        self.assertNotIn("/late0", b.targets)

    def test_client_gone_while_queued_never_reaches_the_backend(self):
        b = self.backend(CountingBackend, "b")
        p = self.proxy(self.queue_config(b, 5, "20s"))
        gate = b.gate("g")
        held = self.hold(b, p)
        gone = h.connect(p.port)
        gone.sendall(h.build_request("GET", "/gone"))
        self.assertTrue(h.wait_until(lambda: active_clients(p) == 3, 5 * h.SLOW), active_clients(p))
        time.sleep(0.2)  # its head read and queued
        # A reset, not a half-close (which still gets its answer).
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()
        # Only once holdfast has let go of it may a slot free up.
        self.assertTrue(h.wait_until(lambda: active_clients(p) == 2, 5 * h.SLOW), active_clients(p))
        gate.set()
        self.assertEqual(held(), [200, 200])
        self.assertEqual(status_of(p.port, "/after"), 200)
        self.assertNotIn("/gone", b.targets)

    def test_post_body_sent_while_queued_arrives_whole(self):
        b = self.backend(CountingBackend, "b")
        p = self.proxy(self.queue_config(b, 5, "20s"))
        gate = b.gate("g")
        held = self.hold(b, p)
        body = h.pattern_block(7, 512 * 1024)
        c = self.client(p.port)
        head = h.build_request("POST", "/upload", headers=[("Content-Length", str(len(body)))])
        # Part with the head, the rest while it waits: more than the socket
        # buffers hold, so holdfast must stop reading and start again.
        c.send(head + body[:1000])
        time.sleep(0.2)
        sender = threading.Thread(target=lambda: c.send(body[1000:]), daemon=True)
        sender.start()
        time.sleep(0.3)
        self.assertNotIn("/upload", b.targets)
        gate.set()
        r = c.read_response()
        sender.join(10 * h.SLOW)
        self.assertEqual(r.status, 200)
        self.assertEqual(held(), [200, 200])
        self.assertEqual(b.bodies["/upload"], body)

    def test_drain_serves_the_queued_request(self):
        b = self.backend(CountingBackend, "b")
        p = self.proxy(self.queue_config(b, 5, "20s"))
        gate = b.gate("g")
        held = self.hold(b, p, 3)
        # The third is in holdfast (queued) before the drain begins.
        self.assertTrue(h.wait_until(lambda: active_clients(p) == 3, 5 * h.SLOW), active_clients(p))
        time.sleep(0.2)
        p.send_signal(15)
        time.sleep(0.2)
        gate.set()
        self.assertEqual(held(), [200, 200, 200])
        self.assertEqual(p.stop().code, 0)


def run_concurrently_async(n, fn):
    """Starts run_concurrently(n, fn) on a thread; returns a function that waits for its results."""
    box = []
    t = threading.Thread(target=lambda: box.append(run_concurrently(n, fn)), daemon=True)
    t.start()

    def wait():
        t.join(30 * h.SLOW)
        return box[0] if box else None
    return wait


if __name__ == "__main__":
    unittest.main()
