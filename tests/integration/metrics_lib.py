"""Helpers for the admin listener tests: config, reading /metrics and /status.

Everything talks to 127.0.0.1 only and every wait is bounded.
"""

import json
import re
import time

import harness as h

ADMIN = {"admin": {"listen": f"{h.LOOPBACK}:0"}}
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def admin_get(proxy, path, method="GET"):
    """One request to the admin listener; returns the harness Response."""
    with h.HttpClient(proxy.admin_port) as c:
        return c.request(method, path, headers=[("Connection", "close")])


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels.items())): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"unparsable sample line: {line!r}"
        labels = frozenset(LABEL_RE.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


class Metrics:
    """One scrape of /metrics, queried by name and labels."""

    def __init__(self, proxy):
        r = admin_get(proxy, "/metrics")
        assert r.status == 200, r
        self.text = r.body.decode()
        self.samples = parse_metrics(self.text)

    def value(self, name, **labels):
        """The sum of every sample of `name` whose labels include `labels` (None if none)."""
        want = set(labels.items())
        found = [v for (n, ls), v in self.samples.items() if n == name and want <= set(ls)]
        return sum(found) if found else None


def status(proxy):
    r = admin_get(proxy, "/status")
    assert r.status == 200, r
    return json.loads(r.body)


def wait_metric(proxy, name, expected, timeout=10.0, **labels):
    """Scrapes until `name{labels}` equals `expected`; returns the last value."""
    deadline = time.monotonic() + timeout * h.SLOW
    value = None
    while time.monotonic() < deadline:
        value = Metrics(proxy).value(name, **labels)
        if value == expected:
            return value
        time.sleep(0.05)
    return value
