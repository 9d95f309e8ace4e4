#!/usr/bin/env python3
"""holdfast benchmark: holdfast, nginx, HAProxy and the backend direct.

Started by scripts/bench, which installs the tools and builds holdfast when
they are missing. Everything listens on 127.0.0.1 at ports found free at
start; every process runs in the foreground under a config written to a
temporary directory and is stopped at the end.

Measured per target, rounds alternated among targets (medians, min, max):
  throughput     wrk -t1 -c50, 13-byte, 64 KiB and 1 MiB responses
  latency        p50/p99 at 50 connections and at 1 connection
  CPU            proxy utime+stime per 100k requests (/proc/PID/stat of the
                 proxy's process tree)
  upstream conns connections accepted by the backends (stub_status
                 "accepts") per 10k requests
  idle memory    proxy RSS growth per idle keep-alive client connection, in
                 a proxy process started afresh for this test
  race           failures of the keep-alive race (scripts/racelib.py) behind
                 each proxy, GET and POST, with and without Keep-Alive hints
  failover       client-visible failures while one of two backends is
                 SIGKILLed and restarted every 5 s under load, and how many of
                 them the killed backend had in flight (scripts/benchfailover.py)
  CPU split      user and kernel CPU per request, 13 B, 64 KiB and 1 MiB, and
                 holdfast's instructions per request (scripts/benchcost.py)
  reload         failed requests, client connections closed and upstream
                 connections opened while each proxy is reloaded 20 times
                 under load between two configs (scripts/benchreload.py)

Runs whose CPU time was shared with other processes (a build, a test) are
detected from /proc/stat and run again after the machine is quiet, within a
time budget; what stays disturbed is listed under Notes.

Also: `bench.py idle-client --port N --conns K` opens K idle connections,
prints READY, and holds them until its standard input closes.
"""

import argparse
import asyncio
import datetime
import fcntl
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import benchcost  # noqa: E402
import benchfailover  # noqa: E402
import benchreload  # noqa: E402
import racelib  # noqa: E402

BUILD_LOCK = "/tmp/holdfast-build.lock"
SMALL_BODY = b"hello, world\n"           # 13 bytes
LARGE_SIZE = 64 * 1024
HUGE_SIZE = 1024 * 1024
BODY_SIZES = {"/small": len(SMALL_BODY), "/64k": LARGE_SIZE, "/1m": HUGE_SIZE}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TARGET_ORDER = ["holdfast", "nginx", "haproxy", "direct"]

WRK_REPORT_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"err_connect\":%d,\"err_read\":%d," ..
    "\"err_write\":%d,\"err_status\":%d,\"err_timeout\":%d,\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d," ..
    "\"max_us\":%d,\"mean_us\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# -- processes ----------------------------------------------------------------

class Proc:
    """A server we started: its own session, so its workers die with it."""

    registry = []

    def __init__(self, name, argv, workdir, env=None):
        self.name = name
        self.argv = argv
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        self.stdout_path = os.path.join(workdir, name + ".stdout")
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.popen = subprocess.Popen(argv, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                      start_new_session=True, cwd=workdir, env=env)
        self.pid = self.popen.pid
        Proc.registry.append(self)

    def alive(self):
        return self.popen.poll() is None

    def stop(self, grace=5.0):
        """SIGTERM, then SIGKILL after `grace`; sets exit_code and killed."""
        if self._err.closed:
            return
        self.killed = False
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=5)
        else:
            # The session leader is gone; make sure its workers are too.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.exit_code = self.popen.returncode
        for f in (self._err, self._out):
            f.close()

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    @classmethod
    def stop_all(cls):
        for p in reversed(cls.registry):
            try:
                p.stop(grace=3.0)
            except Exception as e:  # cleanup must go on
                log("stopping %s: %s" % (p.name, e))
        cls.registry = []


def tree_pids(root):
    """root and its descendants, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_user_kernel(root):
    """(user, kernel) CPU seconds of every process in the tree (each counts all
    its threads): an nginx master and its workers, HAProxy, holdfast."""
    user = kernel = 0
    for pid in tree_pids(root):
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime, stime, and cutime, cstime: the time of children it reaped
            # (an nginx worker that exited) so that totals never go backwards.
            user += int(fields[11]) + int(fields[13])
            kernel += int(fields[12]) + int(fields[14])
        except (OSError, IndexError):
            pass
    return user / CLK_TCK, kernel / CLK_TCK


def cpu_seconds(root):
    """CPU seconds of every process in the tree (each counts all its threads)."""
    return sum(cpu_user_kernel(root))


def rss_bytes(root):
    total = 0
    for pid in tree_pids(root):
        try:
            with open("/proc/%d/statm" % pid) as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError):
            pass
    return total


def open_fds(root):
    n = 0
    for pid in tree_pids(root):
        try:
            n += len(os.listdir("/proc/%d/fd" % pid))
        except OSError:
            pass
    return n


def system_busy_seconds():
    """CPU seconds the whole machine spent in processes (user, nice, system), from /proc/stat.

    irq and softirq time are left out on purpose: loopback TCP does much of its
    work in softirq context, which the kernel charges to no process, so it
    would show up as load from strangers."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2]) / CLK_TCK


def own_seconds():
    """CPU seconds of this script, its finished children (wrk) and every server it started.

    A server that ended and was reaped moves from its /proc entry into our
    children's times, so nothing is lost or counted twice."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + sum(
        cpu_seconds(p.pid) for p in Proc.registry if p.popen.returncode is None)


def foreign_load(seconds=2.0):
    """Average CPUs used by processes that are not ours over `seconds`."""
    s0, o0 = system_busy_seconds(), own_seconds()
    time.sleep(seconds)
    return max(0.0, (system_busy_seconds() - s0) - (own_seconds() - o0)) / seconds


_used_ports = set()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A port on 127.0.0.1 that nobody listens on, for a server we are about to start.

    Taken below the kernel's ephemeral range: a port from bind(0) could be
    handed out again, before our server binds it, to another bind(0) (a
    RaceBackend) or as the source port of an outgoing connection (wrk, the
    idle clients)."""
    low, _ = _ephemeral_range()
    lo, hi = (10000, low - 1) if low > 12000 else (1024, low - 1)
    rng = random.Random()
    for _ in range(1000):
        port = rng.randint(lo, hi)
        if port in _used_ports:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port in %d-%d" % (lo, hi))


def wait_listening(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def http_get(port, path, timeout=5.0):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
        return r.status, r.read()


def wait_build_lock(max_wait=900):
    """Benchmarks mean nothing while a compiler shares the CPU."""
    deadline = time.monotonic() + max_wait
    told = False
    while True:
        with open(BUILD_LOCK, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return True
            except BlockingIOError:
                pass
        if time.monotonic() > deadline:
            return False
        if not told:
            log("a build holds %s; waiting for it to finish" % BUILD_LOCK)
            told = True
        time.sleep(5)


def build_busy():
    with open(BUILD_LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True


# -- configs --------------------------------------------------------------------

def nginx_common(d, workers, conns=16384):
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(d, "tmp", sub), exist_ok=True)
    return """
worker_processes %(workers)d;
daemon off;
master_process on;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
worker_rlimit_nofile %(nofile)d;
events { worker_connections %(conns)d; }
""" % {"workers": workers, "d": d, "conns": conns, "nofile": min(conns + 2000, hard_nofile())}, """
  client_body_temp_path %(d)s/tmp/body;
  proxy_temp_path %(d)s/tmp/proxy;
  fastcgi_temp_path %(d)s/tmp/fastcgi;
  uwsgi_temp_path %(d)s/tmp/uwsgi;
  scgi_temp_path %(d)s/tmp/scgi;
""" % {"d": d}


def start_nginx(name, d, conf):
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return Proc(name, ["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c", path], d)


def backend_nginx(name, d, port):
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    for p in (d, www):
        os.makedirs(p, exist_ok=True)
        os.chmod(p, 0o755)
    with open(os.path.join(www, "small"), "wb") as f:
        f.write(SMALL_BODY)
    with open(os.path.join(www, "64k"), "wb") as f:
        f.write(bytes((i * 7) & 0xFF for i in range(LARGE_SIZE)))
    with open(os.path.join(www, "1m"), "wb") as f:
        f.write(bytes((i * 13) & 0xFF for i in range(256)) * (HUGE_SIZE // 256))
    for fn in ("small", "64k", "1m"):
        os.chmod(os.path.join(www, fn), 0o644)
    head, temps = nginx_common(d, 1)
    conf = head + """
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  open_file_cache max=16;
%(temps)s
  server {
    listen 127.0.0.1:%(port)d backlog=4096;
    root %(www)s;
    location = /nginx_status { stub_status; }
  }
}
""" % {"temps": temps, "port": port, "www": www}
    return start_nginx(name, d, conf)


def proxy_nginx(d, port, servers, workers):
    head, temps = nginx_common(d, workers)
    conf = head + """
http {
  access_log off;
  # Client side: keep wrk's connections for the whole run, as the other proxies do.
  keepalive_requests 100000000;
  keepalive_timeout 75s;
%(temps)s
  upstream backends {
%(servers)s
    keepalive 32;
  }
  server {
    listen 127.0.0.1:%(port)d backlog=4096;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
""" % {"temps": temps, "port": port,
       "servers": "\n".join("    server 127.0.0.1:%d;" % s for s in servers)}
    return start_nginx("nginx", d, conf)


def haproxy_maxconn():
    # HAProxy reserves two descriptors per connection and refuses to start
    # when the hard limit cannot hold them.
    return max(1000, min(20000, (hard_nofile() - 200) // 2))


def proxy_haproxy(name, d, port, servers, workers, reuse="always", defaults_extra=(), server_opts=""):
    """HAProxy in front of `servers`; `defaults_extra` lines go into `defaults`,
    `server_opts` after each server (the failover row's settings)."""
    os.makedirs(d, exist_ok=True)
    conf = """global
  nbthread %(workers)d
  maxconn %(maxconn)d

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 75s
  timeout server 60s
  timeout http-keep-alive 75s
%(defaults_extra)s
frontend fe
  bind 127.0.0.1:%(port)d
  default_backend be

backend be
  balance roundrobin
%(reuse)s
%(servers)s
""" % {"workers": workers, "maxconn": haproxy_maxconn(), "port": port,
       "reuse": ("  http-reuse %s" % reuse) if reuse else "",
       "defaults_extra": "".join("  %s\n" % line for line in defaults_extra),
       "servers": "\n".join("  server b%d 127.0.0.1:%d%s" % (i + 1, s, server_opts) for i, s in enumerate(servers))}
    path = os.path.join(d, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(conf)
    return Proc(name, ["haproxy", "-db", "-f", path], d)


def proxy_holdfast(name, d, binary, port, servers, workers, keepalive=None, backend_keepalive=None,
                   level="warn"):
    os.makedirs(d, exist_ok=True)
    lines = [
        'listen: ["127.0.0.1:%d"]' % port,
        "workers: %d" % workers,
        "drain_timeout: 2s",
        "client:",
        "  keepalive_requests: 100000000",
        "upstreams:",
        "  app:",
        "    servers:",
    ]
    lines += ["      - address: 127.0.0.1:%d" % s for s in servers]
    if keepalive:
        lines.append("    keepalive: {%s}" % ", ".join("%s: %s" % kv for kv in keepalive.items()))
    if backend_keepalive:
        lines.append("    backend_keepalive_timeout: %s" % backend_keepalive)
    lines += [
        "routes:",
        "  - match: {path_prefix: /}",
        "    upstream: app",
        'log: {level: %s, access: "off"}' % level,
    ]
    path = os.path.join(d, "holdfast.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return Proc(name, [binary, "-c", path], d)


def hard_nofile():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def holdfast_stats(proc):
    m = None
    for m in re.finditer(r"stats: (.*)", proc.stderr_text()):
        pass
    if not m:
        return None
    out = {}
    for item in m.group(1).split():
        k, _, v = item.partition("=")
        try:
            out[k] = int(v)
        except ValueError:
            out[k] = v
    return out


# -- wrk -------------------------------------------------------------------------

def run_wrk(workdir, port, path, conns, duration):
    script = os.path.join(workdir, "report.lua")
    if not os.path.exists(script):
        with open(script, "w") as f:
            f.write(WRK_REPORT_LUA)
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "--latency", "-s", script,
            "http://127.0.0.1:%d%s" % (port, path)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"WRKJSON (\{.*\})", r.stdout)
    if not m:
        raise RuntimeError("wrk gave no report: %s %s" % (r.stdout[-500:], r.stderr[-500:]))
    out = json.loads(m.group(1))
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    out["errors"] = sum(out[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    return out


def stub_accepts(port):
    _, body = http_get(port, "/nginx_status")
    # "Active connections: N \nserver accepts handled requests\n A H R \n..."
    return int(body.decode().split("\n")[2].split()[0])


# -- idle connections ----------------------------------------------------------------

async def _idle_client(port, conns, path, concurrency, limit_s):
    sem = asyncio.Semaphore(concurrency)
    held = []
    failed = 0
    request = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode()

    async def one():
        nonlocal failed
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if not head.startswith(b"HTTP/1.1 200") or not m:
                    raise ValueError(head[:40])
                await asyncio.wait_for(reader.readexactly(int(m.group(1))), 10)
                held.append(writer)
            except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                failed += 1

    try:
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(conns))), limit_s)
    except asyncio.TimeoutError:
        pass
    print("READY ok=%d failed=%d" % (len(held), failed), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    alive = sum(1 for w in held if not w.is_closing() and not w.transport.is_closing())
    for w in held:
        w.close()
    print("DONE held=%d" % alive, flush=True)


def idle_client_main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_idle_client(args.port, args.conns, args.path, 256, args.limit))
    return 0


def measure_idle(port, proc, conns, limit_s=90):
    """RSS growth of the proxy's processes per idle keep-alive client connection."""
    time.sleep(0.5)
    rss0, fds0 = rss_bytes(proc.pid), open_fds(proc.pid)
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "idle-client", "--port", str(port),
                              "--conns", str(conns), "--limit", str(limit_s)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        m = re.match(r"READY ok=(\d+) failed=(\d+)", line)
        if not m:
            raise RuntimeError("idle client said %r" % line)
        ok, failed = int(m.group(1)), int(m.group(2))
        time.sleep(1.0)
        rss1, fds1 = rss_bytes(proc.pid), open_fds(proc.pid)
        child.stdin.close()
        done = child.stdout.readline()
        held = int(re.search(r"held=(\d+)", done).group(1)) if "held=" in done else None
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return {
        "conns_requested": conns, "conns_ok": ok, "conns_failed": failed, "still_open_at_end": held,
        "rss_before": rss0, "rss_after": rss1, "fds_before": fds0, "fds_after": fds1,
        "bytes_per_conn": (rss1 - rss0) / ok if ok else None,
    }


# -- statistics and output ------------------------------------------------------------------

def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt_num(v, digits=0):
    if v is None:
        return "-"
    if digits == 0:
        return "{:,.0f}".format(v)
    return "{:,.{d}f}".format(v, d=digits)


def fmt_summary(s, digits=0, scale=1.0):
    if not s:
        return "-"
    return "%s [%s–%s]" % (fmt_num(s["median"] * scale, digits), fmt_num(s["min"] * scale, digits),
                           fmt_num(s["max"] * scale, digits))


def fmt_ratio(s, ref):
    if not s or not ref or not ref["median"]:
        return "-"
    return "%.2f" % (s["median"] / ref["median"])


def fmt_ms(us):
    if us is None:
        return "-"
    return "%.2f" % (us / 1000.0) if us < 100000 else "%.0f" % (us / 1000.0)


def versions(holdfast_bin):
    def run(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
        except (OSError, subprocess.TimeoutExpired):
            return None
    v = {
        "nginx": run(["nginx", "-v"]),
        "haproxy": run(["haproxy", "-v"]),
        "wrk": run(["wrk", "-v"]),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    if holdfast_bin:
        v["holdfast"] = run([holdfast_bin, "--version"])
        with open(holdfast_bin, "rb") as f:
            v["holdfast_sha256"] = hashlib.sha256(f.read()).hexdigest()[:12]
    try:
        v["holdfast_commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                              capture_output=True, text=True, timeout=10).stdout.strip() or None
    except OSError:
        v["holdfast_commit"] = None
    return v


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# -- the run ------------------------------------------------------------------------------

TESTS_FULL = [
    ("small_c50", "/small", 50),
    ("large_c50", "/64k", 50),
    ("huge_c50", "/1m", 50),
    ("small_c1", "/small", 1),
    ("large_c1", "/64k", 1),
]


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.rounds = args.rounds or (3 if self.quick else 5)
        self.duration = args.duration or (3 if self.quick else 10)
        self.tests = [t for t in TESTS_FULL if t[0] != "large_c1"] if self.quick else TESTS_FULL
        self.race_n = (20, 20) if self.quick else (60, 60)
        self.idle_conns = args.idle_conns or min(10000, haproxy_maxconn() // 1000 * 1000)
        self.workdir = tempfile.mkdtemp(prefix="holdfast-bench.")
        os.chmod(self.workdir, 0o755)
        self.holdfast_bin = None
        self.holdfast_source = None
        self.notes = []
        self.disturbed = []     # runs during which other processes used CPU
        self.retried = 0
        self.retry_budget = 120 if self.quick else 300     # seconds spent re-running disturbed runs
        self.targets = {}       # name -> {"port", "proc"}
        self.results = {}

    def wait_quiet(self, limit, note=True):
        """Waits up to `limit` seconds until other processes leave the CPUs alone."""
        deadline = time.monotonic() + limit
        told = False
        while True:
            load = foreign_load()
            if load < 0.15 or time.monotonic() > deadline:
                break
            if not told:
                log("other processes use %.2f CPUs; waiting up to %d s for a quiet machine" % (load, limit))
                told = True
        if load >= 0.15 and note:
            self.note("other processes used %.2f CPUs when the benchmark started" % load)
        return load

    def note(self, msg):
        log(msg)
        self.notes.append(msg)

    def find_holdfast(self):
        binary = self.args.holdfast or os.path.join(ROOT, "build", "holdfast")
        if not os.access(binary, os.X_OK):
            self.note("holdfast not measured: %s does not exist" % binary)
            return None
        try:
            r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.note("holdfast not measured: `%s --version` failed: %s" % (binary, e))
            return None
        if r.returncode != 0:
            self.note("holdfast not measured: `%s --version` exited %d: %s" %
                      (binary, r.returncode, (r.stdout + r.stderr).strip()[:200]))
            return None
        # Run a copy: the binary under test stays the same if build/ is rebuilt meanwhile.
        self.holdfast_source = binary
        copy = os.path.join(self.workdir, "holdfast-under-test")
        shutil.copy2(binary, copy)
        return copy

    # Backends and the proxies under test.
    def start(self):
        wanted = [t for t in TARGET_ORDER if t in self.args.targets]
        if "holdfast" in wanted:
            self.holdfast_bin = self.find_holdfast()
            if not self.holdfast_bin:
                wanted.remove("holdfast")
        self.backend_ports = [free_port(), free_port()]
        self.backends = []
        for i, port in enumerate(self.backend_ports):
            p = backend_nginx("backend%d" % (i + 1), os.path.join(self.workdir, "backend%d" % (i + 1)), port)
            if not wait_listening(port, p):
                raise RuntimeError("backend nginx did not start: %s" % p.stderr_text()[-500:])
            self.backends.append(p)
        for name in wanted:
            if name == "direct":
                self.targets[name] = {"port": self.backend_ports[0], "proc": None, "restarts": 0}
                continue
            port = free_port()
            proc = self.start_proxy(name, port)
            if not wait_listening(port, proc):
                self.note("%s not measured: it did not start listening on 127.0.0.1:%d; stderr: %s" %
                          (name, port, proc.stderr_text()[-400:].strip()))
                proc.stop()
                continue
            self.targets[name] = {"port": port, "proc": proc, "restarts": 0}
        # Each target must serve both bodies intact before it is timed.
        for name in list(self.targets):
            port = self.targets[name]["port"]
            try:
                s1, b1 = http_get(port, "/small")
                s2, b2 = http_get(port, "/64k")
                s3, b3 = http_get(port, "/1m")
                if (s1 != 200 or b1 != SMALL_BODY or s2 != 200 or len(b2) != LARGE_SIZE or s3 != 200
                        or len(b3) != HUGE_SIZE):
                    raise RuntimeError("status %d/%d/%d, body %d/%d/%d bytes" %
                                       (s1, s2, s3, len(b1), len(b2), len(b3)))
            except Exception as e:
                self.note("%s not measured: a check request failed: %s" % (name, e))
                proc = self.targets.pop(name)["proc"]
                if proc:
                    proc.stop()

    def start_proxy(self, name, port):
        d = os.path.join(self.workdir, name)
        if name == "nginx":
            return proxy_nginx(d, port, self.backend_ports, self.args.workers)
        if name == "haproxy":
            return proxy_haproxy("haproxy", d, port, self.backend_ports, self.args.workers)
        return proxy_holdfast("holdfast", d, self.holdfast_bin, port, self.backend_ports, self.args.workers)

    def holdfast_setting(self, key):
        """A value from `holdfast --check` (the effective config) of the measured instance."""
        cfg = os.path.join(self.workdir, "holdfast", "holdfast.yaml")
        try:
            r = subprocess.run([self.holdfast_bin, "--check", "-c", cfg], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        m = re.search(r"^\s*%s:\s*(\S+)" % re.escape(key), r.stdout, re.M)
        return m.group(1) if m else None

    def ensure_target(self, name):
        """Whether `name` is running; a proxy that died is noted and started again (at most 3 times)."""
        t = self.targets[name]
        proc = t["proc"]
        if proc is None or proc.alive():
            return True
        self.note("%s (pid %d) exited during the run (code %s)%s; stderr: %s" %
                  (name, proc.pid, proc.popen.returncode,
                   "; exit code 0 means it was told to stop by a signal from outside the benchmark"
                   if proc.popen.returncode == 0 else "",
                   proc.stderr_text()[-300:].strip() or "(empty)"))
        if t["restarts"] >= 3:
            return False
        t["restarts"] += 1
        proc.stop()
        t["port"] = free_port()
        new = self.start_proxy(name, t["port"])
        if not wait_listening(t["port"], new):
            self.note("%s did not start again" % name)
            return False
        t["proc"] = new
        return True

    def ensure_backends(self):
        """Starts again, on its port, a backend that died (another process may have killed it)."""
        for i, p in enumerate(self.backends):
            if p.alive():
                continue
            self.note("backend%d (nginx, pid %d) exited during the run (code %s%s); started again" %
                      (i + 1, p.pid, p.popen.returncode,
                       ": told to stop by a signal from outside the benchmark" if p.popen.returncode == 0 else ""))
            port = self.backend_ports[i]
            p = backend_nginx("backend%d" % (i + 1), os.path.join(self.workdir, "backend%d" % (i + 1)), port)
            if not wait_listening(port, p):
                raise RuntimeError("backend nginx did not start again: %s" % p.stderr_text()[-500:])
            self.backends[i] = p

    def backend_accepts(self):
        """[(backend pid, connections accepted)] from stub_status."""
        for attempt in range(3):
            try:
                return [(p.pid, stub_accepts(port)) for p, port in zip(self.backends, self.backend_ports)]
            except OSError:
                if attempt == 2:
                    raise
                time.sleep(1.0)          # a backend stopped by someone else may still be exiting
                self.ensure_backends()

    def one_run(self, name, test, path, conns, duration):
        self.ensure_backends()
        t = self.targets[name]
        proc = t["proc"]
        # A one-second warm-up at the same concurrency first: between two runs of
        # one target the others run for minutes, long enough for any pool's idle
        # timeout, and the upstream figure is about steady state, not refilling.
        run_wrk(self.workdir, t["port"], path, conns, 1)
        acc0 = self.backend_accepts()
        sys0, own0 = system_busy_seconds(), own_seconds()
        cpu0 = cpu_user_kernel(proc.pid) if proc else None
        w = run_wrk(self.workdir, t["port"], path, conns, duration)
        cpu1 = cpu_user_kernel(proc.pid) if proc else None
        sys1, own1 = system_busy_seconds(), own_seconds()
        acc1 = self.backend_accepts()
        # CPU used meanwhile by processes that are not part of the benchmark.
        w["foreign_cpus"] = max(0.0, (sys1 - sys0) - (own1 - own0)) / (w["duration_us"] / 1e6)

        # Each stub_status read is a connection of its own: the later read counts itself.
        # A backend started again meanwhile has a new counter: no number then.
        if [a[0] for a in acc0] == [a[0] for a in acc1]:
            upstream = sum(b[1] - a[1] - 1 for a, b in zip(acc0, acc1))
        else:
            upstream = None
        w["upstream_accepts"] = upstream
        w["upstream_per_10k"] = upstream / w["requests"] * 1e4 if w["requests"] and upstream is not None else None
        if proc:
            user, kernel = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
            w["cpu_s"], w["cpu_user_s"], w["cpu_kernel_s"] = user + kernel, user, kernel
            n = w["requests"]
            w["cpu_per_100k"] = (user + kernel) / n * 1e5 if n else None
            # Per request, in microseconds: user (the proxy's own code and libraries) and kernel
            # (system calls, copies, TCP work done in the process's context).
            w["cpu_us_per_req"] = (user + kernel) / n * 1e6 if n else None
            w["user_us_per_req"] = user / n * 1e6 if n else None
            w["kernel_us_per_req"] = kernel / n * 1e6 if n else None
            if not proc.alive():
                self.note("%s exited during a %s run" % (name, test))
        expected = BODY_SIZES[path]
        w["bytes_per_response"] = w["bytes"] / w["requests"] if w["requests"] else None
        if w["requests"] and w["bytes_per_response"] < expected:
            self.note("%s %s: %.0f bytes per response on average, less than the %d-byte body" %
                      (name, test, w["bytes_per_response"], expected))
        if w["errors"]:
            self.note("%s %s round: wrk counted %d errors (connect %d, read %d, write %d, status %d, timeout %d)" %
                      (name, test, w["errors"], w["err_connect"], w["err_read"], w["err_write"],
                       w["err_status"], w["err_timeout"]))
        return w

    def throughput(self):
        names = list(self.targets)
        runs = {n: {t[0]: [] for t in self.tests} for n in names}
        try:
            log("warm-up: 1 s per target")
            for n in names:
                run_wrk(self.workdir, self.targets[n]["port"], "/small", 50, 1)
            for r in range(self.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for test, path, conns in self.tests:
                    for n in order:
                        if not self.ensure_target(n):
                            continue
                        runs[n][test].append(self.measured_run(r, n, test, path, conns))
        finally:
            # Whatever was measured is reported, even when a later run failed.
            self.results["throughput"] = {n: {test: self.summarize(runs[n][test]) for test, _, _ in self.tests}
                                          for n in names}

    def measured_run(self, r, n, test, path, conns):
        w = self.one_run(n, test, path, conns, self.duration)
        # Another process took CPU (a build, a test): wait for quiet and run again, within a budget.
        while w["foreign_cpus"] > 0.15 and self.retry_budget > 0:
            t0 = time.monotonic()
            log("  %s %s disturbed: others used %.2f CPUs; running it again" % (n, test, w["foreign_cpus"]))
            self.wait_quiet(min(60, self.retry_budget), note=False)
            w = self.one_run(n, test, path, conns, self.duration)
            self.retried += 1
            self.retry_budget -= time.monotonic() - t0
        if w["foreign_cpus"] > 0.15:
            self.disturbed.append("%s %s %.2f" % (n, test, w["foreign_cpus"]))
        log("round %d/%d %-8s %-9s %9.0f req/s p99 %s ms%s" %
            (r + 1, self.rounds, n, test, w["rps"], fmt_ms(w["p99_us"]),
             (" cpu %.2fs/100k" % w["cpu_per_100k"]) if w.get("cpu_per_100k") else ""))
        return w

    @staticmethod
    def summarize(rs):
        return {
            "runs": rs,
            "rps": summary([w["rps"] for w in rs]),
            "p50_us": summary([w["p50_us"] for w in rs]),
            "p99_us": summary([w["p99_us"] for w in rs]),
            "cpu_per_100k": summary([w.get("cpu_per_100k") for w in rs]),
            "cpu_us_per_req": summary([w.get("cpu_us_per_req") for w in rs]),
            "user_us_per_req": summary([w.get("user_us_per_req") for w in rs]),
            "kernel_us_per_req": summary([w.get("kernel_us_per_req") for w in rs]),
            "upstream_per_10k": summary([w["upstream_per_10k"] for w in rs]),
            "errors": sum(w["errors"] for w in rs),
        }

    def restart_target(self, name):
        """Replaces `name`'s process with a freshly started one that has served one request."""
        t = self.targets[name]
        self.retire(name, t["proc"])
        t["port"] = free_port()
        t["proc"] = self.start_proxy(name, t["port"])
        if not wait_listening(t["port"], t["proc"]):
            raise RuntimeError("it did not start again: %s" % t["proc"].stderr_text()[-300:].strip())
        status, _ = http_get(t["port"], "/small")
        if status != 200:
            raise RuntimeError("a check request after the restart got status %d" % status)

    def idle_memory(self):
        out = {}
        for n, t in self.targets.items():
            if not t["proc"] or not self.ensure_target(n):
                continue
            # Every proxy is measured in a process started for this test: one
            # that has just served the throughput runs reuses the memory
            # those freed, and its figure would say little about a connection.
            try:
                self.restart_target(n)
            except Exception as e:
                self.note("%s not measured for idle connections: %s" % (n, e))
                continue
            log("idle memory: %d connections to %s (freshly started)" % (self.idle_conns, n))
            try:
                out[n] = measure_idle(t["port"], t["proc"], self.idle_conns)
            except Exception as e:
                self.note("%s idle-connection test failed: %s" % (n, e))
                continue
            r = out[n]
            if r["conns_failed"]:
                self.note("%s idle test: %d of %d connections failed" % (n, r["conns_failed"], self.idle_conns))
            if r["still_open_at_end"] is not None and r["still_open_at_end"] < r["conns_ok"]:
                self.note("%s idle test: %d of %d idle connections were closed by the proxy during the test" %
                          (n, r["conns_ok"] - r["still_open_at_end"], r["conns_ok"]))
            log("  %s: %.0f bytes per idle connection (%d ok, fds %d -> %d)" %
                (n, r["bytes_per_conn"] or 0, r["conns_ok"], r["fds_before"], r["fds_after"]))
        self.results["idle_memory"] = out

    # The keep-alive race: a RaceBackend per case and method, all cases at once.
    def race_cases(self):
        cases = []
        if "nginx" in self.targets:
            cases.append(("nginx", "nginx: keepalive 32 (upstream keepalive_timeout 60s)"))
        if "haproxy" in self.targets:
            cases.append(("haproxy", "haproxy: defaults (http-reuse safe)"))
            cases.append(("haproxy-always", "haproxy: http-reuse always"))
        if "holdfast" in self.targets:
            cases.append(("holdfast-defaults", "holdfast: defaults (nothing about the backend)"))
            cases.append(("holdfast", "holdfast: idle_timeout 30s, margin 200ms"))
            cases.append(("holdfast-bkt", "holdfast: backend_keepalive_timeout 1s, margin 200ms"))
        return cases

    def start_race_proxy(self, case, d, port, backend_port):
        w = self.args.workers
        if case == "nginx":
            head, temps = nginx_common(d, w, 1024)
            conf = head + """
http {
  access_log off;
%(temps)s
  upstream race { server 127.0.0.1:%(b)d; keepalive 32; }
  server {
    listen 127.0.0.1:%(port)d;
    location / { proxy_pass http://race; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
""" % {"temps": temps, "b": backend_port, "port": port}
            return start_nginx(os.path.basename(d), d, conf)
        if case == "haproxy":
            return proxy_haproxy(os.path.basename(d), d, port, [backend_port], w, reuse=None)
        if case == "haproxy-always":
            return proxy_haproxy(os.path.basename(d), d, port, [backend_port], w, reuse="always")
        if case == "holdfast-defaults":
            return proxy_holdfast(os.path.basename(d), d, self.holdfast_bin, port, [backend_port], w, level="info")
        if case == "holdfast":
            # Level info: the exit stats line (retries, hints learned, evictions) is logged at info.
            return proxy_holdfast(os.path.basename(d), d, self.holdfast_bin, port, [backend_port], w,
                                  keepalive={"idle_timeout": "30s", "margin": "200ms"}, level="info")
        return proxy_holdfast(os.path.basename(d), d, self.holdfast_bin, port, [backend_port], w,
                              keepalive={"margin": "200ms"}, backend_keepalive="1s", level="info")

    def race(self):
        T = 1.0
        n_sweep, n_steady = self.race_n
        jobs = []
        for case, label in self.race_cases():
            for advertise in (False, True):
                for method in ("GET", "POST"):
                    backend = racelib.RaceBackend(T, advertise=advertise).start()
                    port = free_port()
                    d = os.path.join(self.workdir, "race-%s-%s-%s" % (case, "adv" if advertise else "plain", method))
                    proc = self.start_race_proxy(case, d, port, backend.port)
                    jobs.append({"case": case, "label": label, "advertise": advertise, "method": method,
                                 "backend": backend, "proc": proc, "port": port})
        for j in jobs:
            if not wait_listening(j["port"], j["proc"]):
                j["error"] = "proxy did not start: %s" % j["proc"].stderr_text()[-300:].strip()
        log("race: %d proxies, %d+%d requests per method, T=1s (about %.0f s)" %
            (len(jobs), n_sweep, n_steady, n_sweep * T + n_steady * 0.3 * T + 5))

        def run(j):
            try:
                # Figures after the backend's first idle close, which a proxy may learn from.
                racelib.let_backend_close_once("127.0.0.1", j["port"], T)
                j["result"] = racelib.run_race("127.0.0.1", j["port"], T, (j["method"],), n_sweep, n_steady,
                                               tag="%s-%d" % (j["case"], j["advertise"]))
            except Exception as e:
                j["error"] = "race client failed: %s" % e

        threads = [threading.Thread(target=run, args=(j,), daemon=True) for j in jobs if "error" not in j]
        s0, o0, t0 = system_busy_seconds(), own_seconds(), time.monotonic()
        for t in threads:
            t.start()
        limit = time.monotonic() + n_sweep * 1.1 * T + n_steady * 0.3 * T + 2 * T + 120
        for t in threads:
            t.join(timeout=max(1, limit - time.monotonic()))
        foreign = max(0.0, (system_busy_seconds() - s0) - (own_seconds() - o0)) / (time.monotonic() - t0)
        if foreign > 0.5:
            self.note("other processes used %.2f CPUs during the race; its timing may be off" % foreign)
        out = []
        for j in jobs:
            if "error" not in j and not j["proc"].alive():
                j["error"] = "proxy exited during the race (code %s): %s" % (
                    j["proc"].popen.returncode, j["proc"].stderr_text()[-300:].strip())
                j.pop("result", None)
            j["proc"].stop()
            j["backend"].stop()
            row = {k: j[k] for k in ("case", "label", "advertise", "method")}
            row["backend"] = j["backend"].snapshot()
            if "result" in j:
                m = j["result"]["methods"][j["method"]]
                row.update({"sent": m["sent"], "failed": m["failed"], "phases": m["phases"],
                            "client_connections": m["client_connections"]})
            else:
                row["error"] = j.get("error", "did not finish in time")
                self.note("race %s %s: %s" % (j["label"], j["method"], row["error"]))
            if j["case"].startswith("holdfast"):
                row["holdfast_stats"] = holdfast_stats(j["proc"])
                if j["proc"].killed or j["proc"].exit_code != 0:
                    self.note("race %s %s: holdfast did not exit cleanly on SIGTERM (exit code %s%s)" %
                              (j["label"], j["method"], j["proc"].exit_code,
                               ", killed after 5 s" if j["proc"].killed else ""))
            if row["backend"]["posts_executed_twice"]:
                self.note("race %s: POST executed twice by the backend: %s" %
                          (j["label"], row["backend"]["posts_executed_twice"][:5]))
            out.append(row)
        self.results["race"] = {"T": T, "n_sweep": n_sweep, "n_steady": n_steady, "foreign_cpus": round(foreign, 2),
                                "rows": out}

    def failover(self):
        self.results["failover"] = benchfailover.run(self, sys.modules[__name__])

    def reload(self):
        self.results["reload"] = benchreload.run(self, sys.modules[__name__])

    def instructions(self):
        self.results["instructions"] = benchcost.measure_instructions(self, sys.modules[__name__])

    def retire(self, n, proc):
        """Stops a target's process; holdfast's counters and warnings are kept
        (its stderr file is reused by the next process of that name)."""
        proc.stop()
        # nginx exits 0 on SIGTERM, HAProxy dies of it (-15); both are clean.
        if proc.killed or proc.exit_code not in (0, -signal.SIGTERM):
            self.note("%s did not exit cleanly on SIGTERM (exit code %s%s)" %
                      (n, proc.exit_code, ", killed after 5 s" if proc.killed else ""))
        if n == "holdfast":
            # The first process's counters: the one that served the throughput runs.
            self.results.setdefault("holdfast_stats", holdfast_stats(proc))
            err = [l for l in proc.stderr_text().splitlines() if " warn" in l or " error" in l or "critical" in l]
            if err:
                kept = self.results.setdefault("holdfast_log_warnings", [])
                kept.extend(err[:20 - len(kept)])

    def stop(self):
        for n, t in self.targets.items():
            if t["proc"]:
                self.retire(n, t["proc"])
        Proc.stop_all()

    # -- output --
    def markdown(self):
        meta = self.results["meta"]
        L = []
        L.append("# holdfast benchmark")
        L.append("")
        L.append("%s, %s, %d CPUs (%s), mode %s, %d rounds of %d s per test, proxy workers %d. "
                 "Medians with [min–max] over rounds; ratios are medians against nginx." %
                 (meta["date"], meta["host"], meta["nproc"], meta["cpu"], meta["mode"], meta["rounds"],
                  meta["duration_s"], meta["workers"]))
        L.append("")
        L.append("Versions: " + ", ".join("%s `%s`" % (k, v) for k, v in meta["versions"].items() if v))
        L.append("")
        L.append("Setup: two nginx backends (1 worker each) on loopback serving a 13-byte, a 65,536-byte and a 1 MiB file; "
                 "each proxy balances over both; `direct` is wrk against one backend (the ceiling). "
                 "wrk -t1; everything shares %d CPUs. Proxies as their documentation advises for upstream "
                 "keep-alive: nginx `upstream { server; server; keepalive 32; }`, `proxy_http_version 1.1`, "
                 "`proxy_set_header Connection \"\"`; HAProxy `mode http`, `option http-keep-alive`, "
                 "`http-reuse always`; holdfast default pool settings%s. No access logs. "
                 "Client side, nginx's and holdfast's `keepalive_requests` are raised so that no proxy closes "
                 "wrk's connections during a run." % (
                     meta["nproc"], " (`max_idle: %s`)" % meta["holdfast_max_idle"] if meta.get("holdfast_max_idle") else ""))
        L.append("")
        tp = self.results.get("throughput", {})
        names = [n for n in TARGET_ORDER if n in tp]
        ref = tp.get("nginx", {})

        if not names:
            L.append("(no throughput measured)")
        else:
            self.markdown_tables(L, tp, names, ref)
        self.markdown_race(L)
        benchfailover.markdown(L, self.results.get("failover"))
        benchreload.markdown(L, self.results.get("reload"))
        if not names:
            benchcost.markdown_instructions(L, self.results.get("instructions"))
        if self.notes:
            L.append("")
            L.append("## Notes")
            L.append("")
            for n in self.notes:
                L.append("- " + n.replace("\n", " "))
        return "\n".join(L) + "\n"

    def markdown_tables(self, L, tp, names, ref):
        def col(n, test, key):
            return tp[n].get(test, {}).get(key)

        L.append("## Throughput (requests/s, 50 connections)")
        L.append("")
        L.append("| target | 13 B | vs nginx | 64 KiB | vs nginx | 1 MiB | vs nginx | errors |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for n in names:
            L.append("| %s | %s | %s | %s | %s | %s | %s | %d |" % (
                n, fmt_summary(col(n, "small_c50", "rps")), fmt_ratio(col(n, "small_c50", "rps"), ref.get("small_c50", {}).get("rps")),
                fmt_summary(col(n, "large_c50", "rps")), fmt_ratio(col(n, "large_c50", "rps"), ref.get("large_c50", {}).get("rps")),
                fmt_summary(col(n, "huge_c50", "rps")), fmt_ratio(col(n, "huge_c50", "rps"), ref.get("huge_c50", {}).get("rps")),
                sum(tp[n][t]["errors"] for t in tp[n])))
        L.append("")
        L.append("## Latency (ms, 13 B unless noted)")
        L.append("")
        has_large_c1 = any("large_c1" in tp[n] for n in names)
        hdr = "| target | p50 @50 | p99 @50 | p50 @1 | p99 @1 |" + (" p50 @1 64 KiB | p99 @1 64 KiB |" if has_large_c1 else "")
        L.append(hdr)
        L.append("|---" * (hdr.count("|") - 1) + "|")
        for n in names:
            cells = [n]
            for test in ["small_c50", "small_c1"] + (["large_c1"] if has_large_c1 else []):
                for key in ("p50_us", "p99_us"):
                    s = col(n, test, key)
                    cells.append("%s [%s–%s]" % (fmt_ms(s["median"]), fmt_ms(s["min"]), fmt_ms(s["max"])) if s else "-")
            L.append("| " + " | ".join(cells) + " |")
        L.append("")
        L.append("## Cost")
        L.append("")
        L.append("CPU: proxy utime+stime (all its processes and threads) per 100k requests at 50 connections. "
                 "Upstream: connections the backends accepted per 10k requests (13 B, 50 connections; "
                 "for `direct` these are wrk's own). Idle: proxy RSS growth per idle keep-alive client "
                 "connection in a freshly started proxy (one request served before), %s connections (holdfast's aim: at most 400 B)%s." % (
                     fmt_num(self.idle_conns),
                     " (not 10,000: HAProxy needs two descriptors per `maxconn` and refuses to start above "
                     "the hard limit of %s open files here)" % fmt_num(hard_nofile()) if self.idle_conns < 10000 else ""))
        L.append("")
        L.append("| target | CPU s/100k 13 B | vs nginx | CPU s/100k 64 KiB | vs nginx | upstream conns/10k req | idle bytes/conn |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        idle = self.results.get("idle_memory", {})
        for n in names:
            im = idle.get(n)
            L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                n, fmt_summary(col(n, "small_c50", "cpu_per_100k"), 2),
                fmt_ratio(col(n, "small_c50", "cpu_per_100k"), ref.get("small_c50", {}).get("cpu_per_100k")),
                fmt_summary(col(n, "large_c50", "cpu_per_100k"), 2),
                fmt_ratio(col(n, "large_c50", "cpu_per_100k"), ref.get("large_c50", {}).get("cpu_per_100k")),
                fmt_summary(col(n, "small_c50", "upstream_per_10k"), 1),
                fmt_num(im["bytes_per_conn"]) if im and im["bytes_per_conn"] is not None else "-"))
        benchcost.markdown_cpu(L, tp, [n for n in names if n != "direct"], fmt_summary)
        benchcost.markdown_instructions(L, self.results.get("instructions"))

    def markdown_race(self, L):
        race = self.results.get("race")
        if race:
            L.append("")
            L.append("## Keep-alive race")
            L.append("")
            L.append("Backend closes idle connections after T = 1 s and its FIN arrives 250 ms late; a request "
                     "in that window is read and never answered. One client connection per row: %d requests "
                     "after pauses swept 0.9T–1.1T, then %d after pauses of 0.3T. Failures (non-2xx, reset, "
                     "no answer in 5 s) of %d requests; sweep + steady. `hint` = the backend sends "
                     "`Keep-Alive: timeout=1`. Each row starts after the backend has closed one idle "
                     "connection of the proxy (one request, then 1.5 s idle): the figures are those after "
                     "the first close." % (race["n_sweep"], race["n_steady"], race["n_sweep"] + race["n_steady"]))
            L.append("")
            L.append("| proxy | hint | GET failed | POST failed | POST run twice | backend conns GET/POST |")
            L.append("|---|---|---:|---:|---:|---:|")
            rows = {}
            for r in race["rows"]:
                rows[(r["label"], r["advertise"], r["method"])] = r
            seen = []
            for r in race["rows"]:
                key = (r["label"], r["advertise"])
                if key in seen:
                    continue
                seen.append(key)
                cells = [r["label"], "yes" if r["advertise"] else "no"]
                conns = []
                twice = 0
                for method in ("GET", "POST"):
                    x = rows.get(key + (method,))
                    if not x or "failed" not in x:
                        cells.append("error")
                        conns.append("-")
                        continue
                    ph = x["phases"]
                    kinds = {}
                    for p in ph.values():
                        for k, v in p["kinds"].items():
                            kinds[k] = kinds.get(k, 0) + v
                    cells.append("%d (%d + %d)%s" % (
                        x["failed"], ph.get("sweep", {}).get("failed", 0), ph.get("steady", {}).get("failed", 0),
                        (" " + ", ".join("%s×%d" % kv for kv in sorted(kinds.items()))) if kinds else ""))
                    conns.append(str(x["backend"]["connections"]))
                    if method == "POST":
                        twice = len(x["backend"]["posts_executed_twice"])
                cells.append(str(twice))
                cells.append("/".join(conns))
                L.append("| " + " | ".join(cells) + " |")

    def chart(self, out_dir):
        tp = self.results.get("throughput", {})
        names = [n for n in TARGET_ORDER if n in tp]
        if not names or not shutil.which("gnuplot"):
            return None
        files = {}
        for test in ("small_c50", "large_c50"):
            dat = os.path.join(self.workdir, "chart-%s.dat" % test)
            with open(dat, "w") as f:
                f.write("# i target rps rps_min rps_max cpu cpu_min cpu_max p99 p99_min p99_max\n")
                for i, n in enumerate(names):
                    s = tp[n].get(test, {})
                    vals = []
                    for key, scale in (("rps", 1.0), ("cpu_per_100k", 1.0), ("p99_us", 1e-3)):
                        x = s.get(key)
                        vals += [x["median"] * scale, x["min"] * scale, x["max"] * scale] if x else ["NaN"] * 3
                    f.write("%d %s %s\n" % (i, n, " ".join(str(v) for v in vals)))
            files[test] = dat
        png = os.path.join(out_dir, "bench.png")
        meta = self.results["meta"]
        gp = ["set terminal pngcairo size 1500,900 font 'sans,10'",
              "set output '%s'" % png,
              "set multiplot layout 2,3 title \"holdfast bench, 50 connections, %s, %d CPUs, %s mode "
              "(bars: median; whiskers: min-max over rounds)\"" % (meta["date"][:10], meta["nproc"], meta["mode"]),
              "set style fill solid 0.6 border -1", "set boxwidth 0.6",
              "set xrange [-0.6:%f]" % (len(names) - 0.4), "set yrange [0:*]", "set grid ytics", "unset key"]
        for test, size in (("small_c50", "13 B"), ("large_c50", "64 KiB")):
            for col, title, color in ((3, "throughput (req/s)", "#4477aa"),
                                      (6, "proxy CPU s per 100k requests", "#ee6677"),
                                      (9, "p99 latency (ms)", "#228833")):
                gp.append("set title '%s, %s'" % (title, size))
                gp.append("plot '%s' using 1:%d:xtic(2) with boxes lc rgb '%s', '' using 1:%d:%d:%d with yerrorbars "
                          "lc rgb 'black' pt 0" % (files[test], col, color, col, col + 1, col + 2))
        gp.append("unset multiplot")
        r = subprocess.run(["gnuplot"], input="\n".join(gp) + "\n", capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.note("gnuplot failed: %s" % r.stderr.strip()[:300])
            return None
        return png

    def main(self):
        started = time.monotonic()
        if not wait_build_lock():
            raise SystemExit("a build has held %s for 15 minutes; not measuring" % BUILD_LOCK)
        load = self.wait_quiet(self.args.wait_quiet)
        self.results["meta"] = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": platform.node(), "nproc": os.cpu_count(), "cpu": cpu_model(),
            "mode": "quick" if self.quick else "full", "rounds": self.rounds, "duration_s": self.duration,
            "workers": self.args.workers, "idle_conns": self.idle_conns,
            "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
            "foreign_cpus_at_start": round(load, 2),
        }
        measure_start = time.monotonic()
        try:
            self.start()
            self.results["meta"]["versions"] = versions(self.holdfast_bin)
            self.results["meta"]["targets"] = list(self.targets)
            if "holdfast" in self.targets:
                self.results["meta"]["holdfast_max_idle"] = self.holdfast_setting("max_idle")
            log("targets: %s (work dir %s)" % (", ".join(self.targets), self.workdir))
            phases = [(self.throughput, self.args.skip_throughput), (self.idle_memory, self.args.skip_idle),
                      (self.race, self.args.skip_race), (self.failover, self.args.skip_failover),
                      (self.reload, self.args.skip_reload), (self.instructions, self.args.skip_instructions)]
            for phase, skip in phases:
                if skip:
                    continue
                try:
                    phase()
                except Exception as e:   # report what was measured and why the rest is missing
                    self.note("the %s phase failed: %s: %s" % (phase.__name__, type(e).__name__, e))
        finally:
            self.stop()
        if build_busy():
            self.note("a build was running when the benchmark ended; numbers may be disturbed")
        if self.holdfast_bin:
            try:
                with open(self.holdfast_source, "rb") as f:
                    now = hashlib.sha256(f.read()).hexdigest()[:12]
            except OSError:
                now = None
            if now != self.results["meta"]["versions"].get("holdfast_sha256"):
                self.note("%s was rebuilt during the run; measured a copy taken at the start (sha256 %s)" %
                          (self.holdfast_source, self.results["meta"]["versions"].get("holdfast_sha256")))
        if self.retried:
            self.note("%d timed runs were disturbed by other processes and run again" % self.retried)
        if self.disturbed:
            runs = sum(len(x["runs"]) for t in self.results.get("throughput", {}).values() for x in t.values())
            self.note("other processes used more than 0.15 CPU during %d of %d timed runs (target test CPUs: %s); "
                      "those numbers are disturbed" % (len(self.disturbed), runs, "; ".join(self.disturbed[:8])))
        self.results["notes"] = self.notes
        self.results["meta"]["seconds"] = round(time.monotonic() - started)
        self.results["meta"]["measuring_seconds"] = round(time.monotonic() - measure_start)
        out = self.args.out
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1, default=str)
        png = self.chart(out)
        md = self.markdown()
        if png:
            md += "\n![throughput, proxy CPU and p99 per target, 13 B and 64 KiB](bench.png)\n"
        with open(os.path.join(out, "results.md"), "w") as f:
            f.write(md)
        print(md)
        log("wrote %s/results.md, results.json%s in %d s" %
            (out, ", bench.png" if png else "", self.results["meta"]["seconds"]))
        if not self.args.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "idle-client":
        ap = argparse.ArgumentParser(prog="bench.py idle-client")
        ap.add_argument("--port", type=int, required=True)
        ap.add_argument("--conns", type=int, default=10000)
        ap.add_argument("--path", default="/small")
        ap.add_argument("--limit", type=float, default=90)
        return idle_client_main(ap.parse_args(argv[1:]))
    ap = argparse.ArgumentParser(description="Benchmark holdfast against nginx, HAProxy and the backend direct.")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 3 s, no 64 KiB 1-connection run, race of 20+20 requests, "
                    "failover runs of 20 s, 6 reloads per proxy (about 6 minutes); the default is 5 rounds of "
                    "10 s, a race of 60+60, failover runs of 60 s and 20 reloads (about 24 minutes)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes/threads of every proxy")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench"), help="output directory")
    ap.add_argument("--targets", default="holdfast,nginx,haproxy,direct", help="comma-separated subset to measure")
    ap.add_argument("--rounds", type=int, help="override the number of rounds")
    ap.add_argument("--duration", type=int, help="override seconds per wrk run")
    ap.add_argument("--idle-conns", type=int, help="idle client connections for the memory test")
    ap.add_argument("--holdfast", help="holdfast binary (default build/holdfast)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-idle", action="store_true")
    ap.add_argument("--skip-race", action="store_true")
    ap.add_argument("--skip-failover", action="store_true")
    ap.add_argument("--skip-reload", action="store_true",
                    help="skip the live-reload row (20 reloads under load per proxy; 6 with --quick)")
    ap.add_argument("--skip-instructions", action="store_true",
                    help="skip holdfast's instructions per request (perf stat, else callgrind)")
    ap.add_argument("--wait-quiet", type=int, default=300,
                    help="seconds to wait at start for other processes to leave the CPUs (default 300)")
    ap.add_argument("--keep-workdir", action="store_true", help="keep configs and logs of the run")
    args = ap.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.out = os.path.abspath(args.out)

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))    # inherited by the proxies
    try:
        return Bench(args).main()
    finally:
        Proc.stop_all()


if __name__ == "__main__":
    sys.exit(main())
