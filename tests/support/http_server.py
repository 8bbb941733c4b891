"""The HTTP server class every stand-in in tests/support listens with."""

from __future__ import annotations

from http.server import ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    """A thread per connection, threads that never keep the tests alive, and a listen backlog
    that takes a burst of concurrent clients (http.server's is 5: the sixth concurrent connect
    of a burst is reset, which tests would mistake for the product's fault)."""

    daemon_threads = True
    request_queue_size = 1024
