"""The local server: each HTTP request becomes an API Gateway HTTP API (v2) event, handed to the
same handler functions Lambda calls; each handler result becomes the HTTP response.

One difference, on purpose: a handler module may offer ``stream_handler`` (same event, same
resolver) which returns, besides the result, a *live* body for a streamed chat completion; the
server sends it chunk by chunk (chunked transfer encoding) as it is produced, where API Gateway
would buffer the whole body. If the client goes away mid-stream, the body is closed: the
stream is cancelled and nothing is stored.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from promptcache.routes import ROUTES, route_path

log = logging.getLogger("promptcache.server")

#: API Gateway's own payload limit: larger bodies never reach a function.
MAX_EVENT_BYTES = 10 * 1024 * 1024
_TEXT_TYPES = ("application/json", "text/", "application/x-www-form-urlencoded")

#: Seconds a connection may stay silent (no request line, headers never finished, a body that
#: stops coming) before the server closes it: no thread is held forever by an idle client.
#: ``PROMPTCACHE_SERVER_IDLE_TIMEOUT`` overrides it (tests use a small value).
IDLE_TIMEOUT_SECONDS = 30.0

#: The error code of each status the server answers itself (before any handler runs).
_SERVER_ERROR_CODES = {
    400: "bad_request",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    431: "request_header_fields_too_large",
    501: "not_implemented",
    505: "http_version_not_supported",
}


class LocalContext:
    """The parts of the Lambda context object handlers and Powertools read."""

    def __init__(self, function_name: str, timeout_s: float = 900.0) -> None:
        self.function_name = f"promptcache-local-{function_name}"
        self.function_version = "$LATEST"
        self.invoked_function_arn = (
            f"arn:aws:lambda:local:000000000000:function:{self.function_name}"
        )
        self.memory_limit_in_mb = 1024
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def joined(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers as API Gateway v2 puts them in the event: names lower-cased, the values of
    a repeated header joined with commas (so both paths see two Authorization headers alike)."""
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def to_event(
    method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str = "127.0.0.1"
) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2.0 event, as API Gateway would build it."""
    url = urlsplit(target)
    lower = {k.lower(): v for k, v in headers.items()}
    query: dict[str, str] = {}
    for k, v in parse_qsl(url.query, keep_blank_values=True):
        query[k] = f"{query[k]},{v}" if k in query else v
    content_type = lower.get("content-type", "")
    is_text = not body or any(content_type.startswith(t) for t in _TEXT_TYPES)
    if is_text:
        try:
            text: str | None = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    else:
        text = None
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": url.path or "/",
        "rawQueryString": url.query,
        "headers": lower,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": lower.get("host", "localhost"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": url.path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": lower.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": text is None,
    }
    if query:
        event["queryStringParameters"] = query
    if body:
        event["body"] = text if text is not None else base64.b64encode(body).decode("ascii")
    return event


def from_result(result: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of a Lambda proxy result (payload v2)."""
    status = int(result.get("statusCode", 200))
    headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
    for k, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((k, str(v)) for v in values)
    headers.extend(("Set-Cookie", c) for c in result.get("cookies") or [])
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode("utf-8")
    return status, headers, body


def _module_for(path: str) -> str:
    route = route_path(path)
    for (_, known), module in ROUTES.items():
        if known == route:
            return module
    if path.startswith("/v1/"):
        return "chat"
    return "health"  # its resolver answers the JSON 404


class _Handler(BaseHTTPRequestHandler):
    server_version = "promptcache"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    modules: dict[str, ModuleType] = {}

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every error the server answers itself (malformed request lines, unknown methods,
        oversized headers, bad lengths) as the project's JSON error body; the connection closes,
        as it does after http.server's own error pages."""
        short = self.responses.get(code, ("error", ""))[0]
        detail = message or short
        if explain and explain != self.responses.get(code, ("", ""))[1]:
            detail = f"{detail}: {explain}"
        self.log_error("code %d, message %s", code, detail)
        if self.request_version == "HTTP/0.9":  # a request line too broken to tell its version
            self.request_version = "HTTP/1.0"  # still a status line and headers
        error = {"code": _SERVER_ERROR_CODES.get(code, "bad_request"), "message": detail}
        body = json.dumps({"error": error}).encode("utf-8")
        self.send_response(code, short)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            self.wfile.write(body)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # "GET /path": http.server would answer bare
            self.send_error(400, "HTTP/0.9 requests are not supported; send HTTP/1.0 or 1.1")
            return False
        return True

    def _body_length(self) -> int | None:
        """The request body's length; None after answering an error (the connection closes)."""
        if "Transfer-Encoding" in self.headers:
            # Chunked request bodies are not decoded: answered, and the connection closed, so the
            # chunks are never read as the next request.
            self.send_error(411, "send the request body with Content-Length, not chunked")
            return None
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return 0
        raw = values[0].strip()
        if len(set(v.strip() for v in values)) > 1 or not raw.isdigit() or not raw.isascii():
            self.send_error(400, f"Content-Length must be a non-negative integer, got {raw!r}")
            return None
        length = int(raw)
        if length > MAX_EVENT_BYTES:
            self.send_error(413, "request body over 10 MB")
            return None
        return length

    def _dispatch(self) -> None:
        length = self._body_length()
        if length is None:
            return
        body = self.rfile.read(length) if length else b""
        name = _module_for(urlsplit(self.path).path)
        event = to_event(
            self.command, self.path, joined(self.headers.items()), body, self.client_address[0]
        )
        module = self.modules[name]
        live: Iterator[bytes] | None = None
        try:
            streaming = getattr(module, "stream_handler", None)
            if streaming is not None and self.command != "HEAD":
                result, live = streaming(event, LocalContext(name))
            else:
                result = module.lambda_handler(event, LocalContext(name))
            status, headers, payload = from_result(result)
        except Exception:  # the handlers map every error; this is a bug, say so as JSON
            log.exception("handler %s crashed", name)
            status, headers = 500, [("Content-Type", "application/json")]
            payload = b'{"error": {"code": "internal_error", "message": "internal error"}}'
        if live is not None:
            self._send_live(status, headers, live)
        else:
            self._send(status, headers, payload)

    def _send_live(
        self, status: int, headers: list[tuple[str, str]], chunks: Iterator[bytes]
    ) -> None:
        """Each chunk as it is produced (chunked transfer encoding); the body is closed in the end,
        which cancels it if the client went away first."""
        try:
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for data in chunks:
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
        except OSError as exc:  # the client went away (reset, broken pipe): stop producing
            log.info("client left during a streamed response: %s", exc)
            self.close_connection = True
        except Exception:  # a bug in the body: end the response without its last chunk
            log.exception("streamed body failed")
            self.close_connection = True
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.info("%s %s", self.address_string(), format % args)


def load_handlers() -> dict[str, ModuleType]:
    """The handler modules: from the installed package ``promptcache_handlers``, or, where it is
    absent (a Lambda function's code, run by ``run.sh``), the top-level modules of the zip."""
    names = sorted(set(ROUTES.values()))
    try:
        importlib.import_module("promptcache_handlers")
        package = "promptcache_handlers."
    except ModuleNotFoundError as exc:
        if exc.name != "promptcache_handlers":
            raise
        package = ""
    return {name: importlib.import_module(f"{package}{name}") for name in names}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # http.server listens with a backlog of 5: a burst of clients beyond what the accept loop
    # takes at once (concurrent misses on a busy machine) was refused or reset.
    request_queue_size = 1024


def make_server(host: str, port: int) -> ThreadingHTTPServer:
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    idle = float(os.environ.get("PROMPTCACHE_SERVER_IDLE_TIMEOUT") or IDLE_TIMEOUT_SECONDS)
    handler = type("Handler", (_Handler,), {"modules": load_handlers(), "timeout": idle})
    return _Server((host, port), handler)


def serve(host: str, port: int) -> None:
    from promptcache import runtime

    server = make_server(host, port)
    cache = runtime.cache()  # cold start now, not on the first request
    s = runtime.settings()
    bound_host, bound_port = str(server.server_address[0]), server.server_address[1]
    print(
        f"promptcache listening on http://{bound_host}:{bound_port}  store={s.store} "
        f"embedder={cache.embedder.id} llm={s.llm} threshold={cache.threshold}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
