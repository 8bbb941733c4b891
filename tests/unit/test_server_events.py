from __future__ import annotations

import base64
import socket

import pytest

from promptcache_tools.server import from_result, make_server, to_event


def test_to_event_is_an_http_api_v2_event() -> None:
    event = to_event(
        "POST",
        "/chat?a=1&a=2&b=",
        {"Content-Type": "application/json", "X-Thing": "y"},
        b'{"p":1}',
        "10.0.0.1",
    )
    assert event["version"] == "2.0"
    assert event["rawPath"] == "/chat" and event["rawQueryString"] == "a=1&a=2&b="
    assert event["queryStringParameters"] == {"a": "1,2", "b": ""}
    assert event["headers"]["x-thing"] == "y"
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["requestContext"]["http"]["sourceIp"] == "10.0.0.1"
    assert event["body"] == '{"p":1}' and event["isBase64Encoded"] is False


def test_binary_bodies_travel_base64() -> None:
    event = to_event("POST", "/chat", {"Content-Type": "application/octet-stream"}, b"\xff\x00")
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\x00"


def test_from_result() -> None:
    status, headers, body = from_result(
        {
            "statusCode": 201,
            "headers": {"A": "1"},
            "cookies": ["c=1"],
            "body": "aGk=",
            "isBase64Encoded": True,
        }
    )
    assert (
        status == 201
        and ("A", "1") in headers
        and ("Set-Cookie", "c=1") in headers
        and body == b"hi"
    )


def test_a_burst_of_connections_waits_in_the_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients connecting faster than the server accepts (a burst, a busy machine) queue in the
    listen backlog. With http.server's default of 5, the rest were dropped or reset."""
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory")
    server = make_server("127.0.0.1", 0)  # listening, but accepting nothing yet
    clients: list[socket.socket] = []
    try:
        for _ in range(64):
            clients.append(client := socket.socket())
            client.settimeout(2.0)
            client.connect(server.server_address)
        assert len(clients) == 64
    finally:
        for client in clients:
            client.close()
        server.server_close()
