"""The Upstash REST stand-in speaks the protocol as documented: auth, the three endpoints, error
shapes, base64 results, atomic transactions."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.support.upstash_standin import UpstashStandIn

pytestmark = pytest.mark.integration


@pytest.fixture
def http(upstash: UpstashStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=upstash.url, headers={"Authorization": f"Bearer {upstash.token}"}
    ) as c:
        yield c


def b64(value: bytes | str) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def post(http: httpx.Client, path: str, body: Any, **headers: str) -> httpx.Response:
    return http.post(path, json=body, headers=headers)


@pytest.mark.parametrize(
    ("path", "body"),
    [("/", ["PING"]), ("/pipeline", [["PING"]]), ("/multi-exec", [["PING"]]), ("/get/k", None)],
)
def test_a_missing_or_wrong_token_is_401(upstash: UpstashStandIn, path: str, body: Any) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {upstash.token}"},
    ):
        response = httpx.post(upstash.url + path, json=body, headers=headers)
        assert response.status_code == 401
        assert "error" in response.json()
    ok = httpx.post(f"{upstash.url}{path}?_token={upstash.token}", json=body)
    assert ok.status_code == 200


def test_single_commands(http: httpx.Client) -> None:
    assert post(http, "/", ["SET", "k", "v", "EX", 100]).json() == {"result": "OK"}
    assert post(http, "/", ["GET", "k"]).json() == {"result": "v"}
    assert post(http, "/", ["GET", "missing"]).json() == {"result": None}
    assert post(http, "/", ["INCRBY", "n", 5]).json() == {"result": 5}
    assert post(http, "/", ["TTL", "k"]).json()["result"] in (99, 100)
    error = post(http, "/", ["INCR", "k"])
    assert error.status_code == 400
    assert error.json() == {"error": "ERR value is not an integer or out of range"}
    unknown = post(http, "/", ["NOSUCHCOMMAND", "x"])
    assert unknown.status_code == 400 and unknown.json()["error"].startswith("ERR unknown command")
    post(http, "/", ["RPUSH", "list", "a"])
    wrong_type = post(http, "/", ["GET", "list"])
    assert wrong_type.status_code == 400 and wrong_type.json()["error"].startswith("WRONGTYPE")


def test_path_style_commands(http: httpx.Client) -> None:
    assert http.post("/set/foo/bar").json() == {"result": "OK"}
    assert http.get("/get/foo").json() == {"result": "bar"}
    assert http.post("/set/doc", content=b"a value / with slashes").json() == {"result": "OK"}
    assert http.get("/get/doc").json() == {"result": "a value / with slashes"}


def test_base64_encodes_every_string_but_ok(http: httpx.Client, redis_client: redis.Redis) -> None:
    enc = {"Upstash-Encoding": "base64"}
    assert post(http, "/", ["SET", "k", "v\u00e9"], **enc).json() == {"result": "OK"}
    assert post(http, "/", ["GET", "k"], **enc).json() == {"result": b64("v\u00e9")}
    assert post(http, "/", ["PING"], **enc).json() == {"result": b64("PONG")}
    assert post(http, "/", ["INCR", "n"], **enc).json() == {"result": 1}
    assert post(http, "/", ["GET", "missing"], **enc).json() == {"result": None}
    post(http, "/", ["RPUSH", "list", "a", "b"])
    assert post(http, "/", ["LRANGE", "list", 0, -1], **enc).json() == {
        "result": [b64("a"), b64("b")]
    }

    raw = b"\xff\x00\xfe binary"
    redis_client.set("bin", raw)
    assert base64.b64decode(post(http, "/", ["GET", "bin"], **enc).json()["result"]) == raw
    assert post(http, "/", ["GET", "bin"]).json()["result"] == "\ufffd\x00\ufffd binary"


def test_pipeline_is_per_command_and_not_atomic(http: httpx.Client) -> None:
    response = post(
        http,
        "/pipeline",
        [["SET", "a", "1"], ["INCR", "nope", "extra"], ["INCR", "a"], ["GET", "a"]],
        **{"Upstash-Encoding": "base64"},
    )
    assert response.status_code == 200
    items = response.json()
    assert items[0] == {"result": "OK"}
    assert items[1]["error"].startswith("ERR wrong number of arguments")
    assert items[2:] == [{"result": 2}, {"result": b64("2")}]


def test_multi_exec_shapes_and_discarded_transactions(http: httpx.Client) -> None:
    done = post(http, "/multi-exec", [["SET", "a", "x"], ["INCR", "a"], ["GET", "a"]])
    assert done.status_code == 200
    items = done.json()
    assert items[0] == {"result": "OK"}
    assert items[1] == {"error": "ERR value is not an integer or out of range"}  # runtime error
    assert items[2] == {"result": "x"}

    discarded = post(http, "/multi-exec", [["SET", "a", "changed"], ["NOSUCHCOMMAND"]])
    assert discarded.status_code == 400
    assert discarded.json()["error"].startswith("EXECABORT")
    assert post(http, "/", ["GET", "a"]).json() == {"result": "x"}  # nothing applied


def test_multi_exec_is_atomic(upstash: UpstashStandIn) -> None:
    """Two INCRs of one transaction are never interleaved with another client's."""
    pairs: list[list[int]] = []
    lock = threading.Lock()

    def run() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {upstash.token}"}) as c:
            for _ in range(40):
                items = c.post(
                    upstash.url + "/multi-exec", json=[["INCR", "c"], ["INCR", "c"]]
                ).json()
                with lock:
                    pairs.append([i["result"] for i in items])

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(second == first + 1 and first % 2 == 1 for first, second in pairs)
    assert sorted(p[1] for p in pairs) == list(range(2, 2 * 6 * 40 + 1, 2))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/", b"not json"),
        ("/", b"[]"),
        ("/", b'{"command": "GET"}'),
        ("/", b'["SET", "k", {"nested": 1}]'),
        ("/", b'["SET", "k", true]'),
        ("/pipeline", b"[]"),
        ("/pipeline", b'["GET", "k"]'),
        ("/multi-exec", b"[[]]"),
    ],
)
def test_malformed_bodies_are_400(http: httpx.Client, path: str, body: bytes) -> None:
    response = http.post(path, content=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith("ERR")


def test_counters_and_injected_answers(upstash: UpstashStandIn, http: httpx.Client) -> None:
    post(http, "/", ["PING"])
    post(http, "/pipeline", [["PING"], ["PING"]])
    assert upstash.requests == {"/": 1, "/pipeline": 1} and upstash.total_requests == 2
    assert upstash.bytes_in > 0 and upstash.bytes_out > 0
    upstash.inject(503, '{"error": "overloaded"}')
    assert post(http, "/", ["PING"]).status_code == 503
    assert post(http, "/", ["PING"]).status_code == 200
