"""Test harness for the holdfast integration tests (python3 standard library only).

Everything here talks to 127.0.0.1 only. Every socket operation has a timeout and
every loop is bounded, so that a broken proxy makes a test fail, never hang.

Pieces:
  Proxy             runs the real holdfast binary on a generated config (port 0).
  ScriptedBackend   a threaded TCP server; each accepted socket goes to a handler.
  KeepAliveBackend  a ready-made HTTP/1.1 backend that reports which connection
                    and which request on it served each request.
  Reader            a buffered socket reader shared by both sides.
  read_request / read_response / build_request / HttpClient
                    byte-level HTTP helpers: the tests see exactly what crossed
                    the wire.

Environment:
  HOLDFAST_BIN            path of the holdfast binary (default: <repo>/build/holdfast)
  HOLDFAST_DEMO_BACKEND   path of the demo backend (unused by most tests)
  HOLDFAST_SANITIZED=1    the binary is an ASan/UBSan build: timeouts are stretched
"""

import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
HOLDFAST_BIN = os.environ.get("HOLDFAST_BIN") or os.path.join(REPO, "build", "holdfast")
DEMO_BACKEND = os.environ.get("HOLDFAST_DEMO_BACKEND") or os.path.join(REPO, "build", "holdfast-demo-backend")
SANITIZED = os.environ.get("HOLDFAST_SANITIZED") == "1"
# Sanitized builds run several times slower; stretch waits, never tighten them.
SLOW = 3.0 if SANITIZED else 1.0

LOOPBACK = "127.0.0.1"
IO_TIMEOUT = 20.0 * SLOW          # any single socket operation
START_TIMEOUT = 10.0 * SLOW       # holdfast printing "listening on"
MAX_HEAD = 1024 * 1024            # our own parser's bound on a message head
MAX_CHUNK_LINES = 100000          # bound on chunk / trailer lines in one body

LISTENING_RE = re.compile(r"listening on (\S+):(\d+)")
ADMIN_RE = re.compile(r"admin listener on (\S+):(\d+)")
STATS_RE = re.compile(r"stats:((?:\s+[\w.\-]+=\S+)+)")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: UndefinedBehaviorSanitizer")


# --------------------------------------------------------------------------- YAML

def to_yaml(value, indent=0):
    """Block YAML for mappings; everything else as JSON flow (valid YAML 1.2)."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict) and item:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {_flow(item)}")
        return "\n".join(lines)
    return pad + _flow(value)


def _flow(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    return json.dumps(value)


def deep_merge(base, extra):
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def make_config(server_ports, upstream=None, keepalive=None, client=None, top=None, log=None):
    """A holdfast config dict with one upstream group `app` in front of server_ports.

    `upstream`, `keepalive`, `client`, `top`, `log` are merged over the defaults;
    a value of None deletes a key.
    """
    ups = {
        "servers": [{"address": f"{LOOPBACK}:{p}"} for p in server_ports],
        "connect_timeout": "2s",
        "read_timeout": "20s",
    }
    ups = deep_merge(ups, upstream)
    if keepalive:
        ups["keepalive"] = deep_merge(ups.get("keepalive", {}), keepalive)
    cfg = {
        "listen": [f"{LOOPBACK}:0"],
        "workers": 1,
        "drain_timeout": "5s",
        "client": deep_merge({"keepalive_timeout": "30s"}, client),
        "upstreams": {"app": ups},
        "log": deep_merge({"level": "info", "access": "stdout"}, log),
    }
    return deep_merge(cfg, top)


# --------------------------------------------------------------------------- proxy

class ProxyStartError(AssertionError):
    pass


class ProxyExit:
    def __init__(self, code, stderr, stdout, stats, killed, elapsed):
        self.code = code
        self.stderr = stderr
        self.stdout = stdout
        self.stats = stats
        self.killed = killed        # True when SIGKILL was needed
        self.elapsed = elapsed      # seconds from the stop signal to exit

    def sanitizer_report(self):
        text = self.stderr + self.stdout
        for marker in SANITIZER_MARKERS:
            if marker in text:
                i = text.index(marker)
                return text[max(0, i - 200): i + 3000]
        return None

    def __repr__(self):
        return f"ProxyExit(code={self.code}, killed={self.killed}, elapsed={self.elapsed:.2f}, stats={self.stats})"


def parse_stats(text):
    """The last `stats: a=1 b=2` line of the log, as a dict (ints where they parse)."""
    stats = None
    for line in text.splitlines():
        m = STATS_RE.search(line)
        if m:
            stats = {}
            for pair in m.group(1).split():
                key, _, value = pair.partition("=")
                try:
                    stats[key] = int(value)
                except ValueError:
                    try:
                        stats[key] = float(value)
                    except ValueError:
                        stats[key] = value
    return stats


class Proxy:
    """The real holdfast binary on a config (dict or YAML text), port picked by the kernel.

    Use as a context manager. On a clean exit from the `with` block it stops
    holdfast with SIGTERM and fails the test if the exit code is not 0 or a
    sanitizer reported something (set check_exit=False to skip that).
    """

    def __init__(self, config, env=None, check_exit=True, start=True, stop_timeout=None):
        self.config = config
        self.check_exit = check_exit
        self.stop_timeout = stop_timeout if stop_timeout is not None else 30.0 * SLOW
        self.env = dict(os.environ)
        if env:
            self.env.update(env)
        self._dir = tempfile.mkdtemp(prefix="holdfast-it-")
        self.config_path = os.path.join(self._dir, "holdfast.yaml")
        text = config if isinstance(config, str) else to_yaml(config) + "\n"
        with open(self.config_path, "w") as f:
            f.write(text)
        self.proc = None
        self.port = None
        self.host = None
        self._stderr = []
        self._stdout = []
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._readers = []
        self.result = None
        if start:
            self.start()

    # -- lifecycle
    def start(self):
        if not os.path.exists(HOLDFAST_BIN):
            raise ProxyStartError(f"holdfast binary not found at {HOLDFAST_BIN} (set HOLDFAST_BIN)")
        self.proc = subprocess.Popen([HOLDFAST_BIN, "-c", self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
        for stream, sink in ((self.proc.stderr, self._stderr), (self.proc.stdout, self._stdout)):
            t = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            t.start()
            self._readers.append(t)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._listening.wait(0.05):
                return self
            if self.proc.poll() is not None:
                break
        code = self.proc.poll()
        if code is None:
            self.proc.kill()
            self.proc.wait(10)
        for t in self._readers:
            t.join(5)
        raise ProxyStartError(f"holdfast did not report 'listening on' within {START_TIMEOUT:.0f}s "
                              f"(exit code {self.proc.returncode}); stderr:\n{self.stderr_text()[-4000:]}")

    def _pump(self, stream, sink):
        # Bounded by the process: readline returns b"" at EOF when holdfast exits.
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            with self._lock:
                sink.append(line)
            if not self._listening.is_set():
                m = LISTENING_RE.search(line)
                if m:
                    self.host, self.port = m.group(1), int(m.group(2))
                    self._listening.set()
        stream.close()

    @property
    def admin_port(self):
        """The admin listener's port (holdfast logs it before 'listening on'), or None."""
        m = ADMIN_RE.search(self.stderr_text())
        return int(m.group(2)) if m else None

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self):
        with self._lock:
            return "".join(self._stderr)

    def stdout_text(self):
        with self._lock:
            return "".join(self._stdout)

    def rss_kb(self):
        """VmRSS of holdfast in KiB (None once it has exited)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            return None
        return None

    def send_signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def pause(self, timeout=5.0):
        """SIGSTOP, then waits until every thread of holdfast is stopped: the
        signal is delivered asynchronously, and a worker woken by a packet in
        the meantime would still serve it."""
        self.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            states = []
            for task in os.listdir(f"/proc/{self.proc.pid}/task"):
                try:
                    with open(f"/proc/{self.proc.pid}/task/{task}/stat") as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
                except FileNotFoundError:
                    pass
            if states and all(st in ("T", "t") for st in states):
                return
            time.sleep(0.001)
        raise AssertionError("holdfast did not stop within %.1f s" % timeout)

    def wait_exit(self, timeout):
        """Waits for holdfast to exit on its own; returns the ProxyExit or None on timeout."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._collect(False, 0.0)

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Sends `sig`, waits (SIGKILL after `timeout`), returns a ProxyExit."""
        if self.result is not None:
            return self.result
        timeout = self.stop_timeout if timeout is None else timeout
        t0 = time.monotonic()
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                self.proc.kill()
                self.proc.wait(10)
        return self._collect(killed, time.monotonic() - t0)

    def _collect(self, killed, elapsed):
        if self.result is not None:
            return self.result
        for t in self._readers:
            t.join(10)
        err, out = self.stderr_text(), self.stdout_text()
        shutil.rmtree(self._dir, ignore_errors=True)
        self.result = ProxyExit(self.proc.returncode, err, out, parse_stats(err + "\n" + out), killed, elapsed)
        return self.result

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        result = self.stop()
        if exc_type is None and self.check_exit:
            report = result.sanitizer_report()
            if report:
                raise AssertionError(f"sanitizer report from holdfast:\n{report}")
            if result.killed:
                raise AssertionError(f"holdfast did not exit within {self.stop_timeout:.0f}s of SIGTERM; "
                                     f"stderr tail:\n{result.stderr[-3000:]}")
            if result.code != 0:
                raise AssertionError(f"holdfast exited with code {result.code} after SIGTERM; "
                                     f"stderr tail:\n{result.stderr[-3000:]}")
        return False


# --------------------------------------------------------------------------- bytes and parsing

class IncompleteMessage(Exception):
    """The peer closed (or reset) before a whole message arrived."""

    def __init__(self, what, partial=None, got=b""):
        super().__init__(what)
        self.partial = partial      # a Request/Response with what was parsed so far, or None
        self.got = got              # bytes of the unfinished part (head or body so far)


class ProtocolError(Exception):
    pass


class Reader:
    """Buffered reads from a socket; keeps surplus bytes for the next message."""

    def __init__(self, sock, timeout=None):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.total = 0              # bytes received from the socket, ever
        sock.settimeout(IO_TIMEOUT if timeout is None else timeout)

    def _fill(self, max_bytes=65536):
        if self.eof:
            return False
        try:
            data = self.sock.recv(max_bytes)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            data = b""
            self.reset = True
        if not data:
            self.eof = True
            return False
        self.total += len(data)
        self.buf += data
        return True

    def read_until(self, delim, limit):
        """Bytes up to and including `delim`. IncompleteMessage on EOF, ProtocolError past `limit`."""
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise ProtocolError(f"no {delim!r} within {limit} bytes")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self._fill():
                raise IncompleteMessage("EOF before %r" % delim, got=bytes(self.buf))

    def read_exact(self, n, sink=None):
        """n bytes (or passes them to sink in pieces and returns b"")."""
        parts = []
        left = n
        while left > 0:
            if not self.buf and not self._fill(min(max(left, 4096), 1 << 20)):
                raise IncompleteMessage(f"EOF with {left} of {n} bytes missing",
                                        got=b"".join(parts) if sink is None else b"")
            take = bytes(self.buf[:left])
            del self.buf[:len(take)]
            left -= len(take)
            if sink is None:
                parts.append(take)
            else:
                sink(take)
        return b"".join(parts)

    def read_to_eof(self, sink=None, limit=1 << 31):
        parts = []
        count = 0
        while True:
            if self.buf:
                take = bytes(self.buf)
                self.buf.clear()
                count += len(take)
                if sink is None:
                    parts.append(take)
                else:
                    sink(take)
                if count > limit:
                    raise ProtocolError("close-delimited body over limit")
            if not self._fill():
                break
        return b"".join(parts)

    def at_eof(self, timeout):
        """True if the peer closes (EOF or reset) within `timeout` with no further bytes;
        False on timeout; raises ProtocolError if bytes arrive instead."""
        if self.buf:
            raise ProtocolError(f"unexpected bytes: {bytes(self.buf[:200])!r}")
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            got = self._fill()
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(old)
        if got:
            raise ProtocolError(f"unexpected bytes: {bytes(self.buf[:200])!r}")
        return True


class Headers:
    """Header fields in wire order, names as received."""

    def __init__(self, items=None):
        self.items = list(items or [])

    def get_all(self, name):
        n = name.lower()
        return [v for k, v in self.items if k.lower() == n]

    def get(self, name, default=None):
        values = self.get_all(name)
        return ", ".join(values) if values else default

    def has(self, name):
        return bool(self.get_all(name))

    def names(self):
        return [k.lower() for k, _ in self.items]

    def tokens(self, name):
        """Comma-separated tokens of all `name` fields, lowercased."""
        out = []
        for v in self.get_all(name):
            out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    def __iter__(self):
        return iter(self.items)

    def __repr__(self):
        return f"Headers({self.items!r})"


def parse_head(head):
    """(start-line parts, Headers) of a head ending in CRLFCRLF."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    start = lines[0]
    items = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line!r}")
        items.append((name, value.strip(" \t")))
    return start, Headers(items)


class Message:
    def __init__(self):
        self.headers = Headers()
        self.body = b""
        self.raw_head = b""
        self.raw = b""              # head + body bytes as framed on the wire (not kept when sink is used)
        self.trailers = Headers()
        self.framing = None         # "length", "chunked", "close" or "none"
        self.chunk_exts = []        # chunk extensions seen, in order
        self.body_len = 0
        self.version = None


class Request(Message):
    def __init__(self):
        super().__init__()
        self.method = None
        self.target = None
        self.conn_index = None      # filled in by backends
        self.req_index = None

    def __repr__(self):
        return f"Request({self.method} {self.target} conn={self.conn_index} req={self.req_index})"


class Response(Message):
    def __init__(self):
        super().__init__()
        self.status = None
        self.reason = None
        self.informational = []     # 1xx responses received before this one (status codes)

    def __repr__(self):
        return f"Response({self.status} {self.reason!r} {self.headers!r} body={self.body[:80]!r})"


def _read_chunked(reader, msg, sink, raw_parts):
    for _ in range(MAX_CHUNK_LINES):
        line = reader.read_until(b"\r\n", 64 * 1024)
        if raw_parts is not None:
            raw_parts.append(line)
        size_text, _, ext = line[:-2].decode("latin-1").partition(";")
        if ext:
            msg.chunk_exts.append(ext)
        try:
            size = int(size_text.strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size line {line!r}")
        if size == 0:
            for _ in range(MAX_CHUNK_LINES):
                tline = reader.read_until(b"\r\n", 64 * 1024)
                if raw_parts is not None:
                    raw_parts.append(tline)
                if tline == b"\r\n":
                    return
                name, _, value = tline[:-2].decode("latin-1").partition(":")
                msg.trailers.items.append((name, value.strip(" \t")))
            raise ProtocolError("too many trailer lines")
        data = reader.read_exact(size, sink)
        msg.body_len += size
        if sink is None:
            raw_parts.append(data)
            msg.body += data
        crlf = reader.read_exact(2)
        if raw_parts is not None:
            raw_parts.append(crlf)
        if crlf != b"\r\n":
            raise ProtocolError(f"chunk not followed by CRLF: {crlf!r}")
    raise ProtocolError("too many chunks")


def _read_body(reader, msg, kind, sink):
    """Reads a body framed as `kind`; fills msg.body (unless sink) and msg.raw."""
    raw_parts = None if sink is not None else [msg.raw_head]
    try:
        if kind == "none":
            pass
        elif kind == "chunked":
            _read_chunked(reader, msg, sink, raw_parts)
        elif kind == "close":
            def counting_sink(piece):
                msg.body_len += len(piece)
                sink(piece)
            data = reader.read_to_eof(counting_sink if sink is not None else None)
            if sink is None:
                msg.body_len = len(data)
                msg.body = data
                raw_parts.append(data)
        else:
            n = kind
            data = reader.read_exact(n, sink)
            msg.body_len = n
            if sink is None:
                msg.body = data
                raw_parts.append(data)
    except IncompleteMessage as e:
        if sink is None and kind not in ("chunked",):
            msg.body = e.got
        e.partial = msg
        raise
    if raw_parts is not None:
        msg.raw = b"".join(raw_parts)


def _content_length(headers):
    values = headers.get_all("content-length")
    if not values:
        return None
    sizes = {v.strip() for v in ",".join(values).split(",")}
    if len(sizes) != 1:
        raise ProtocolError(f"conflicting Content-Length {values}")
    return int(sizes.pop())


def read_request(reader, on_expect_continue=None, sink=None):
    """Reads one request. Returns None on a clean EOF before its first byte.

    on_expect_continue(request) is called after the head when the request has
    `Expect: 100-continue` and a body, before the body is read.
    """
    if not reader.buf and not reader._fill():
        return None
    head = reader.read_until(b"\r\n\r\n", MAX_HEAD)
    req = Request()
    req.raw_head = head
    start, req.headers = parse_head(head)
    parts = start.split(" ")
    if len(parts) != 3:
        raise ProtocolError(f"bad request line {start!r}")
    req.method, req.target, req.version = parts
    te = req.headers.tokens("transfer-encoding")
    if te:
        kind = "chunked" if te[-1] == "chunked" else None
        if kind is None:
            raise ProtocolError(f"request Transfer-Encoding {te}")
    else:
        cl = _content_length(req.headers)
        kind = cl if cl else "none"
    if kind != "none" and on_expect_continue and "100-continue" in req.headers.tokens("expect"):
        on_expect_continue(req)
    _read_body(reader, req, kind, sink)
    req.framing = "length" if isinstance(kind, int) else kind
    return req


def read_response(reader, method="GET", sink=None, keep_informational=False):
    """Reads one final response (1xx responses before it are recorded in .informational,
    or returned themselves when keep_informational)."""
    informational = []
    for _ in range(20):
        head = reader.read_until(b"\r\n\r\n", MAX_HEAD)
        resp = Response()
        resp.raw_head = head
        start, resp.headers = parse_head(head)
        parts = start.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ProtocolError(f"bad status line {start!r}")
        resp.version = parts[0]
        resp.status = int(parts[1])
        resp.reason = parts[2] if len(parts) > 2 else ""
        if 100 <= resp.status < 200:
            if keep_informational:
                resp.framing = "none"
                resp.raw = head
                return resp
            informational.append(resp.status)
            continue
        resp.informational = informational
        te = resp.headers.tokens("transfer-encoding")
        if method == "HEAD" or resp.status in (204, 304):
            kind = "none"
        elif te:
            kind = "chunked" if te[-1] == "chunked" else "close"
        else:
            cl = _content_length(resp.headers)
            kind = cl if cl is not None else "close"
        resp.framing = "length" if isinstance(kind, int) else kind
        _read_body(reader, resp, kind, sink)
        return resp
    raise ProtocolError("more than 20 informational responses")


def build_request(method="GET", target="/", headers=None, body=None, version="HTTP/1.1",
                  host="holdfast.test", chunked=False, chunk_size=None):
    """Raw request bytes. `headers` is a list of (name, value); Host comes first unless
    host is None. Content-Length is added for a body unless the headers frame it."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    if body is not None and not chunked and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    if chunked and "transfer-encoding" not in names:
        headers.append(("Transfer-Encoding", "chunked"))
    for k, v in headers:
        lines.append(f"{k}: {v}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is None:
        return head
    if chunked:
        return head + encode_chunked(body, chunk_size or max(1, len(body)))
    return head + body


def encode_chunked(body, chunk_size, ext=None, trailers=None):
    out = []
    for i in range(0, len(body), chunk_size):
        piece = body[i:i + chunk_size]
        e = f";{ext}" if ext else ""
        out.append(f"{len(piece):x}{e}\r\n".encode() + piece + b"\r\n")
    out.append(b"0\r\n")
    for k, v in trailers or []:
        out.append(f"{k}: {v}\r\n".encode("latin-1"))
    out.append(b"\r\n")
    return b"".join(out)


def wait_for(predicate, timeout, msg="condition not met"):
    """Polls `predicate` until it is true or `timeout` seconds pass; fails the test then."""
    if not wait_until(predicate, timeout):
        raise AssertionError(f"{msg} within {timeout:.1f}s")


def connect(port, timeout=None):
    s = socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT if timeout is None else timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class HttpClient:
    """One client connection to the proxy, kept across requests."""

    def __init__(self, port, timeout=None):
        self.port = port
        self.sock = connect(port, timeout)
        self.reader = Reader(self.sock, timeout)

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", target="/", headers=None, body=None, **kw):
        self.send(build_request(method, target, headers, body, **kw))
        return self.read_response(method)

    def read_response(self, method="GET", sink=None, keep_informational=False):
        return read_response(self.reader, method, sink, keep_informational)

    def wait_closed(self, timeout=5.0):
        """True if the proxy closes this connection within `timeout` (bounded)."""
        return self.reader.at_eof(timeout * SLOW)

    def is_open(self, wait=0.3):
        """True if the connection is neither closed nor sending anything after `wait`."""
        return not self.reader.at_eof(wait)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def get(port, target="/", headers=None, **kw):
    """One request on a fresh connection; returns the Response."""
    with HttpClient(port) as c:
        return c.request("GET", target, headers, **kw)


def send_raw(sock, data, piece=None, pause=0.0):
    """Sends raw bytes, optionally in pieces of `piece` bytes with `pause` seconds between
    them (each piece its own TCP segment with TCP_NODELAY), to exercise incremental parsing."""
    if not piece:
        sock.sendall(data)
        return
    for i in range(0, len(data), piece):
        sock.sendall(data[i:i + piece])
        if pause:
            time.sleep(pause)


# --------------------------------------------------------------------------- backends

class ScriptedBackend:
    """A threaded TCP server on 127.0.0.1:0. Each accepted socket is passed to
    handler(conn, index) in its own thread; index counts from 1. The socket is
    closed when the handler returns. Exceptions in handlers are kept in .errors."""

    def __init__(self, handler=None, backlog=128, conn_timeout=None, host=LOOPBACK, port=0):
        # host: another loopback address (127.0.0.2, ...) for servers found by DNS.
        self.handler = handler or self.handle
        self.conn_timeout = IO_TIMEOUT if conn_timeout is None else conn_timeout
        self.lock = threading.Lock()
        self.accepted = 0
        self.errors = []
        self.bytes_received = 0
        self._conns = []
        self._threads = []
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    def handle(self, conn, index):
        raise NotImplementedError

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.sock], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(self.conn_timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.accepted += 1
                index = self.accepted
                self._conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn, index), daemon=True)
            with self.lock:
                self._threads.append(t)
            t.start()

    def _run(self, conn, index):
        try:
            self.handler(conn, index)
        except Exception as e:  # kept for assertions; a handler failing is a test-visible fact
            if not self._stop.is_set():
                with self.lock:
                    self.errors.append((index, repr(e)))
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close_listener(self):
        """Stops listening at once, from any thread: new connects are refused from here on
        (shutdown first, as a plain close waits for the accept loop's select to let go)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def count_received(self, n):
        with self.lock:
            self.bytes_received += n

    def stop(self):
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(2)
        self._accept_thread.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class CountingReader(Reader):
    """A Reader that reports every received byte to its backend."""

    def __init__(self, sock, backend):
        super().__init__(sock, backend.conn_timeout)
        self.backend = backend

    def _fill(self, max_bytes=65536):
        before = self.total
        got = super()._fill(max_bytes)
        self.backend.count_received(self.total - before)
        return got


def parse_query(target):
    _, _, query = target.partition("?")
    out = {}
    for part in query.split("&"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


class KeepAliveBackend(ScriptedBackend):
    """An HTTP/1.1 backend that keeps connections open and answers every request 200
    with body `NAME conn=C req=R METHOD TARGET\\n` (C: connection serial from 1, R:
    request number on that connection from 1), padded with 'x' to body_size, and
    headers X-Backend, X-Backend-Connection, X-Backend-Request.

    Options:
      extra_headers       list of (name, value) added to every response
      close_on            global request numbers (1-based) answered with Connection: close
      conn_max_requests   answer the Nth request of each connection with Connection: close
      body_size           pad the body to this many bytes
      mode                "length" (Content-Length), "chunked" or "close" (close-delimited)
      idle_close          close a connection idle this many seconds (like a real server)
      chunk_ext, trailers chunked mode: extension on each chunk, trailer fields
      send_100            answer Expect: 100-continue with a 100 before reading the body
    Per request, the target may carry `?delay=MS` (wait before answering) and
    `?wait=NAME` (wait until the test calls release(NAME)), and `/status/NNN` paths
    answer with that status (204 and 304 without a body).
    Every request is recorded in .requests (Request objects with conn_index and
    req_index; body kept).
    """

    def __init__(self, name="backend", extra_headers=(), close_on=(), conn_max_requests=None,
                 body_size=None, mode="length", idle_close=None, chunk_ext=None, trailers=None,
                 send_100=True, response_hook=None, **kw):
        self.name = name
        self.extra_headers = list(extra_headers)
        self.close_on = set(close_on)
        self.conn_max_requests = conn_max_requests
        self.body_size = body_size
        self.mode = mode
        self.idle_close = idle_close
        self.chunk_ext = chunk_ext
        self.trailers = trailers
        self.send_100 = send_100
        self.response_hook = response_hook
        self.requests = []
        self.request_seen = threading.Condition()
        self.closed_conns = []      # (conn_index, reason) when a connection ends
        self._gates = {}
        super().__init__(None, **kw)

    def handle(self, conn, index):
        reader = CountingReader(conn, self)
        for req_no in range(1, 1_000_000):
            if self.idle_close is not None:
                if not reader.buf:
                    r, _, _ = select.select([conn], [], [], self.idle_close)
                    if not r:
                        self._ended(index, "idle_close")
                        return
            try:
                req = read_request(reader, self._continue(conn))
            except IncompleteMessage:
                self._ended(index, "eof_mid_request")
                return
            except socket.timeout:
                self._ended(index, "timeout")
                return
            if req is None:
                self._ended(index, "reset" if reader.reset else "eof")
                return
            req.conn_index, req.req_index = index, req_no
            with self.request_seen:
                self.requests.append(req)
                global_no = len(self.requests)
                self.request_seen.notify_all()
            query = parse_query(req.target)
            if query.get("delay"):
                time.sleep(int(query["delay"]) / 1000.0)
            if query.get("wait"):
                self.gate(query["wait"]).wait(30 * SLOW)
            close = global_no in self.close_on or (self.conn_max_requests and req_no >= self.conn_max_requests)
            data = self.response_bytes(req, index, req_no, close)
            if self.response_hook:
                data, close = self.response_hook(req, data, close)
            try:
                conn.sendall(data)
            except OSError:
                self._ended(index, "send_error")
                return
            if close or self.mode == "close":
                self._ended(index, "closed_by_backend")
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                # Linger briefly so our FIN is not turned into a reset by unread bytes.
                conn.settimeout(0.5)
                try:
                    conn.recv(65536)
                except OSError:
                    pass
                return

    def _continue(self, conn):
        if not self.send_100:
            return None

        def cb(req):
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        return cb

    def _ended(self, index, reason):
        with self.lock:
            self.closed_conns.append((index, reason))

    def response_bytes(self, req, conn_index, req_no, close):
        status, reason = 200, "OK"
        path = req.target.split("?")[0]
        if path.startswith("/status/"):
            try:
                status = int(path.split("/")[2])
                reason = {204: "No Content", 304: "Not Modified", 404: "Not Found"}.get(status, "Status")
            except ValueError:
                pass
        body = f"{self.name} conn={conn_index} req={req_no} {req.method} {req.target}\n".encode()
        if self.body_size and len(body) < self.body_size:
            body += b"x" * (self.body_size - len(body))
        lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain", f"X-Backend: {self.name}",
                 f"X-Backend-Connection: {conn_index}", f"X-Backend-Request: {req_no}"]
        lines += [f"{k}: {v}" for k, v in self.extra_headers]
        no_body = status in (204, 304) or req.method == "HEAD"
        if close:
            lines.append("Connection: close")
        if status == 304:
            lines.append("ETag: \"v1\"")
            lines.append(f"Content-Length: {len(body)}")
            body = b""
        elif status == 204:
            body = b""
        elif self.mode == "length":
            lines.append(f"Content-Length: {len(body)}")
        elif self.mode == "chunked":
            lines.append("Transfer-Encoding: chunked")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if no_body:
            return head
        if self.mode == "chunked":
            size = max(1, (len(body) + 2) // 3)
            return head + encode_chunked(body, size, self.chunk_ext, self.trailers)
        return head + body

    def gate(self, name):
        """The event that requests with `?wait=name` wait for (at most 30 s) before answering."""
        with self.lock:
            return self._gates.setdefault(name, threading.Event())

    def release(self, name):
        self.gate(name).set()

    def wait_requests(self, n, timeout=10.0):
        """Waits until at least n requests were seen; returns the count."""
        deadline = time.monotonic() + timeout * SLOW
        with self.request_seen:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.request_seen.wait(left)
            return len(self.requests)

    def wait_closed_conn(self, index, timeout=10.0):
        """Waits until connection `index` ended; returns its reason or None."""
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            with self.lock:
                for i, reason in self.closed_conns:
                    if i == index:
                        return reason
            time.sleep(0.02)
        return None


# --------------------------------------------------------------------------- misc

def closed_port():
    """A loopback port on which nothing listens (connect is refused)."""
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pattern_block(i, size=65536):
    """Deterministic, position-dependent data for streamed bodies."""
    seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
    return (seed * (size // len(seed) + 1))[:size]


def wait_until(predicate, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --------------------------------------------------------------------------- test case base



def race_handler(seen, before_close=None):
    """A ScriptedBackend handler for the keep-alive race: every request is answered 200
    with body `conn=N`, except the second request on connection 1, which is read in full
    and then met with a close and no answer (after before_close(), if given). Each request
    is appended to `seen` as (connection index, Request)."""

    def handler(conn, index):
        reader = Reader(conn)
        for n in range(1, 100):
            req = read_request(reader)
            if req is None:
                return
            seen.append((index, req))
            if index == 1 and n == 2:
                if before_close:
                    before_close()
                conn.shutdown(socket.SHUT_RDWR)
                return
            body = b"conn=%d" % index
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    return handler


def backend_conn(resp):
    """The X-Backend-Connection serial of a KeepAliveBackend response, as int."""
    value = resp.headers.get("X-Backend-Connection")
    return int(value) if value is not None else None


class ProxyTestCase(unittest.TestCase):
    """Starts backends and holdfast with cleanups registered in the right order
    (holdfast stops first, with its exit checked, then the backends)."""

    def backend(self, cls=KeepAliveBackend, *args, **kw):
        b = cls(*args, **kw)
        self.addCleanup(b.stop)
        return b

    def scripted(self, handler, **kw):
        b = ScriptedBackend(handler, **kw)
        self.addCleanup(b.stop)
        return b

    def proxy(self, config, **kw):
        p = Proxy(config, **kw)
        self.addCleanup(p.__exit__, None, None, None)
        return p

    def client(self, port, timeout=None):
        c = HttpClient(port, timeout)
        self.addCleanup(c.close)
        return c

    def assertClosed(self, client, timeout=5.0, msg=None):
        try:
            closed = client.wait_closed(timeout)
        except ProtocolError as e:
            self.fail(msg or f"expected the connection to close, got more bytes: {e}")
        self.assertTrue(closed, msg or f"connection still open {timeout * SLOW:.0f}s later")

    def assertStillOpen(self, client, wait=0.3, msg=None):
        try:
            closed = client.wait_closed(wait)
        except ProtocolError as e:
            self.fail(msg or f"unexpected bytes on an idle connection: {e}")
        self.assertFalse(closed, msg or "the proxy closed a connection that should have stayed open")
