"""What the Cloudflare stand-ins share: a loopback HTTP server under ``/client/v4`` that checks
the bearer token and account, answers in Cloudflare's envelope, counts requests, and can be made
slow or made to fail (injected failures answer before the real handler runs)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from tests.support.http_server import LoopbackServer

API_ROOT = "/client/v4"


def envelope(result: Any = None, *, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"result": result, "success": not errors, "errors": errors or [], "messages": []}


def error(code: int, message: str) -> dict[str, Any]:
    return envelope(None, errors=[{"code": code, "message": message}])


@dataclass
class Failure:
    """An injected failure: answered ``times`` times to requests whose path contains ``path``."""

    status: int
    code: int | None = None
    message: str = "injected failure"
    times: int = 1
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a body that is not an envelope (e.g. an HTML error page)


@dataclass
class Request:
    """What a route sees."""

    method: str
    path: str  # below /accounts/{account}, percent-decoded
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class Reply:
    """What a route answers: JSON (an envelope), raw bytes, or a generator of SSE chunks."""

    def __init__(
        self,
        status: int = 200,
        *,
        json_body: Any = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        chunks: Callable[[], Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.json_body = json_body
        self.raw = raw
        self.content_type = content_type
        self.chunks = chunks
        self.headers = headers or {}


class CloudflareStandIn:
    def __init__(self, *, account_id: str = "acc0123456789", token: str = "test-token") -> None:
        self.account_id = account_id
        self.token = token
        self.delay = 0.0
        self.slow_paths: dict[str, float] = {}  # path substring -> extra seconds per request
        self.counts: Counter[str] = Counter()
        self._failures: list[Failure] = []
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

            def do_PUT(self) -> None:
                standin._handle(self, "PUT")

            def do_DELETE(self) -> None:
                standin._handle(self, "DELETE")

        self._handler = Handler
        self._server: ThreadingHTTPServer | None = None  # bound by __enter__ (transport needs none)

    # ------------------------------------------------------------------ control
    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the stand-in first (with ...)"
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}{API_ROOT}"

    def fail(
        self,
        status: int,
        code: int | None = None,
        message: str = "injected failure",
        *,
        times: int = 1,
        path: str = "",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        with self._lock:
            self._failures.append(Failure(status, code, message, times, path, headers or {}, raw))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def __enter__(self) -> CloudflareStandIn:
        self._server = LoopbackServer.started(self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    # ------------------------------------------------------------------ to override
    def route(self, request: Request) -> Reply:
        raise NotImplementedError

    # ------------------------------------------------------------------ plumbing
    def _take_failure(self, path: str) -> Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.path in path and failure.times > 0:
                    failure.times -= 1
                    return failure
        return None

    def dispatch(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        """One request, as the server answers it (also used without sockets: ``transport``)."""
        parts = urlsplit(raw_path)
        prefix = f"{API_ROOT}/accounts/"
        if not parts.path.startswith(prefix):
            return Reply(404, json_body=error(7000, f"No route for that URI: {parts.path}"))
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        if auth != f"Bearer {self.token}":
            return Reply(401, json_body=error(10000, "Authentication error"))
        account, _, rest = parts.path[len(prefix) :].partition("/")
        if account != self.account_id:
            return Reply(404, json_body=error(7003, f"Could not route to /accounts/{account}"))
        sub = "/" + rest
        failure = self._take_failure(sub)
        pause = self.delay + sum(v for k, v in list(self.slow_paths.items()) if k in sub)
        if pause:
            time.sleep(pause)
        if failure is not None:
            with self._lock:
                self.counts["failed"] += 1
            if failure.raw is not None:
                reply = Reply(failure.status, raw=failure.raw, content_type="text/html")
            else:
                body_json = (
                    error(failure.code, failure.message)
                    if failure.code is not None
                    else envelope(None, errors=[{"code": 10001, "message": failure.message}])
                )
                reply = Reply(failure.status, json_body=body_json)
            reply.headers.update(failure.headers)
            return reply
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        lowered = {k.lower(): v for k, v in headers.items()}
        return self.route(Request(method, unquote(sub), query, lowered, body))

    def transport(self) -> httpx.MockTransport:
        """The same stand-in as an httpx transport: no socket, for unit tests."""

        def handle(request: httpx.Request) -> httpx.Response:
            raw_path = request.url.raw_path.decode("ascii")
            reply = self.dispatch(request.method, raw_path, dict(request.headers), request.read())
            headers = {"Content-Type": reply.content_type, **reply.headers}
            if reply.chunks is not None:
                content = b"".join(c.encode() if isinstance(c, str) else c for c in reply.chunks())
            elif reply.raw is not None:
                content = reply.raw
            else:
                content = json.dumps(reply.json_body).encode()
            return httpx.Response(reply.status, headers=headers, content=content)

        return httpx.MockTransport(handle)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        reply = self.dispatch(method, h.path, dict(h.headers.items()), body)
        try:
            self._send(h, reply)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True  # the client gave up (e.g. its timeout): nothing to answer

    def _send(self, h: BaseHTTPRequestHandler, reply: Reply) -> None:
        h.send_response(reply.status)
        h.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            h.send_header(name, value)
        if reply.chunks is not None:
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            try:
                for chunk in reply.chunks():
                    data = chunk.encode() if isinstance(chunk, str) else chunk
                    h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    h.wfile.flush()
                h.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away mid-stream
            return
        data = reply.raw if reply.raw is not None else json.dumps(reply.json_body).encode()
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
