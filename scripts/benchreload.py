"""The live-reload row of scripts/bench: each proxy is reloaded under load,
alternating between two configs that differ in servers and routes
(scripts/reloadlib.py has the configs and the load).

  holdfast   config file swapped, SIGHUP; each reload waits for holdfast's
             log line `reload: version N active` (or `reload failed:`)
  nginx      config file swapped, SIGHUP to the master (what `nginx -s
             reload` sends); each reload waits for a new worker process;
             the old workers finish their requests and exit
  HAProxy    master-worker mode (`-W`), config file swapped, SIGUSR2 to the
             master; it starts a new worker and the old one stops (`-sf`);
             each reload waits for the master's `Loading success`

Reloads are SETTLE_S apart. The backends are three nginx instances of the
row's own that answer 200 to everything and count accepted connections
(stub_status), so the connections a proxy opens to backend 2, which is in
both configs, show whether it keeps its upstream connections across reloads.
"""

import os
import signal
import time

import reloadlib

CLIENTS = 20
SETTLE_S = 1.0
CONFIRM_S = 10.0
WARMUP_S = 1.5


def _write(path, text):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)      # a reload never reads a half-written file


class Target:
    """One proxy under reload: its config files, how to signal it and how to see it reloaded."""

    def __init__(self, bench, b, name, d, backends):
        self.b, self.name, self.d, self.backends = b, name, d, backends
        self.port = b.free_port()
        os.makedirs(d, exist_ok=True)
        if name == "nginx":
            head, temps = b.nginx_common(d, bench.args.workers, 1024)
            self.render = lambda v: reloadlib.nginx_conf(head, temps, self.port, backends, v)
            self.path = os.path.join(d, "nginx.conf")
            _write(self.path, self.render("A"))
            self.proc = b.Proc("reload-nginx", ["nginx", "-p", d, "-e", os.path.join(d, "error.log"),
                                                "-c", self.path], d)
        elif name == "haproxy":
            self.render = lambda v: reloadlib.haproxy_conf(self.port, backends, v)
            self.path = os.path.join(d, "haproxy.cfg")
            _write(self.path, self.render("A"))
            self.proc = b.Proc("reload-haproxy", ["haproxy", "-W", "-db", "-f", self.path], d)
        else:
            self.render = lambda v: reloadlib.holdfast_conf(self.port, backends, v)
            self.path = os.path.join(d, "holdfast.yaml")
            _write(self.path, self.render("A"))
            self.proc = b.Proc("reload-holdfast", [bench.holdfast_bin, "-c", self.path], d)

    def log_text(self):
        text = self.proc.stderr_text()
        if self.name == "nginx":
            try:
                with open(os.path.join(self.d, "error.log"), errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def outcomes(self):
        """(reloads confirmed, reloads failed) so far, from the proxy's own log; None where it says nothing."""
        text = self.log_text()
        if self.name == "holdfast":
            # "reload: version N active", and "reload failed: ..." or "reload failed (cause): ..."
            # (one failure may log several lines: only whether the count grew matters).
            return text.count("reload: version"), text.count("reload failed")
        if self.name == "haproxy":
            return text.count("Loading success"), text.count("Loading failure")
        return None, text.count("[emerg]")

    def new_process(self, before, limit_s):
        """Whether a process not in `before` appeared in the proxy's tree within `limit_s`
        (nginx's new workers: it logs a reload only at notice level)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and self.proc.alive():
            if set(self.b.tree_pids(self.proc.pid)) - before:
                return True
            time.sleep(0.02)
        return False

    def reload(self, variant):
        """Swaps the config, signals, and waits for the proxy to say how it went (bounded);
        returns "ok", "failed" or "unconfirmed"."""
        ok0, bad0 = self.outcomes()
        before = set(self.b.tree_pids(self.proc.pid))
        _write(self.path, self.render(variant))
        os.kill(self.proc.pid, signal.SIGUSR2 if self.name == "haproxy" else signal.SIGHUP)
        if ok0 is None:
            started = self.new_process(before, CONFIRM_S)
            return "failed" if self.outcomes()[1] > bad0 else ("ok" if started else "unconfirmed")
        deadline = time.monotonic() + CONFIRM_S
        while time.monotonic() < deadline and self.proc.alive():
            ok, bad = self.outcomes()
            if ok > ok0:
                return "ok"
            if bad > bad0:
                return "failed"
            time.sleep(0.02)
        return "unconfirmed"


def _start_backends(bench, b):
    backends, procs = [], []
    for i in range(3):
        d = os.path.join(bench.workdir, "reload-backend%d" % (i + 1))
        os.makedirs(d, exist_ok=True)
        port = b.free_port()
        head, temps = b.nginx_common(d, 1, 1024)
        p = b.start_nginx("reload-backend%d" % (i + 1), d,
                          reloadlib.backend_nginx_conf(head, temps, port, "backend%d" % (i + 1)))
        procs.append(p)
        if not b.wait_listening(port, p):
            raise RuntimeError("reload backend did not start: %s" % p.stderr_text()[-300:])
        backends.append(port)
    return backends, procs


def one_proxy(bench, b, name, backends, reloads):
    row = {"proxy": name, "reloads_asked": reloads}
    t = Target(bench, b, name, os.path.join(bench.workdir, "reload-" + name), backends)
    load = None
    verdicts = {"ok": 0, "failed": 0, "unconfirmed": 0}
    try:
        if not b.wait_listening(t.port, t.proc):
            raise RuntimeError("did not start: %s" % t.log_text()[-300:].strip())
        for path in ("/a", "/b"):
            status, _ = b.http_get(t.port, path)
            if status != 200:
                raise RuntimeError("GET %s answered %d before the first reload" % (path, status))
        b.log("reload: %s, %d reloads %.0f s apart, %d clients" % (name, reloads, SETTLE_S, CLIENTS))
        limit = WARMUP_S + reloads * (SETTLE_S + CONFIRM_S) + 10
        load = reloadlib.Load(t.port, CLIENTS, limit).start()
        time.sleep(WARMUP_S)
        acc0 = b.stub_accepts(backends[1])
        t0 = time.monotonic()
        for i in range(reloads):
            started = time.monotonic()
            verdicts[t.reload("B" if i % 2 == 0 else "A")] += 1
            if not t.proc.alive():
                code = t.proc.popen.returncode
                raise RuntimeError("exited after reload %d (%s): %s" % (
                    i + 1, "killed by SIGHUP: no live reload in this build" if code == -signal.SIGHUP
                    else "code %s" % code, t.log_text()[-200:].strip()))
            time.sleep(max(0.0, SETTLE_S - (time.monotonic() - started)))
        row["reload_seconds"] = round(time.monotonic() - t0, 1)
        # Each stub_status read is a connection of its own: the later read counts itself.
        row["backend2_accepts"] = b.stub_accepts(backends[1]) - acc0 - 1
    except Exception as e:   # the other proxies are measured anyway
        row["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        row.update({"reloads_" + k: v for k, v in verdicts.items()})
        if load:
            row.update(load.stop())
        t.proc.stop()
    return row


def run(bench, b):
    """The row for every proxy among bench.targets; `b` is bench.py's module."""
    reloads = 6 if bench.quick else 20
    names = [n for n in ("holdfast", "nginx", "haproxy") if n in bench.targets]
    if not names:
        return None
    backends, procs = _start_backends(bench, b)
    rows = []
    try:
        for name in names:
            s0, o0, t0 = b.system_busy_seconds(), b.own_seconds(), time.monotonic()
            row = one_proxy(bench, b, name, backends, reloads)
            row["foreign_cpus"] = round(max(0.0, (b.system_busy_seconds() - s0) - (b.own_seconds() - o0)) /
                                        (time.monotonic() - t0), 2)
            if "error" in row:
                bench.note("reload %s: %s" % (name, row["error"]))
            elif row["foreign_cpus"] > 0.5:
                bench.note("other processes used %.2f CPUs during the reload row of %s" % (row["foreign_cpus"], name))
            rows.append(row)
            b.log("  %s: %s requests, %s failed, %s client conns closed by the proxy, %s backend-2 conns%s" %
                  (name, row.get("requests"), row.get("failed"), row.get("closed_by_proxy"),
                   row.get("backend2_accepts"), (" (%s)" % row["error"][:120]) if "error" in row else ""))
    finally:
        for p in procs:
            p.stop()
    return {"reloads": reloads, "settle_s": SETTLE_S, "clients": CLIENTS, "body": len(reloadlib.BODY),
            "rows": rows}


def markdown(L, rl):
    if not rl:
        return
    L.append("")
    L.append("## Live reload under load")
    L.append("")
    L.append("Each proxy is reloaded %d times, %.0f s apart, alternating between config A (upstream `app` = "
             "backends 1, 2; route /a -> app) and B (`app` = backends 2, 3; extra route /b -> `other` = backend "
             "3), while %d keep-alive clients alternate GET and POST (%d-byte body) on /a and /b. holdfast: "
             "SIGHUP, waiting for `reload: version N active`; nginx: SIGHUP to the master, waiting for a new "
             "worker; HAProxy: master-worker "
             "(`-W`), SIGUSR2 to the master, waiting for `Loading success`. *Failed*: connect errors, "
             "connections closed or reset before the answer, timeouts (5 s), 5xx. *Closed by the proxy*: "
             "client connections it ended while the client meant to keep them (abruptly / with "
             "`Connection: close`). *Backend-2 connections*: connections backend 2, in both configs, accepted "
             "from the first reload to the end." % (rl["reloads"], rl["settle_s"], rl["clients"], rl["body"]))
    L.append("")
    L.append("| proxy | reloads ok / failed / unconfirmed | requests | failed (connect / closed / timeout / 5xx / "
             "other) | client conns closed by the proxy (abrupt / told) | backend-2 connections |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for r in rl["rows"]:
        if "requests" not in r:
            L.append("| %s | error: %s | | | | |" % (r["proxy"], r.get("error", "?")[:100]))
            continue
        err = (" (error: %s)" % r["error"][:80]) if "error" in r else ""
        L.append("| %s | %s / %s / %s%s | %d | %d (%d / %d / %d / %d / %d) | %d (%d / %d) | %s |" % (
            r["proxy"], r.get("reloads_ok", "-"), r.get("reloads_failed", "-"), r.get("reloads_unconfirmed", "-"),
            err, r["requests"], r["failed"], r["failed_connect"], r["failed_closed"], r["failed_timeout"],
            r["failed_5xx"], r["failed_other"], r["closed_by_proxy"], r["closed_abrupt"], r["closed_told"],
            r.get("backend2_accepts", "-")))
