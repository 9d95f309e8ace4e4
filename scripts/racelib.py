#!/usr/bin/env python3
"""The keep-alive race, reproduced on loopback.

A backend closes an idle keep-alive connection after its timeout T, but its
FIN needs time to reach the proxy. A request that the proxy sends on that
connection in the meantime is lost: the backend has already decided to close
and never answers it. Across a real network this window is a round trip or
more; here it is made 250 ms wide so that it can be hit on purpose.

RaceBackend plays such a backend: it answers requests that arrive within T of
the previous response, drops (reads, never answers) a request that arrives
later, and closes the connection 250 ms after that. An idle connection that
sees no request at all is closed at T + 250 ms, the moment its FIN would
reach the peer.

run_race() is the client: one persistent connection to the proxy, pauses
swept across T, then a steady phase well below T, counting failures per
method and phase.

Python 3 standard library only. Used by scripts/bench and runnable alone:

    python3 scripts/racelib.py backend --port 0 --timeout 1 [--advertise]
    python3 scripts/racelib.py client --port N [--timeout 1]
"""

import argparse
import json
import select
import signal
import socket
import sys
import threading
import time

FIN_DELAY = 0.25          # how late the backend's FIN reaches the peer
ANSWER_WAIT = 5.0         # a client request with no answer by then has failed
MAX_HEAD = 64 * 1024


def _format_seconds(t):
    return str(int(t)) if float(t).is_integer() else ("%g" % t)


def _parse_head(raw):
    """Returns (start_line, {lower-case name: value}) of a message head."""
    lines = raw.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return lines[0], fields


class RaceBackend:
    """A threaded HTTP/1.1 backend whose keep-alive FIN arrives late.

    Counters are read under `lock` (or through `snapshot()`):
      connections  TCP connections accepted
      answered     requests answered
      dropped      requests read and dropped because they came after T
      idle_closed  connections closed at T + 250 ms with no request
      executions   X-Request-Id -> [method, times answered]
    """

    def __init__(self, timeout=1.0, advertise=False, host="127.0.0.1", port=0, fin_delay=FIN_DELAY):
        self.timeout = float(timeout)
        self.advertise = advertise
        self.fin_delay = float(fin_delay)   # 0: the FIN leaves at T, as from a backend on the same host
        self.lock = threading.Lock()
        self.connections = 0
        self.answered = 0
        self.dropped = 0
        self.idle_closed = 0
        self.executions = {}
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(512)
        self.host = host
        self.port = self._listener.getsockname()[1]
        self._threads = []
        self._conns = set()

    # -- life cycle -----------------------------------------------------

    def start(self):
        t = threading.Thread(target=self._accept_loop, name="race-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stopping.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(timeout=2)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- counters -------------------------------------------------------

    def snapshot(self):
        with self.lock:
            posts = {k: v[1] for k, v in self.executions.items() if v[0] == "POST"}
            return {
                "connections": self.connections,
                "answered": self.answered,
                "dropped": self.dropped,
                "idle_closed": self.idle_closed,
                "post_executions": sum(posts.values()),
                "posts_executed_twice": sorted(k for k, n in posts.items() if n > 1),
            }

    def post_executions(self, request_id):
        with self.lock:
            entry = self.executions.get(request_id)
            return entry[1] if entry and entry[0] == "POST" else 0

    # -- serving --------------------------------------------------------

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                r, _, _ = select.select([self._listener], [], [], 0.2)
                if not r:
                    continue
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self._conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)

    def _response(self, close):
        body = b"ok\n"
        head = [
            "HTTP/1.1 200 OK",
            "Content-Type: text/plain",
            "Content-Length: %d" % len(body),
        ]
        if close:
            head.append("Connection: close")
        elif self.advertise:
            head.append("Connection: keep-alive")
            head.append("Keep-Alive: timeout=%s" % _format_seconds(self.timeout))
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    def _serve(self, conn):
        try:
            self._serve_connection(conn)
        except OSError:
            pass
        finally:
            with self.lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _serve_connection(self, conn):
        buf = b""
        last_response = time.monotonic()   # idle clock starts at accept
        request_start = None                # when the first byte of the pending request arrived
        close_at = None                     # set once the backend has decided to close
        while not self._stopping.is_set():
            now = time.monotonic()
            deadline = close_at if close_at is not None else last_response + self.timeout + self.fin_delay
            if now >= deadline:
                if close_at is None:
                    with self.lock:
                        self.idle_closed += 1
                self._drain_and_close(conn)
                return
            r, _, _ = select.select([conn], [], [], min(deadline - now, 0.2))
            if not r:
                continue
            data = conn.recv(65536)
            if not data:
                return
            arrived = time.monotonic()
            if close_at is not None:
                continue                    # already decided to close: discard
            if not buf:
                request_start = arrived
            buf += data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        return
                    break
                start_line, fields = _parse_head(buf[:end])
                length = int(fields.get("content-length", "0") or 0)
                total = end + 4 + length
                if len(buf) < total:
                    break
                buf = buf[total:]
                method = start_line.split(" ", 1)[0].upper()
                if request_start - last_response >= self.timeout:
                    # The backend already decided to close; this request is lost.
                    with self.lock:
                        self.dropped += 1
                    close_at = arrived + self.fin_delay
                    buf = b""
                    break
                close = fields.get("connection", "").lower() == "close"
                request_id = fields.get("x-request-id")
                with self.lock:
                    self.answered += 1
                    if request_id:
                        entry = self.executions.setdefault(request_id, [method, 0])
                        entry[1] += 1
                conn.sendall(self._response(close))
                last_response = time.monotonic()
                request_start = arrived if buf else None
                if close:
                    self._drain_and_close(conn)
                    return

    @staticmethod
    def _drain_and_close(conn):
        # Read what is pending so that close() sends a FIN, not a reset.
        try:
            conn.setblocking(False)
            while conn.recv(65536):
                pass
        except OSError:
            pass
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# -- client --------------------------------------------------------------

class _Conn:
    """One persistent client connection to the proxy."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.sock = None
        self.buf = b""
        self.opened = 0

    def ensure(self):
        if self.sock is not None and self._closed_by_peer():
            self.close()
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=ANSWER_WAIT)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
            self.opened += 1

    def _closed_by_peer(self):
        # A proxy may close an idle client connection; that is not the race
        # under test, so look before sending and reconnect if it did.
        try:
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                return False
            data = self.sock.recv(65536, socket.MSG_PEEK)
            return not data
        except OSError:
            return True

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def exchange(self, request, deadline):
        """Sends one request, reads one response. Returns (status, keep)."""
        self.sock.sendall(request)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._recv(deadline)
        start_line, fields = _parse_head(self.buf[:end])
        self.buf = self.buf[end + 4:]
        parts = start_line.split(" ")
        status = int(parts[1])
        keep = fields.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
        if "chunked" in fields.get("transfer-encoding", "").lower():
            self._read_chunked(deadline)
        elif "content-length" in fields:
            length = int(fields["content-length"])
            while len(self.buf) < length:
                self._recv(deadline)
            self.buf = self.buf[length:]
        else:
            keep = False                   # body ends at close; not expected here
        return status, keep

    def _read_chunked(self, deadline):
        while True:
            while b"\r\n" not in self.buf:
                self._recv(deadline)
            line, _, rest = self.buf.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            while len(rest) < size + 2:
                self.buf = line + b"\r\n" + rest
                self._recv(deadline)
                line, _, rest = self.buf.partition(b"\r\n")
            self.buf = rest[size + 2:]
            if size == 0:
                return                    # no trailers expected

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no answer within %.0fs" % ANSWER_WAIT)
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionResetError("connection closed before a full response")
        self.buf += data


def _request(method, host, request_id):
    lines = ["%s /race HTTP/1.1" % method, "Host: %s" % host, "X-Request-Id: %s" % request_id]
    body = b""
    if method == "POST":
        body = b'{"order":"' + request_id.encode() + b'"}'
        lines += ["Content-Type: application/json", "Content-Length: %d" % len(body)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def let_backend_close_once(proxy_host, proxy_port, T=1.0):
    """One request through the proxy, then an idle pause long enough for the
    backend to close the proxy's upstream connection (T plus the late FIN):
    what a proxy can learn from that close, it has learned afterwards."""
    conn = _Conn(proxy_host, proxy_port)
    try:
        conn.ensure()
        conn.exchange(_request("GET", proxy_host, "learn-%x" % int(time.time() * 1000)),
                      time.monotonic() + ANSWER_WAIT)
    except (OSError, ValueError, IndexError):
        pass
    finally:
        conn.close()
    time.sleep(float(T) + FIN_DELAY + 0.25)


def run_race(proxy_host, proxy_port, T=1.0, methods=("GET", "POST"), n_sweep=60, n_steady=60,
             tag=None, shard=(0, 1)):
    """Runs the race through a proxy and returns the counts.

    For each method: n_sweep requests whose preceding pause sweeps linearly
    from 0.9T to 1.1T, then n_steady requests after pauses of 0.3T, all on one
    persistent connection (reopened only when the proxy closes it). A failure
    is a non-2xx status, a reset or close before the answer, or no answer in
    5 s. Time is bounded by roughly n_sweep*1.1T + n_steady*0.3T per method
    plus 5 s per failure. `shard=(k, n)` runs only every n-th sweep pause from
    the k-th, so that n clients (each behind its own proxy) share one sweep.
    """
    T = float(T)
    tag = tag or "%x" % int(time.time() * 1000)
    result = {"proxy": "%s:%d" % (proxy_host, proxy_port), "timeout": T, "methods": {}}
    started = time.monotonic()
    for method in methods:
        conn = _Conn(proxy_host, proxy_port)
        phases = {}
        plan = [("sweep", 0.9 * T + 0.2 * T * i / max(n_sweep - 1, 1)) for i in range(n_sweep)][shard[0]::shard[1]]
        plan += [("steady", 0.3 * T)] * n_steady
        try:
            conn.ensure()
            conn.exchange(_request("GET", proxy_host, "%s-warm-%s" % (tag, method)),
                          time.monotonic() + ANSWER_WAIT)          # opens the upstream connection
        except (OSError, ValueError, IndexError):
            conn.close()
        for i, (phase, pause) in enumerate(plan):
            p = phases.setdefault(phase, {"sent": 0, "ok": 0, "failed": 0, "kinds": {}})
            time.sleep(pause)
            request_id = "%s-%s-%d" % (tag, method, i)
            kind = None
            try:
                conn.ensure()
                status, keep = conn.exchange(_request(method, proxy_host, request_id),
                                             time.monotonic() + ANSWER_WAIT)
                if not 200 <= status < 300:
                    kind = str(status)
                if not keep:
                    conn.close()
            except socket.timeout:
                kind = "timeout"
                conn.close()
            except (OSError, ValueError, IndexError):
                kind = "reset"
                conn.close()
            p["sent"] += 1
            if kind is None:
                p["ok"] += 1
            else:
                p["failed"] += 1
                p["kinds"][kind] = p["kinds"].get(kind, 0) + 1
        conn.close()
        result["methods"][method] = {
            "phases": phases,
            "failed": sum(p["failed"] for p in phases.values()),
            "sent": sum(p["sent"] for p in phases.values()),
            "client_connections": conn.opened,
        }
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backend", help="serve until killed; prints the port")
    b.add_argument("--port", type=int, default=0)
    b.add_argument("--timeout", type=float, default=1.0)
    b.add_argument("--advertise", action="store_true", help="send Keep-Alive: timeout=T")
    c = sub.add_parser("client", help="run the race through a proxy; prints JSON")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--timeout", type=float, default=1.0)
    c.add_argument("--methods", default="GET,POST")
    c.add_argument("--sweep", type=int, default=60)
    c.add_argument("--steady", type=int, default=60)
    args = ap.parse_args(argv)
    if args.cmd == "backend":
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        backend = RaceBackend(args.timeout, args.advertise, port=args.port).start()
        print(backend.port, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            backend.stop()
            print(json.dumps(backend.snapshot()), file=sys.stderr)
        return 0
    result = run_race(args.host, args.port, args.timeout, tuple(args.methods.split(",")),
                      args.sweep, args.steady)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
