"""What `promptcache serve` answers before any handler runs, over raw sockets: every error is the
project's JSON body with the fitting status, bad lengths are refused, chunked request bodies are
refused with 411 (not read as the next request), and silent clients are disconnected after the
idle timeout (PROMPTCACHE_SERVER_IDLE_TIMEOUT, small here)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.serve import ServerProcess

pytestmark = pytest.mark.integration

IDLE = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("protocol")
    process = ServerProcess(
        {
            "PROMPTCACHE_DATA_DIR": str(tmp / "data"),
            "PROMPTCACHE_SERVER_IDLE_TIMEOUT": str(IDLE),
            "OPENAI_BASE_URL": "",
        },
        tmp / "server.log",
    ).start()
    try:
        yield process
    finally:
        process.stop()


def exchange(server: ServerProcess, raw: bytes, wait: float = 10.0) -> bytes:
    """Send ``raw``, then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def parse(reply: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers["content-length"])
    return status, headers, json.loads(body[:length])


def json_error(server: ServerProcess, raw: bytes, status: int, code: str) -> dict[str, Any]:
    reply = exchange(server, raw)
    got, headers, body = parse(reply)
    assert got == status, reply
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert body["error"]["code"] == code and body["error"]["message"], body
    assert len(reply.partition(b"\r\n\r\n")[2]) == int(headers["content-length"]), reply
    # one answer and nothing after it: the rest of the request is never read as another one
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not_implemented"),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 501, "not_implemented"),
        (b"get /health HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not_implemented"),
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET /health\r\n\r\n", 400, "bad_request"),  # HTTP/0.9
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400, "bad_request"),
        (b"GET /health HTTP/x.y\r\n\r\n", 400, "bad_request"),
        (b"GET /health HTTP/9.9\r\n\r\n", 505, "http_version_not_supported"),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "uri_too_long"),
        (
            b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
            431,
            "request_header_fields_too_large",
        ),
        (
            b"GET /health HTTP/1.1\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 160) for i in range(101))
            + b"\r\n",
            431,
            "request_header_fields_too_large",
        ),
    ],
)
def test_errors_the_server_answers_itself_are_json(
    server: ServerProcess, raw: bytes, status: int, code: str
) -> None:
    json_error(server, raw, status, code)


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1.5", b"+3", b"3, 4", b"\xd9\xa3"])
def test_a_bad_content_length_is_a_400(server: ServerProcess, length: bytes) -> None:
    raw = (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + length + b"\r\n\r\n{}"
    )
    assert "Content-Length" in json_error(server, raw, 400, "bad_request")["message"]


def test_conflicting_content_lengths_are_a_400(server: ServerProcess) -> None:
    raw = b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    json_error(server, raw, 400, "bad_request")


def test_a_body_over_10_mb_is_a_413(server: ServerProcess) -> None:
    raw = b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 10485761\r\n\r\n"
    json_error(server, raw, 413, "payload_too_large")


def test_a_chunked_body_is_a_411_and_its_chunks_are_never_a_request(server: ServerProcess) -> None:
    inner = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"  # would be answered if parsed as a request
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(inner), inner)
    raw = (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk
    )
    error = json_error(server, raw, 411, "length_required")
    assert "Content-Length" in error["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"POST /chat HTTP/1.1\r\nHost: x\r\n",
        b"POST /chat HTTP/1.1\r\nContent-Length: 9\r\n\r\n{",
    ],
    ids=["nothing", "headers-never-finished", "body-never-finished"],
)
def test_a_silent_client_is_disconnected_after_the_idle_timeout(
    server: ServerProcess, raw: bytes
) -> None:
    started = time.monotonic()
    reply = exchange(server, raw, wait=IDLE + 10)
    elapsed = time.monotonic() - started
    assert reply == b""
    assert IDLE * 0.9 <= elapsed < IDLE + 5


def test_a_keep_alive_connection_still_answers_and_the_server_lives_on(
    server: ServerProcess,
) -> None:
    one = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = exchange(server, one + one)  # both answered; then the idle timeout closes it
    assert reply.count(b"HTTP/1.1 200") == 2
    response = httpx.post(
        server.url + "/chat",
        content=b'{"prompt": "\\ud800"}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400 and "surrogate" in response.json()["error"]["message"]
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
