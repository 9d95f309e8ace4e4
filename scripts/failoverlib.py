#!/usr/bin/env python3
"""Failover under load: keep-alive clients through a proxy while one of two
backends is SIGKILLed and restarted, every failure counted by request id.

Used by tests/integration/test_failover.py (short run) and scripts/bench (the
60 s row). Standard library only; everything on 127.0.0.1.

  backend      `failoverlib.py backend --port P --name N --log FILE` is one
               backend process: HTTP/1.1 keep-alive, one thread per
               connection; it appends each request's X-Request-Id to FILE
               (O_APPEND, one write per line) once the whole request is read
               and before answering, so the log of a killed instance lists
               exactly the requests that reached it.
  Backend      starts, SIGKILLs and restarts one such process on a fixed port;
               each start logs to its own file.
  run_load()   `clients` threads, each on its own keep-alive connection,
               alternating GET and POST (with a body), each request with a
               unique id, while the victim is killed every `kill_every` s.

A failure (anything but a 200 carrying the request's own id, or a broken
connection) is "in flight" when a killed instance of the victim logged its id,
or when the client had sent it before a kill and was still waiting when the
kill came (the backend's kernel had it, unread, in the dead process's
buffers). Those may fail. Every other failure is a request that never reached
a killed backend, which a proxy with failover must not lose.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

LOOPBACK = "127.0.0.1"
HERE = os.path.abspath(__file__)


# --------------------------------------------------------------------------- backend process

def _serve_conn(conn, name, log_fd):
    buf = bytearray()
    conn.settimeout(60)
    for _ in range(10_000_000):
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            if len(buf) > 1 << 20:
                return
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        length = int(fields.get("content-length", "0"))
        buf = bytearray(rest)
        while len(buf) < length:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        del buf[:length]
        rid = fields.get("x-request-id", "-")
        os.write(log_fd, (rid + "\n").encode())
        body = f"{name} {rid}\n".encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def backend_main(args):
    log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((LOOPBACK, args.port))
    srv.listen(1024)
    print("READY", flush=True)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_conn_thread, args=(conn, args.name, log_fd), daemon=True).start()


def _conn_thread(conn, name, log_fd):
    try:
        _serve_conn(conn, name, log_fd)
    except OSError:
        pass
    finally:
        conn.close()


class Backend:
    """One backend process on a fixed port; each start logs to its own file."""

    def __init__(self, name, port, workdir):
        self.name, self.port, self.workdir = name, port, workdir
        self.proc = None
        self.logs = []          # (path, killed)
        self.starts = 0

    def start(self, timeout=10.0):
        self.starts += 1
        path = os.path.join(self.workdir, f"{self.name}-{self.starts}.log")
        self.proc = subprocess.Popen([sys.executable, HERE, "backend", "--port", str(self.port), "--name", self.name,
                                      "--log", path], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.logs.append([path, False])
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and not line:
            line = self.proc.stdout.readline()
        if b"READY" not in line:
            raise RuntimeError(f"backend {self.name} did not start on port {self.port}")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc.stdout.close()
            self.logs[-1][1] = True

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc.stdout.close()

    def ids(self, killed_only=False):
        out = set()
        for path, killed in self.logs:
            if killed_only and not killed:
                continue
            try:
                with open(path) as f:
                    out.update(line.strip() for line in f if line.strip())
            except FileNotFoundError:
                pass
        return out


def free_port():
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------- clients

def _read_response(sock, buf):
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before a response")
        buf += data
        if len(buf) > 1 << 20:
            raise ConnectionError("head too long")
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, close = 0, False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
        if k.strip().lower() == "connection" and "close" in v.lower():
            close = True
    body = bytearray(rest)
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed mid-body")
        body += data
    buf[:] = body[length:]
    return status, bytes(body[:length]), close


def _client(port, index, stop, results, lock, body_size):
    sock, buf = None, bytearray()
    payload = b"p" * body_size
    for n in range(10_000_000):
        if stop.is_set():
            break
        rid = f"c{index}-{n}"
        method = "POST" if n % 2 else "GET"
        req = f"{method} /r?id={rid} HTTP/1.1\r\nHost: failover\r\nX-Request-Id: {rid}\r\n"
        req += f"Content-Length: {len(payload)}\r\n\r\n" if method == "POST" else "\r\n"
        data = req.encode() + (payload if method == "POST" else b"")
        t0 = time.monotonic()
        try:
            if sock is None:
                sock = socket.create_connection((LOOPBACK, port), timeout=10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = bytearray()
            sock.sendall(data)
            status, body, close = _read_response(sock, buf)
            ok = status == 200 and body.split()[-1:] == [rid.encode()]
            outcome = "ok" if ok else f"status {status}"
            if close:
                sock.close()
                sock = None
        except (OSError, ConnectionError, ValueError, IndexError) as e:
            outcome = f"error {type(e).__name__}"
            if sock is not None:
                sock.close()
            sock = None
        with lock:
            results.append((rid, method, outcome, t0, time.monotonic()))
    if sock is not None:
        sock.close()


def run_load(proxy_port, victim, duration=12.0, kill_every=3.0, down_for=0.5, clients=4, body_size=2048,
             others=()):
    """Runs the load; returns a dict of figures. `victim` is a started Backend."""
    stop, lock, results = threading.Event(), threading.Lock(), []
    threads = [threading.Thread(target=_client, args=(proxy_port, i, stop, results, lock, body_size), daemon=True)
               for i in range(clients)]
    for t in threads:
        t.start()
    t_start = time.monotonic()
    kills = 0
    kill_times = []
    next_kill = t_start + kill_every
    while time.monotonic() < t_start + duration:
        time.sleep(max(0.0, min(next_kill, t_start + duration) - time.monotonic()))
        if time.monotonic() >= next_kill and time.monotonic() < t_start + duration:
            k0 = time.monotonic()
            victim.kill()
            # From the signal to the reaped process: the window in which it dies.
            kill_times.append((k0, time.monotonic()))
            kills += 1
            time.sleep(down_for)
            victim.start()
            next_kill += kill_every
    stop.set()
    for t in threads:
        t.join(15)
    in_flight_ids = victim.ids(killed_only=True)
    failures = [r for r in results if r[2] != "ok"]

    def was_in_flight(r):
        # The killed process logged it, or the client had sent it before a kill
        # and was still waiting when the kill came (it sat in the dead process's
        # socket buffers: the backend's kernel had accepted it).
        return r[0] in in_flight_ids or any(r[3] <= k1 and k0 <= r[4] for k0, k1 in kill_times)

    in_flight = [r for r in failures if was_in_flight(r)]
    lost = [r for r in failures if not was_in_flight(r)]
    return {
        "requests": len(results),
        "posts": sum(1 for r in results if r[1] == "POST"),
        "kills": kills,
        "failures": len(failures),
        "in_flight_failures": len(in_flight),
        "in_flight_logged": sum(1 for r in in_flight if r[0] in in_flight_ids),
        "lost": len(lost),
        "lost_posts": sum(1 for r in lost if r[1] == "POST"),
        "lost_examples": lost[:10],
        "seconds": time.monotonic() - t_start,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backend")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--name", required=True)
    b.add_argument("--log", required=True)
    args = ap.parse_args()
    if args.cmd == "backend":
        backend_main(args)
