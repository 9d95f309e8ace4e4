"""WebSocket through holdfast with a real server and a real client (Debian's
python3-websockets): echo traffic intact and in order, a 64 MiB message with
bounded proxy memory, close from either side, and non-101 answers passed on."""

import asyncio
import os
import random
import sys
import threading
import time
import unittest
from http import HTTPStatus

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import make_config  # noqa: E402

try:
    import websockets
except ImportError:  # scripts/setup installs python3-websockets; tests run under /usr/bin/python3
    websockets = None


class WsBackend:
    """A websockets server on 127.0.0.1:0 in its own event-loop thread.
    /echo echoes every message; /server-close sends one message and closes;
    /forbidden and /plain answer 403 and 200 without switching."""

    def __init__(self):
        self.connections = 0
        self.closed = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("websocket backend did not start")

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def process_request(path, headers):
            if path == "/forbidden":
                return HTTPStatus.FORBIDDEN, [("Content-Type", "text/plain")], b"forbidden\n"
            if path == "/plain":
                return HTTPStatus.OK, [("Content-Type", "text/plain")], b"plain\n"
            return None

        async def handler(ws, path):
            self.connections += 1
            try:
                if path == "/server-close":
                    await ws.send("bye")
                    await ws.close(code=1000, reason="done")
                    return
                async for message in ws:
                    await ws.send(message)
            finally:
                self.closed += 1

        async def main():
            self.server = await websockets.serve(handler, h.LOOPBACK, 0, max_size=None, max_queue=4,
                                                 process_request=process_request, compression=None)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()
            await self.server.wait_closed()

        self.loop.run_until_complete(main())

    def stop(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.thread.join(10)


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout * h.SLOW))


@unittest.skipIf(websockets is None, "python3-websockets is not installed")
class WebSocketTest(h.ProxyTestCase):

    def setUp(self):
        self.ws = WsBackend()
        self.addCleanup(self.ws.stop)
        self.p = self.proxy(make_config([self.ws.port]))
        self.url = f"ws://{h.LOOPBACK}:{self.p.port}"

    def test_ten_thousand_echo_messages_intact_and_in_order(self):
        rng = random.Random(7)
        sizes = [rng.choice([0, 1, 13, 125, 126, 1000, 65535, 65536, 100_000]) for _ in range(10_000)]

        async def session():
            async with websockets.connect(self.url + "/echo", max_size=None, compression=None) as c:
                window = 64
                sent = 0
                for i, size in enumerate(sizes):
                    payload = (f"{i}:".encode() + bytes([i % 251]) * size)
                    message = payload if i % 2 else payload.decode("latin-1")
                    await c.send(message)
                    sent += 1
                    if sent >= window:
                        await self._expect(c, i - window + 1, sizes)
                        sent -= 1
                for j in range(len(sizes) - sent, len(sizes)):
                    await self._expect(c, j, sizes)

        run(session(), timeout=180)
        self.assertEqual(self.ws.connections, 1)

    async def _expect(self, c, i, sizes):
        got = await c.recv()
        want = f"{i}:".encode() + bytes([i % 251]) * sizes[i]
        if isinstance(got, str):
            got = got.encode("latin-1")
        self.assertEqual(len(got), len(want), f"message {i}")
        self.assertEqual(got, want, f"message {i}")

    def test_64mib_message_with_bounded_proxy_memory(self):
        before = self.p.rss_kb()
        blob = os.urandom(1 << 20) * 64
        peak = [before]

        def watch(stop):
            while not stop.is_set():
                peak[0] = max(peak[0], self.p.rss_kb())
                time.sleep(0.05)

        stop = threading.Event()
        t = threading.Thread(target=watch, args=(stop,), daemon=True)
        t.start()

        async def session():
            async with websockets.connect(self.url + "/echo", max_size=None, compression=None) as c:
                await c.send(blob)
                echoed = await c.recv()
                self.assertEqual(len(echoed), len(blob))
                self.assertTrue(echoed == blob, "the 64 MiB message came back altered")

        try:
            run(session(), timeout=240)
        finally:
            stop.set()
            t.join(5)
        growth_mib = (peak[0] - before) / 1024
        self.assertLess(growth_mib, 16, f"holdfast RSS grew by {growth_mib:.1f} MiB")

    def test_client_close_ends_the_tunnel_and_both_connections(self):
        async def session():
            async with websockets.connect(self.url + "/echo", compression=None) as c:
                await c.send("hello")
                self.assertEqual(await c.recv(), "hello")
            # The context exit sent a close frame and waited for the TCP close.
            self.assertEqual(c.close_code, 1000)

        run(session())
        deadline = time.monotonic() + 5 * h.SLOW
        while self.ws.closed < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.ws.closed, 1)
        h.wait_for(lambda: "tunnel closed by" in self.p.stderr_text(), 5 * h.SLOW, "no tunnel log line")
        self.assertIn("tunnel closed by", self.p.stderr_text())

    def test_server_close_reaches_the_client(self):
        async def session():
            async with websockets.connect(self.url + "/server-close", compression=None) as c:
                self.assertEqual(await c.recv(), "bye")
                with self.assertRaises(websockets.ConnectionClosedOK):
                    await c.recv()
                self.assertEqual(c.close_code, 1000)
                self.assertEqual(c.close_reason, "done")

        run(session())
        h.wait_for(lambda: "tunnel closed by" in self.p.stderr_text(), 5 * h.SLOW, "no tunnel log line")

    def test_backend_refusing_the_upgrade_gives_the_client_its_answer(self):
        async def session(path):
            with self.assertRaises(websockets.InvalidStatusCode) as cm:
                async with websockets.connect(self.url + path, compression=None):
                    pass
            return cm.exception.status_code

        self.assertEqual(run(session("/forbidden")), 403)
        self.assertEqual(run(session("/plain")), 200)
        # holdfast itself still serves ordinary requests.
        r = h.get(self.p.port, "/plain")
        self.assertEqual(r.status, 200)


if __name__ == "__main__":
    unittest.main()
