"""Per-request cost rows of scripts/bench: CPU per request split into user and
kernel time for every proxy, and holdfast's instructions per request.

CPU per request comes from the throughput runs (bench.py one_run: utime and
stime deltas of the proxy's process tree, nginx master and workers included,
over the measured wrk interval, divided by the requests wrk completed).

Instructions per request are counted in a separate, short run of holdfast
alone, because the counters need the process started under a tool:
`perf stat -e instructions` where the machine exposes the counter (virtual
machines often answer `<not supported>`), else `valgrind --tool=callgrind`
(user-space instructions only; holdfast runs some 50 times slower under it,
so the runs are short). Three runs: one with no request (start-up, the
check connection and shutdown), then N keep-alive requests of 13 B, of 64 KiB
and of 1 MiB, each size a run of its own from one client connection; per request =
(run - no-request run) / N.
"""

import os
import re
import signal
import socket
import subprocess
import time

SIZES = (("13 B", "/small"), ("64 KiB", "/64k"), ("1 MiB", "/1m"))
REQUESTS = 2000


# --------------------------------------------------------------------------- CPU table

def _best_peer(tp, names, n, test, key):
    """The lowest median of `key` among the proxies other than `n` (lower is better)."""
    vals = [tp[m][test][key]["median"] for m in names
            if m != n and test in tp[m] and tp[m][test].get(key) and tp[m][test][key]["median"]]
    return min(vals) if vals else None


def markdown_cpu(L, tp, names, fmt_summary):
    """CPU per request, total/user/kernel, per proxy and body size, with ratios to the best other proxy."""
    tests = [(t, label) for t, label in (("small_c50", "13 B"), ("large_c50", "64 KiB"), ("huge_c50", "1 MiB"))
             if any(t in tp.get(n, {}) for n in names)]
    if not names or not tests:
        return
    L.append("")
    L.append("## CPU per request: user and kernel")
    L.append("")
    L.append("Microseconds of proxy CPU per request at 50 connections (utime and stime of all the proxy's "
             "processes and threads, nginx's workers included, over each measured run, divided by the "
             "requests completed), medians [min–max] over rounds. *vs best peer*: the median divided by the "
             "lowest median of the other proxies (below 1: cheaper than both).")
    L.append("")
    L.append("| target | body | req/s | total µs/req | user µs/req | kernel µs/req | total vs best peer | "
             "user vs best peer | kernel vs best peer |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for test, label in tests:
        for n in names:
            s = tp.get(n, {}).get(test)
            if not s:
                continue
            cells = [n, label, fmt_summary(s.get("rps"))]
            cells += [fmt_summary(s.get(k), 1) for k in ("cpu_us_per_req", "user_us_per_req", "kernel_us_per_req")]
            for k in ("cpu_us_per_req", "user_us_per_req", "kernel_us_per_req"):
                best = _best_peer(tp, names, n, test, k)
                mine = s.get(k)
                cells.append("%.2f" % (mine["median"] / best) if mine and best else "-")
            L.append("| " + " | ".join(cells) + " |")


# --------------------------------------------------------------------------- instructions per request

def perf_works():
    """Whether `perf stat -e instructions` counts here (it prints `<not supported>` in many VMs)."""
    try:
        r = subprocess.run(["perf", "stat", "-x", ",", "-e", "instructions", "true"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    m = re.search(r"^\s*(\d+),", r.stderr, re.M)
    return r.returncode == 0 and bool(m) and int(m.group(1)) > 0


def _holdfast_config(path, port, servers):
    lines = ['listen: ["127.0.0.1:%d"]' % port, "workers: 1", "drain_timeout: 2s",
             "client: {keepalive_requests: 100000000}", "upstreams:", "  app:", "    servers:"]
    lines += ["      - 127.0.0.1:%d" % s for s in servers]
    lines += ['log: {level: warn, access: "off"}']
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def keepalive_requests(port, path, n, limit_s):
    """`n` GETs of `path`, one after another on one keep-alive connection; returns how many got a whole 200."""
    deadline = time.monotonic() + limit_s
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = sock.makefile("rb")
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode()
    ok = 0
    try:
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            sock.sendall(req)
            status = f.readline()
            length = None
            while True:
                line = f.readline()
                if not line:
                    return ok
                if line in (b"\r\n", b"\n"):
                    break
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
            if length is None or len(f.read(length)) != length:
                return ok
            ok += status.startswith(b"HTTP/1.1 200")
    except OSError:
        pass
    finally:
        f.close()
        sock.close()
    return ok


def _one_run(bench, b, tool, label, path, n, servers):
    d = os.path.join(bench.workdir, "insn-%s" % label)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "holdfast.yaml")
    port = b.free_port()
    _holdfast_config(cfg, port, servers)
    out = os.path.join(d, "counter.out")
    if tool == "perf":
        prefix = ["perf", "stat", "-x", ",", "-e", "instructions", "-o", out, "--"]
    else:
        prefix = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
    proc = b.Proc("insn-" + label, prefix + [bench.holdfast_bin, "-c", cfg], d)
    try:
        if not b.wait_listening(port, proc, timeout=90):
            raise RuntimeError("holdfast under %s did not listen: %s" % (tool, proc.stderr_text()[-300:].strip()))
        ok = keepalive_requests(port, path, n, 180) if n else 0
        # SIGTERM to holdfast itself (under perf it is perf's child), so that it drains and
        # exits and the tool writes its count.
        pids = b.tree_pids(proc.pid)
        for pid in (pids[1:] if len(pids) > 1 else pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        proc.popen.wait(timeout=90)
    finally:
        proc.stop(grace=10)
    text = ""
    if os.path.exists(out):
        with open(out) as f:
            text = f.read()
    if tool == "perf":
        m = re.search(r"^\s*(\d+),", text, re.M)
    else:
        m = (re.search(r"Collected\s*:\s*([\d,]+)", proc.stderr_text())
             or re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M))
    if not m:
        raise RuntimeError("no instruction count from %s (%s)" % (tool, proc.stderr_text()[-300:].strip()))
    return int(m.group(1).replace(",", "")), ok


def measure_instructions(bench, b):
    """Holdfast's instructions per request for 13 B and 64 KiB; `b` is bench.py's module."""
    if not bench.holdfast_bin:
        return None
    tool = "perf" if perf_works() else ("callgrind" if b.shutil.which("valgrind") else None)
    if not tool:
        bench.note("instructions per request not measured: perf counts nothing here and valgrind is missing")
        return None
    n = REQUESTS      # about 5 s in all under callgrind: the same in quick and full runs
    servers = bench.backend_ports
    b.log("instructions per request: holdfast under %s, %d requests per size" % (tool, n))
    t0 = time.monotonic()
    base, _ = _one_run(bench, b, tool, "none", None, 0, servers)
    out = {"tool": tool, "requests": n, "baseline_instructions": base, "sizes": {}}
    for label, path in SIZES:
        total, ok = _one_run(bench, b, tool, path.strip("/"), path, n, servers)
        out["sizes"][label] = {"instructions": total, "ok": ok,
                               "per_request": (total - base) / ok if ok else None}
        if ok < n:
            bench.note("instructions run %s: %d of %d requests answered" % (label, ok, n))
        b.log("  %s: %s instructions per request" % (label, "%.0f" % out["sizes"][label]["per_request"]
                                                      if ok else "-"))
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def markdown_instructions(L, ins):
    if not ins:
        return
    L.append("")
    L.append("## holdfast instructions per request")
    L.append("")
    what = ("`perf stat -e instructions` (user and kernel)" if ins["tool"] == "perf" else
            "`valgrind --tool=callgrind` (user space only: holdfast, libevent, libc; no kernel work)")
    L.append("Counted with %s in separate runs: %d keep-alive GETs on one client connection, minus a run with "
             "no request (start-up and shutdown, %s instructions). Independent of machine load." %
             (what, ins["requests"], "{:,}".format(ins["baseline_instructions"])))
    L.append("")
    L.append("| body | instructions per request |")
    L.append("|---|---:|")
    for label, r in ins["sizes"].items():
        L.append("| %s | %s |" % (label, "{:,.0f}".format(r["per_request"]) if r["per_request"] is not None else "-"))
