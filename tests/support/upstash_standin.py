"""A stand-in for Upstash Redis's REST API in front of a real redis-server.

Speaks the protocol as documented (../shared notes, "Upstash REST protocol"):

- ``Authorization: Bearer TOKEN`` or ``?_token=TOKEN``; anything else -> 401 ``{"error"}``.
- ``POST /`` with a JSON array ``["SET", "k", "v", "EX", 100]`` -> 200 ``{"result": ...}``; a
  command error -> 400 ``{"error": "ERR ..."}``. Path style (``/set/k/v``, a POST body as the last
  argument) works too.
- ``POST /pipeline`` with ``[[...], [...]]`` -> 200 ``[{"result": ...}, {"error": ...}]``, not
  atomic; ``POST /multi-exec`` -> the same shapes, run in MULTI/EXEC (atomic); a transaction Redis
  discards (a command rejected while queueing) -> 400 with one ``{"error"}``.
- ``Upstash-Encoding: base64``: every string in a result is base64-encoded, except ``"OK"``.
  Without it, bytes that are not UTF-8 come back as U+FFFD.

Commands go to Redis unchanged over RESP2 (redis-py connections with no reply callbacks, errors
kept verbatim). ``requests``, ``bytes_in`` and ``bytes_out`` count traffic for tests and benchmarks;
``inject`` queues canned answers (e.g. a 503) for the next requests, ``fail_all`` answers every
request so until told otherwise.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

import redis
from redis._parsers import _RESP2Parser
from redis.exceptions import ResponseError

from tests.support.http_server import LoopbackServer


class _VerbatimErrors(_RESP2Parser):
    """redis-py strips and reclassifies error prefixes ("ERR ", "EXECABORT "...); Upstash
    returns Redis's message as it is."""

    @classmethod
    def parse_error(cls, response: str) -> ResponseError:
        return ResponseError(response)


class _BadRequest(Exception):
    pass


def _arg(value: Any) -> bytes:
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise _BadRequest(f"ERR command arguments must be strings or numbers, got {value!r}")
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    raise _BadRequest(f"ERR unsupported argument {value!r}")


def _command(value: Any) -> list[bytes]:
    if not isinstance(value, list) or not value:
        raise _BadRequest("ERR a command must be a non-empty JSON array")
    return [_arg(v) for v in value]


def _encode(value: Any, b64: bool) -> Any:
    if isinstance(value, bytes):
        if b64:
            return "OK" if value == b"OK" else base64.b64encode(value).decode("ascii")
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [_encode(v, b64) for v in value]
    if isinstance(value, ResponseError):
        return str(value)
    return value  # int or None


def _item(value: Any, b64: bool) -> dict[str, Any]:
    if isinstance(value, ResponseError):
        return {"error": str(value)}
    return {"result": _encode(value, b64)}


class UpstashStandIn:
    """``with UpstashStandIn(redis_port) as upstash: httpx.post(upstash.url, ...)``."""

    def __init__(
        self, redis_port: int, *, token: str = "standin-token", redis_host: str = "127.0.0.1"
    ) -> None:
        self.token = token
        self._pool = redis.ConnectionPool(
            host=redis_host, port=redis_port, protocol=2, parser_class=_VerbatimErrors
        )
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self._injected: list[tuple[int, bytes]] = []
        self._failing: tuple[int, bytes] | None = None
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> UpstashStandIn:
        standin = self

        class Handler(_Handler):
            pass

        Handler.standin = standin
        self._server = LoopbackServer.started(Handler)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._pool.disconnect()

    def __enter__(self) -> UpstashStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ counters and faults
    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_in = 0
            self.bytes_out = 0

    def inject(self, status: int, body: bytes | str = b"") -> None:
        """Answer the next request with ``status`` and ``body`` instead of running it."""
        with self._lock:
            self._injected.append((status, body.encode() if isinstance(body, str) else body))

    def fail_all(self, status: int | None, body: bytes | str = b"") -> None:
        """Answer every request with ``status`` and ``body`` from now on (None: stop failing)."""
        with self._lock:
            raw = body.encode() if isinstance(body, str) else body
            self._failing = None if status is None else (status, raw)

    def _count(self, path: str, n_in: int) -> tuple[int, bytes] | None:
        with self._lock:
            self.requests[path] += 1
            self.bytes_in += n_in
            if self._failing is not None:
                return self._failing
            return self._injected.pop(0) if self._injected else None

    def _sent(self, n_out: int) -> None:
        with self._lock:
            self.bytes_out += n_out

    # ------------------------------------------------------------------ Redis
    def _run(self, commands: list[list[bytes]]) -> list[Any]:
        """Send commands on one connection; one reply (or ResponseError) per command."""
        conn = self._pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self._pool.release(conn)

    def single(self, command: list[bytes], b64: bool) -> tuple[int, Any]:
        (reply,) = self._run([command])
        if isinstance(reply, ResponseError):
            return 400, {"error": str(reply)}
        return 200, {"result": _encode(reply, b64)}

    def pipeline(self, commands: list[list[bytes]], b64: bool) -> tuple[int, Any]:
        return 200, [_item(r, b64) for r in self._run(commands)]

    def multi_exec(self, commands: list[list[bytes]], b64: bool) -> tuple[int, Any]:
        replies = self._run([[b"MULTI"], *commands, [b"EXEC"]])
        result = replies[-1]
        if isinstance(result, ResponseError):  # discarded: a command was rejected while queueing
            return 400, {"error": str(result)}
        if result is None:
            return 400, {"error": "ERR transaction aborted"}
        return 200, [_item(r, b64) for r in result]


class _Handler(BaseHTTPRequestHandler):
    standin: UpstashStandIn
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._handle()

    def _send(self, status: int, payload: Any = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # counted before the write: once the client has the answer, the counter already has it
        self.standin._sent(len(body))
        self.wfile.write(body)

    def _authorized(self, query: dict[str, list[str]]) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip() == self.standin.token:
            return True
        return query.get("_token", [""])[0] == self.standin.token

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = parts.path.rstrip("/") or "/"
        injected = self.standin._count(path, len(body))
        if injected is not None:
            self._send(injected[0], raw=injected[1])
            return
        if not self._authorized(parse_qs(parts.query)):
            self._send(401, {"error": "Unauthorized"})
            return
        b64 = self.headers.get("Upstash-Encoding", "").strip().lower() == "base64"
        try:
            if path in ("/pipeline", "/multi-exec"):
                data = self._json(body)
                if not isinstance(data, list) or not data:
                    raise _BadRequest("ERR the body must be a non-empty JSON array of commands")
                commands = [_command(c) for c in data]
                if path == "/pipeline":
                    status, payload = self.standin.pipeline(commands, b64)
                else:
                    status, payload = self.standin.multi_exec(commands, b64)
            elif path == "/":
                status, payload = self.standin.single(_command(self._json(body)), b64)
            else:  # path style: /set/key/value, a POST body is the last argument
                command = [unquote_to_bytes(s) for s in path.strip("/").split("/")]
                if body:
                    command.append(body)
                status, payload = self.standin.single(command, b64)
        except _BadRequest as exc:
            status, payload = 400, {"error": str(exc)}
        except redis.RedisError as exc:
            status, payload = 500, {"error": f"ERR redis unavailable: {exc}"}
        self._send(status, payload)

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError as exc:
            raise _BadRequest(f"ERR the body is not valid JSON: {exc}") from exc


def main(argv: list[str] | None = None) -> None:
    """Serve until stdin closes or SIGTERM: ``python -m tests.support.upstash_standin``.

    Starts its own redis-server unless ``--redis-port`` is given; prints ``URL TOKEN`` first."""
    import argparse
    import signal
    import sys

    from tests.support.redis_server import RedisServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-port", type=int, default=0)
    parser.add_argument("--token", default="standin-token")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds: both servers stop
    server = None if args.redis_port else RedisServer().start()
    try:
        port = args.redis_port or (server.port if server else 0)
        with UpstashStandIn(port, token=args.token) as standin:
            print(standin.url, standin.token, flush=True)
            sys.stdin.read()
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()


class Requests:
    """Round trips the stand-in served since the last ``take()``, by path."""

    def __init__(self, upstash: UpstashStandIn) -> None:
        self.upstash = upstash
        self.seen: Counter[str] = Counter(upstash.requests)

    def take(self) -> Counter[str]:
        now = Counter(self.upstash.requests)
        new = now - self.seen
        self.seen = now
        return new
