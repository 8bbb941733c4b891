"""The HTTP server class every stand-in in tests/support listens with."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    """A thread per connection, threads that never keep the tests alive, and a listen backlog
    that takes a burst of concurrent clients (http.server's is 5: the sixth concurrent connect
    of a burst is reset, which tests would mistake for the product's fault)."""

    daemon_threads = True
    request_queue_size = 1024

    _thread: threading.Thread | None = None

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (a reset keep-alive connection, a stream cancelled by the
        cache) is a client's right, not a fault to print; anything else is printed as usual."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]

    @classmethod
    def started(cls, handler: type[BaseHTTPRequestHandler]) -> LoopbackServer:
        """Listening on a free loopback port, serving from a daemon thread."""
        server = cls(("127.0.0.1", 0), handler)
        server._thread = threading.Thread(target=server.serve_forever, daemon=True)
        server._thread.start()
        return server

    def close(self) -> None:
        """Stop serving, close the socket and wait for the serving thread."""
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
