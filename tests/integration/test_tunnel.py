"""Upgrade tunnels at the byte level, against a scripted backend: which
requests may switch, what crosses after the 101, half-close, timeouts,
SIGTERM, no reuse of a tunnel's connection, and Server-Sent Events that
stream event by event."""

import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import metrics_lib as m  # noqa: E402
from harness import make_config  # noqa: E402

UPGRADE = (b"GET /chat HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


class TunnelBackend(h.ScriptedBackend):
    """Answers an upgrade request with 101 and then echoes raw bytes, upper-cased,
    until EOF, then writes b"BYE" and closes; plain requests get a keep-alive 200."""

    def __init__(self, switch_plain=False, **kw):
        self.heads = []
        self.tunnel_bytes = []
        self.switch_plain = switch_plain
        super().__init__(**kw)

    def handle(self, conn, index):
        reader = h.Reader(conn)
        while True:
            req = h.read_request(reader)
            if req is None:
                return
            self.heads.append((index, req))
            if req.headers.get("upgrade") or self.switch_plain:
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                got = bytearray(reader.buf)
                reader.buf = bytearray() if isinstance(reader.buf, bytearray) else b""
                if got:
                    conn.sendall(bytes(got).upper())
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    got += data
                    conn.sendall(data.upper())
                self.tunnel_bytes.append(bytes(got))
                conn.sendall(b"BYE")
                return
            body = f"plain conn={index}\n".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def open_tunnel(port, extra=b""):
    s = socket.create_connection((h.LOOPBACK, port), timeout=h.IO_TIMEOUT)
    s.sendall(UPGRADE + extra)
    reader = h.Reader(s)
    head = reader.read_until(b"\r\n\r\n", h.MAX_HEAD)
    return s, reader, head


class TunnelTest(h.ProxyTestCase):

    def test_upgrade_headers_kept_for_that_request_only_and_bytes_cross(self):
        b = TunnelBackend()
        self.addCleanup(b.stop)
        p = self.proxy(make_config([b.port]))
        s, reader, head = open_tunnel(p.port)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertIn(b"\r\nUpgrade: websocket\r\n", head)
        self.assertIn(b"\r\nConnection: upgrade\r\n", head)
        self.assertIn(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", head)
        s.sendall(b"hello tunnel")
        self.assertEqual(reader.read_exact(12), b"HELLO TUNNEL")
        _, req = b.heads[0]
        self.assertEqual(req.headers.get("upgrade"), "websocket")
        self.assertEqual(req.headers.tokens("connection"), ["upgrade"])
        # Half-close: the client's FIN reaches the backend, which still answers.
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(reader.read_to_eof(), b"BYE")
        s.close()
        self.assertEqual(b.tunnel_bytes, [b"hello tunnel"])
        h.wait_for(lambda: "tunnel closed by client" in p.stderr_text(), 5 * h.SLOW, "no tunnel log line")
        h.wait_for(lambda: '"GET /chat HTTP/1.1" 101 ' in p.stdout_text(), 5 * h.SLOW, "no access log line for the tunnel")

    def test_tunnel_metrics_move_with_real_tunnels(self):
        b = TunnelBackend()
        self.addCleanup(b.stop)
        p = self.proxy(make_config([b.port], top=m.ADMIN))
        s, reader, head = open_tunnel(p.port)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        s.sendall(b"a")
        self.assertEqual(reader.read_exact(1), b"A")
        m.wait_metric(p, "holdfast_tunnels_active", 1)
        self.assertEqual(m.Metrics(p).value("holdfast_tunnels_opened_total"), 1)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(reader.read_to_eof(), b"BYE")
        s.close()
        m.wait_metric(p, "holdfast_tunnels_active", 0)
        scrape = m.Metrics(p)
        self.assertEqual(scrape.value("holdfast_tunnels_closed_total", reason="client"), 1)
        self.assertEqual(scrape.value("holdfast_tunnels_closed_total", reason="backend"), 0)
        self.assertEqual(scrape.value("holdfast_responses_total", code="1xx"), 1)

    def test_bytes_after_the_upgrade_request_belong_to_the_tunnel(self):
        b = TunnelBackend()
        self.addCleanup(b.stop)
        p = self.proxy(make_config([b.port]))
        early = b"GET /not-http HTTP/1.1\r\nHost: t\r\n\r\n"
        s, reader, head = open_tunnel(p.port, extra=early)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertEqual(reader.read_exact(len(early)), early.upper())
        s.close()
        h.wait_for(lambda: b.tunnel_bytes, 5 * h.SLOW, "tunnel did not end")
        self.assertEqual(b.tunnel_bytes, [early])
        self.assertEqual(len(b.heads), 1, "bytes after the upgrade request were parsed as a request")

    def test_tunnel_connection_is_not_reused(self):
        b = TunnelBackend()
        self.addCleanup(b.stop)
        p = self.proxy(make_config([b.port]))
        # A pooled connection first: the tunnel may start on it.
        self.assertEqual(h.get(p.port, "/warm").body, b"plain conn=1\n")
        s, reader, head = open_tunnel(p.port)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        s.sendall(b"x")
        self.assertEqual(reader.read_exact(1), b"X")
        s.close()
        h.wait_for(lambda: b.tunnel_bytes, 5 * h.SLOW, "tunnel did not end")
        r = h.get(p.port, "/after")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"plain conn=2\n", "the request after the tunnel used the tunnel's connection")
        self.assertEqual(b.accepted, 2)

    def test_upgrade_not_allowed_is_stripped(self):
        b = TunnelBackend()
        self.addCleanup(b.stop)
        p = self.proxy(make_config([b.port], upstream={"upgrade": []}))
        c = self.client(p.port)
        c.send(UPGRADE)
        r = c.read_response()
        self.assertEqual(r.status, 200)
        _, req = b.heads[0]
        self.assertIsNone(req.headers.get("upgrade"))
        self.assertNotIn("upgrade", req.headers.tokens("connection"))

    def test_101_to_a_request_that_did_not_ask_is_502(self):
        b = TunnelBackend(switch_plain=True)
        self.addCleanup(b.stop)
        p = self.proxy(make_config([b.port]))
        r = h.get(p.port, "/plain")
        self.assertEqual(r.status, 502)

    def test_idle_tunnel_closed_after_tunnel_timeout(self):
        b = TunnelBackend()
        self.addCleanup(b.stop)
        p = self.proxy(make_config([b.port], upstream={"tunnel_timeout": "1s", "read_timeout": "200ms"}))
        s, reader, head = open_tunnel(p.port)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        # Traffic for longer than read_timeout keeps it open: tunnel_timeout governs.
        for i in range(4):
            time.sleep(0.3)
            s.sendall(b"k")
            self.assertEqual(reader.read_exact(1), b"K")
        t0 = time.monotonic()
        rest = reader.read_to_eof()
        waited = time.monotonic() - t0
        s.close()
        self.assertEqual(rest, b"", "the backend's answer to its EOF must not reach a timed-out tunnel")
        self.assertGreaterEqual(waited, 0.8)
        self.assertLess(waited, 3.0 * h.SLOW)
        h.wait_for(lambda: "tunnel closed by idle timeout" in p.stderr_text(), 5 * h.SLOW, "no idle log line")

    def test_sigterm_closes_open_tunnel_at_drain_deadline(self):
        b = TunnelBackend()
        self.addCleanup(b.stop)
        p = self.proxy(make_config([b.port], top={"drain_timeout": "1500ms"}))
        s, reader, head = open_tunnel(p.port)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        # Still a tunnel during the drain.
        time.sleep(0.3)
        s.sendall(b"during drain")
        self.assertEqual(reader.read_exact(12), b"DURING DRAIN")
        res = p.wait_exit(10 * h.SLOW)
        self.assertIsNotNone(res, "holdfast did not exit")
        self.assertEqual(res.code, 0)
        self.assertGreaterEqual(time.monotonic() - t0, 1.3)
        self.assertTrue(reader.at_eof(5), "tunnel not closed at the drain deadline")
        s.close()
        self.assertIn("tunnel closed by shutdown", res.stderr)
        self.assertEqual(res.stats.get("tunnels_opened"), 1, res.stats)

    def test_server_sent_events_stream_event_by_event(self):
        # Lockstep: the backend sends event i+1 only once the client has read
        # event i, so an event that holdfast held back stalls the stream (and
        # fails the test) whatever the host's load; a delay per event (Nagle,
        # a flush on a timer) shows in the median lag.
        sent = []
        seen = [threading.Event() for _ in range(10)]
        stalled = []

        def handler(conn, index):
            reader = h.Reader(conn)
            h.read_request(reader)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n")
            for i in range(10):
                if i > 0 and not seen[i - 1].wait(5 * h.SLOW):
                    stalled.append(i - 1)
                    return
                time.sleep(0.02)
                sent.append(time.monotonic())
                conn.sendall(f"data: event {i}\n\n".encode())

        b = self.scripted(handler)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        c.send(h.build_request("GET", "/events"))
        head = c.reader.read_until(b"\r\n\r\n", h.MAX_HEAD)
        self.assertIn(b"Transfer-Encoding: chunked", head)
        got = []
        # What came with the head (event 0, if this client was slow) is parsed first.
        buf = bytes(c.reader.buf)
        c.reader.buf = type(c.reader.buf)()
        now = time.monotonic()
        deadline = now + 30 * h.SLOW
        while time.monotonic() < deadline:
            while len(got) < 10 and b"data: event" in buf and b"\n\n" in buf[buf.index(b"data: event"):]:
                start = buf.index(b"data: event")
                end = buf.index(b"\n\n", start)
                seen[len(got)].set()
                got.append(now)
                buf = buf[end + 2:]
            if len(got) == 10 or stalled or not c.reader._fill():
                break
            now = time.monotonic()
            buf += bytes(c.reader.buf)
            c.reader.buf = type(c.reader.buf)()
        self.assertEqual(stalled, [], f"event {stalled} was held back by the proxy")
        self.assertEqual(len(got), 10, f"the stream ended after {len(got)} events")
        lags = sorted(g - s for g, s in zip(got, sent))
        self.assertLess(lags[len(lags) // 2], 0.05 * h.SLOW, f"events were delayed: lags {lags}")


if __name__ == "__main__":
    unittest.main()
