"""Upstream failures (issue 2, "The pool"; issue 4, "Retries"): 502/504 pages, aborted
responses, clients going away, and the one safe retry on a fresh connection."""

import os
import select
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402


def full_backlog_listener():
    """A loopback listener whose accept queue is full, so that the kernel drops new SYNs
    and a connect to it hangs until the caller's timeout. Linux: listen(0) queues one
    connection; once it is queued and never accepted, further SYNs are dropped.
    Returns (listener, filler sockets) or None if this kernel does not behave so."""
    lst = socket.socket()
    lst.bind((h.LOOPBACK, 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    for _ in range(2):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect((h.LOOPBACK, port))
        except BlockingIOError:
            pass
        fillers.append(s)
        time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        probe.connect((h.LOOPBACK, port))
        works = False
    except (socket.timeout, TimeoutError):
        works = True
    except OSError:
        works = False
    finally:
        probe.close()
    if not works:
        for s in fillers:
            s.close()
        lst.close()
        return None
    return lst, fillers


class ConnectErrorsTest(h.ProxyTestCase):

    def test_connect_refused_is_502(self):
        port = h.closed_port()
        p = self.proxy(make_config([port]))
        c = self.client(p.port)
        r = c.request("GET", "/refused")
        self.assertEqual(r.status, 502)
        self.assertIn(b"upstream connect refused", r.body)
        # An error page does not end the client connection by itself.
        r = c.request("GET", "/refused-again")
        self.assertEqual(r.status, 502)

    def test_error_answer_to_head_has_no_body(self):
        # RFC 9112 6.3: a response to HEAD ends with its head. A body here would
        # be read as the start of the next response on the connection.
        port = h.closed_port()
        p = self.proxy(make_config([port]))
        c = self.client(p.port)
        r = c.request("HEAD", "/refused")
        self.assertEqual(r.status, 502)
        self.assertEqual(r.body, b"")
        r = c.request("GET", "/refused-again")
        self.assertEqual(r.status, 502)
        self.assertIn(b"upstream connect refused", r.body)

    def test_connect_timeout_is_504(self):
        trap = full_backlog_listener()
        if trap is None:
            self.skipTest("this kernel accepts connections beyond a full backlog; connect timeout not testable here")
        lst, fillers = trap
        self.addCleanup(lst.close)
        for s in fillers:
            self.addCleanup(s.close)
        p = self.proxy(make_config([lst.getsockname()[1]], upstream={"connect_timeout": "500ms"}))
        c = self.client(p.port)
        t0 = time.monotonic()
        r = c.request("GET", "/slow-connect")
        self.assertEqual(r.status, 504, r)
        self.assertIn(b"upstream connect timeout", r.body)
        self.assertLess(time.monotonic() - t0, 15 * h.SLOW, "connect_timeout was not applied")

    def test_read_timeout_is_504(self):
        got_request = threading.Event()

        def silent(conn, index):
            h.read_request(h.Reader(conn))
            got_request.set()
            conn.settimeout(15 * h.SLOW)
            try:
                conn.recv(1)  # wait for holdfast to give up (EOF) without answering
            except OSError:
                pass

        b = self.scripted(silent)
        p = self.proxy(make_config([b.port], upstream={"read_timeout": "1s"}))
        c = self.client(p.port)
        r = c.request("GET", "/never")
        self.assertTrue(got_request.is_set())
        self.assertEqual(r.status, 504, r)
        self.assertIn(b"upstream read timeout", r.body)


class AbortTest(h.ProxyTestCase):

    def test_upstream_closes_mid_response_aborts_client(self):
        def short(conn, index):
            req = h.read_request(h.Reader(conn))
            if req is None:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n0123456789")
            time.sleep(0.5)  # the head and first bytes are forwarded before the close

        b = self.scripted(short)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        c.send(h.build_request("GET", "/short"))
        with self.assertRaises(h.IncompleteMessage, msg="the client got a complete response from a truncated one"):
            r = c.read_response()
            self.fail(f"complete response delivered: {r.status} framing={r.framing} body={len(r.body)} bytes")
        self.assertTrue(c.reader.eof, "the client connection should be closed")

    def test_upstream_closes_mid_chunked_response_aborts_client(self):
        def short(conn, index):
            req = h.read_request(h.Reader(conn))
            if req is None:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n")
            time.sleep(0.5)

        b = self.scripted(short)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        c.send(h.build_request("GET", "/short-chunked"))
        with self.assertRaises(h.IncompleteMessage, msg="a truncated chunked response was ended as if whole"):
            c.read_response()

    def client_gone_mid_response(self, abortive):
        """The client reads the head and 1000 body bytes, then closes: with a
        FIN (abortive=False; a FIN alone cannot be told from a half-close, so
        holdfast learns that the client is gone from the reset its next write
        draws) or with a reset (SO_LINGER 0). The backend goes on sending, as
        a real one would, until holdfast closes the upstream connection."""
        state = {"first_closed": threading.Event()}

        def handler(conn, index):
            reader = h.Reader(conn)
            req = h.read_request(reader)
            if req is None:
                return
            if index == 1:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 65536)
                # At most 10 * SLOW seconds of 4 KiB every 50 ms: far less than the length.
                deadline = time.monotonic() + 10 * h.SLOW
                conn.settimeout(0.5)
                while time.monotonic() < deadline:
                    readable, _, _ = select.select([conn], [], [], 0.05)
                    try:
                        if readable and conn.recv(1) == b"":
                            state["first_closed"].set()
                            return
                        conn.sendall(b"y" * 4096)
                    except (socket.timeout, TimeoutError):
                        continue  # holdfast is not reading: backpressure
                    except OSError:
                        state["first_closed"].set()
                        return
                return
            body = f"conn={index}".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            h.read_request(reader)

        b = self.scripted(handler)
        p = self.proxy(make_config([b.port]))
        c = h.HttpClient(p.port)
        c.send(h.build_request("GET", "/big"))
        head = c.reader.read_until(b"\r\n\r\n", 65536)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        c.reader.read_exact(1000)
        if abortive:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # gone mid-response
        self.assertTrue(state["first_closed"].wait(10 * h.SLOW),
                        "holdfast kept the upstream connection of an abandoned exchange open")
        r = h.get(p.port, "/next")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"conn=2")
        self.assertEqual(b.accepted, 2)

    def test_client_gone_mid_response_closes_upstream_connection(self):
        self.client_gone_mid_response(abortive=False)

    def test_client_reset_mid_response_closes_upstream_connection(self):
        self.client_gone_mid_response(abortive=True)


class ClientTimeoutTest(h.ProxyTestCase):

    def read_optional_response(self, c):
        """The proxy may answer a timed-out request (408) or just close; returns the status or None."""
        try:
            return c.read_response().status
        except h.IncompleteMessage:
            return None

    def test_header_timeout_closes_slow_head(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], client={"header_timeout": "1s"}))
        c = self.client(p.port)
        c.send(b"GET /slowloris HTTP/1.1\r\nHost: holdfast.test\r\nX-Partial: ")
        t0 = time.monotonic()
        status = self.read_optional_response(c)
        self.assertIn(status, (None, 408), "a head that never completes gets 408 or a close")
        self.assertTrue(c.reader.eof or c.wait_closed(5), "connection not closed after header_timeout")
        self.assertLess(time.monotonic() - t0, 15 * h.SLOW)
        self.assertEqual(b.accepted, 0)

    def test_body_timeout_closes_stalled_body_and_upstream(self):
        b = self.backend()
        p = self.proxy(make_config([b.port], client={"body_timeout": "1s"}))
        c = self.client(p.port)
        c.send(b"POST /stalled HTTP/1.1\r\nHost: holdfast.test\r\nContent-Length: 100\r\n\r\n0123456789")
        status = self.read_optional_response(c)
        self.assertIn(status, (None, 408), "a stalled body gets 408 or a close")
        self.assertTrue(c.reader.eof or c.wait_closed(5), "connection not closed after body_timeout")
        # If the head was forwarded, that upstream connection carries half a request: it must be closed.
        if b.accepted:
            self.assertIn(b.wait_closed_conn(1, 10), ("eof_mid_request", "reset", "eof"))
        self.assertEqual(b.requests, [])
        r = h.get(p.port, "/after")
        self.assertEqual(r.status, 200)
        self.assertEqual(b.requests[-1].conn_index, b.accepted, "the half-used upstream connection was reused")


    def test_send_timeout_drops_client_that_stops_reading(self):
        b = self.backend(body_size=32 * 1024 * 1024)
        p = self.proxy(make_config([b.port], client={"send_timeout": "1s"}))
        c = self.client(p.port)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(h.build_request("GET", "/huge"))
        # Read nothing until holdfast has given up on this client.
        self.assertTrue(h.wait_until(lambda: "client send timeout" in p.stderr_text(), 10 * h.SLOW),
                        "a client that stopped reading was never dropped")
        with self.assertRaises(h.IncompleteMessage, msg="a client that stopped reading was never dropped"):
            c.read_response(sink=lambda piece: None)
        # The upstream connection, mid-response, is closed rather than pooled.
        self.assertIsNotNone(b.wait_closed_conn(1, 10))


class RetryTest(h.ProxyTestCase):
    """The backend serves the first request of connection 1, then reads the second one
    and closes without answering: the failure happens on a reused connection before
    any response byte."""

    def make_backend(self):
        self.seen = []
        lock = threading.Lock()

        def handler(conn, index):
            reader = h.Reader(conn)
            for n in range(1, 100):
                req = h.read_request(reader)
                if req is None:
                    return
                with lock:
                    self.seen.append((index, n, req.method, req.target, req.body))
                if index == 1 and n == 2:
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                body = f"conn={index} req={n}".encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend-Connection: %d\r\n\r\n%s"
                             % (len(body), index, body))

        return self.scripted(handler)

    def first_then(self, method, headers=None, body=None):
        b = self.make_backend()
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        r = c.request("GET", "/warm")
        self.assertEqual((r.status, r.body), (200, b"conn=1 req=1"))
        r2 = c.request(method, "/second", headers, body)
        return b, p, r2

    def test_idempotent_request_retried_on_fresh_connection(self):
        b, p, r = self.first_then("GET")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"conn=2 req=1")
        self.assertEqual([(i, t) for i, _, _, t, _ in self.seen], [(1, "/warm"), (1, "/second"), (2, "/second")])
        res = p.stop()
        stats = res.stats or {}
        self.assertGreaterEqual(stats.get("retries_closed", 0) + stats.get("retries_send_failed", 0), 1, stats)

    def test_put_retried(self):
        b, p, r = self.first_then("PUT", body=b"data")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"conn=2 req=1")
        self.assertEqual([x[4] for x in self.seen[1:]], [b"data", b"data"])

    def test_post_not_retried(self):
        b, p, r = self.first_then("POST", body=b"charge-once")
        self.assertEqual(r.status, 502, r)
        posts = [x for x in self.seen if x[2] == "POST"]
        self.assertEqual(len(posts), 1, f"the POST was executed {len(posts)} times: {self.seen}")
        self.assertEqual(b.accepted, 1)

    def test_post_with_idempotency_key_retried(self):
        b, p, r = self.first_then("POST", [("Idempotency-Key", "k-123")], b"charge")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"conn=2 req=1")
        self.assertEqual([x[4] for x in self.seen if x[2] == "POST"], [b"charge", b"charge"])

    def test_retry_happens_only_once(self):
        # Every connection reads the request and closes: the retry fails too, and that is final.
        attempts = []

        def handler(conn, index):
            reader = h.Reader(conn)
            req = h.read_request(reader)
            if req is None:
                return
            attempts.append((index, req.target))
            if index == 1:  # serve the first request so that connection 1 is pooled
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                req = h.read_request(reader)
                if req is None:
                    return
                attempts.append((index, req.target))
            conn.shutdown(socket.SHUT_RDWR)

        b = self.scripted(handler)
        p = self.proxy(make_config([b.port]))
        c = self.client(p.port)
        self.assertEqual(c.request("GET", "/warm").status, 200)
        r = c.request("GET", "/doomed")
        self.assertEqual(r.status, 502, r)
        self.assertEqual([t for _, t in attempts], ["/warm", "/doomed", "/doomed"], attempts)


if __name__ == "__main__":
    unittest.main()
