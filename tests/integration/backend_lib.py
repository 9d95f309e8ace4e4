"""Scripted backend handlers shared by the integration tests.

A handler reads whole requests with the harness parser; what goes back, and in
how many writes, stays with each test, which is what its assertions are about.
"""

import harness as h


def serve_requests(respond, max_requests=20, timeout=None):
    """A ScriptedBackend handler: reads up to `max_requests` whole requests off
    each connection (bounded, so a looping proxy cannot keep a thread forever)
    and calls respond(conn, req) for each; respond writes the answer itself.
    The connection ends when the peer closes it, after `max_requests`, or when
    respond returns True. `timeout` bounds each read (default 60 s, stretched
    for sanitized builds)."""
    if timeout is None:
        timeout = 60 * h.SLOW

    def handler(conn, index):
        reader = h.Reader(conn, timeout)
        for _ in range(max_requests):
            req = h.read_request(reader)
            if req is None or respond(conn, req):
                return
    return handler
