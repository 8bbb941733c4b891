from __future__ import annotations

import base64

from promptcache.server import from_result, to_event


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
