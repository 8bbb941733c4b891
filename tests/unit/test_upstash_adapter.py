"""UpstashStore without a network: the REST protocol at the transport (httpx.MockTransport):
headers, bodies, and every failure mapped to StoreError / StatsError. The record format:
test_upstash_codec.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from promptcache import ConfigError, Settings, StatsError, StoreError
from promptcache.adapters.upstash import DEFAULT_SEGMENT_BYTES, UpstashStats, UpstashStore
from tests.support.entries import make_entry

URL = "https://example-12345.upstash.io"


def transport(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def b64(value: bytes | str) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


# ------------------------------------------------------------------------------- protocol
def test_put_is_one_atomic_transaction_with_the_ttl() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        commands = json.loads(request.content)
        if request.url.path == "/pipeline":  # the writer learns the generation first
            return httpx.Response(200, json=[{"result": None}, {"result": None}])
        results = [{"result": "OK"}, {"result": "OK"}, {"result": 1}, {"result": 1}]
        return httpx.Response(
            200,
            json=results
            + [{"result": 104}, {"result": None}, {"result": None}][: len(commands) - 4],
        )

    store = UpstashStore(transport(handler), URL + "/", "tok", clock=lambda: 1000.0)
    e = make_entry("p", ns="ns", key="key", now=1000.0, ttl=10.5)
    store.put(e, np.ones(8, np.float32) / np.sqrt(8))
    assert [r.url.path for r in seen] == ["/pipeline", "/multi-exec"]
    request = seen[-1]
    assert request.headers["authorization"] == "Bearer tok"
    assert request.headers["upstash-encoding"] == "base64"
    commands = json.loads(request.content)
    nsid = UpstashStore.namespace_id("ns")
    assert [c[:2] for c in commands[:4] + commands[5:]] == [
        ["SET", f"pc:e:{e.id}"],
        ["SET", f"pc:x:{nsid}:key"],
        ["ZADD", "pc:ids"],
        ["SADD", "pc:nss"],
        ["GET", "pc:epoch"],
        ["GET", f"pc:gen:{nsid}"],
    ]
    # the append: one script, given the segment counter, segment 0, the record, the largest
    # segment (whole 104-character records) and the record size
    evaluate, _, keys, counter, log, record, cap, size = commands[4]
    assert (evaluate, keys, counter, log) == ("EVAL", 2, f"pc:seg:{nsid}:0.0", f"pc:log:{nsid}:0.0")
    assert len(record) == size == 104 and cap == DEFAULT_SEGMENT_BYTES // 104 * 104
    assert commands[0][3:] == ["PX", 10500] and commands[1][3:] == ["PX", 10500]
    assert commands[2][2] == "1010.5"
    assert json.loads(commands[0][2])["entry"] == e.to_json()


def test_results_are_decoded_from_base64_except_ok() -> None:
    stored = make_entry("p", ns="ns")
    value = json.dumps({"v": 1, "dim": 0, "entry": stored.to_json()})

    def handler(request: httpx.Request) -> httpx.Response:
        command = json.loads(request.content)
        if command[0] == "PING":
            return httpx.Response(200, json={"result": b64("PONG")})
        return httpx.Response(200, json={"result": b64(value)})

    store = UpstashStore(transport(handler), URL, "tok")
    store.ping()
    assert store.get(stored.id) == stored


@pytest.mark.parametrize(
    ("response", "match", "cause"),
    [
        (httpx.Response(401, json={"error": "Unauthorized"}), "401", httpx.HTTPStatusError),
        (httpx.Response(500, text="oops"), "HTTP 500: oops", httpx.HTTPStatusError),
        (httpx.Response(503, json={"error": "busy"}), "HTTP 503: busy", httpx.HTTPStatusError),
        (
            httpx.Response(400, json={"error": "ERR syntax error"}),
            "ERR syntax error",
            httpx.HTTPStatusError,
        ),
        (httpx.Response(200, json={"error": "ERR odd"}), "ERR odd", None),
        (httpx.Response(200, text="<html>"), "not JSON", ValueError),
        (httpx.Response(200, json={"result": "%%%"}), "not base64", ValueError),
        (httpx.Response(200, json=[1, 2]), "unexpected answer", None),
    ],
)
def test_http_failures_are_store_errors(
    response: httpx.Response, match: str, cause: type[BaseException] | None
) -> None:
    store = UpstashStore(transport(lambda request: response), URL, "tok")
    with pytest.raises(StoreError, match=match) as info:
        store.get("x")
    if cause is not None:
        assert isinstance(info.value.__cause__, cause)


def test_transport_failures_are_store_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    for handler, cause in ((refuse, httpx.ConnectError), (slow, httpx.ReadTimeout)):
        store = UpstashStore(transport(handler), URL, "tok")
        for call in (store.ping, store.count, lambda: store.sync("ns", "k", None)):  # noqa: B023
            with pytest.raises(StoreError) as info:
                call()
            assert isinstance(info.value.__cause__, cause)


def test_a_failed_command_in_a_pipeline_is_a_store_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json=[
                {"result": None},
                {"error": "WRONGTYPE bad key"},
                {"result": None},
                {"result": ""},
            ],
        )

    store = UpstashStore(transport(handler), URL, "tok")
    with pytest.raises(StoreError, match="GET failed: WRONGTYPE bad key"):
        store.sync("ns", None, None)

    short = UpstashStore(
        transport(lambda r: httpx.Response(200, json=[{"result": None}])), URL, "tok"
    )
    with pytest.raises(StoreError, match="unexpected answer"):
        short.sync("ns", None, None)


def test_a_corrupt_entry_is_a_store_error() -> None:
    store = UpstashStore(
        transport(lambda r: httpx.Response(200, json={"result": b64("{not json")})), URL, "tok"
    )
    with pytest.raises(StoreError, match="corrupt entry"):
        store.get("x")


def test_unencodable_text_is_a_store_error() -> None:
    store = UpstashStore(
        transport(lambda r: httpx.Response(200, json={"result": "OK"})), URL, "tok"
    )
    bad = make_entry("p", ns="ns", response="lone \ud800 surrogate")
    with pytest.raises(StoreError, match="cannot encode"):
        store.put(bad, None)


def test_stats_failures_are_stats_errors() -> None:
    stats = UpstashStats(transport(lambda r: httpx.Response(502, text="bad gateway")), URL, "tok")
    for call in (lambda: stats.add({"a": 1}), stats.read, stats.reset):
        with pytest.raises(StatsError, match="502"):
            call()
    malformed = UpstashStats(
        transport(lambda r: httpx.Response(200, json={"result": [b64("a")]})), URL, "tok"
    )
    with pytest.raises(StatsError, match="malformed"):
        malformed.read()


def test_stats_add_is_one_script_of_exact_increments() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"result": 2})

    UpstashStats(transport(handler), URL, "tok").add({"hits": 1, "skipped": 0, "ms": 0.5})
    assert [r.url.path for r in seen] == ["/"]
    command = json.loads(seen[0].content)
    assert command[0] == "EVAL" and "HINCRBYFLOAT" in command[1]
    assert command[2:] == [1, "pc:stats", "hits", "1.0", "ms", "0.5"]
    UpstashStats(transport(handler), URL, "tok").add({"none": 0})
    assert len(seen) == 1  # nothing to add: no request


# ------------------------------------------------------------------------------- configuration
def test_configuration_errors() -> None:
    client = transport(lambda r: httpx.Response(200, json={"result": "OK"}))
    with pytest.raises(ConfigError, match="UPSTASH_REDIS_REST_TOKEN"):
        UpstashStore(client, URL, "")
    with pytest.raises(ConfigError, match="UPSTASH_REDIS_REST_URL"):
        UpstashStats(client, "", "tok")
    with pytest.raises(ConfigError, match="chunk"):
        UpstashStore(client, URL, "tok", chunk_bytes=1000)
    for bad in (0, -1, 2**40):
        with pytest.raises(ConfigError, match="segment"):
            UpstashStore(client, URL, "tok", segment_bytes=bad)


def test_chunk_setting() -> None:
    base = {"UPSTASH_REDIS_REST_URL": URL, "UPSTASH_REDIS_REST_TOKEN": "t"}
    assert Settings.from_env(base).upstash_chunk_bytes == 4 * 1024 * 1024
    assert (
        Settings.from_env({**base, "PROMPTCACHE_UPSTASH_CHUNK_BYTES": "65536"}).upstash_chunk_bytes
        == 65536
    )
    for bad in ("100", "lots", str(2**30)):
        with pytest.raises(ConfigError, match="PROMPTCACHE_UPSTASH_CHUNK_BYTES"):
            Settings.from_env({**base, "PROMPTCACHE_UPSTASH_CHUNK_BYTES": bad})


def test_the_package_exports_the_names_of_the_former_module() -> None:
    import promptcache.adapters.upstash as upstash

    former = {
        "DEFAULT_CHUNK_BYTES", "MIN_CHUNK_BYTES", "DEFAULT_SEGMENT_BYTES", "SEGMENT_STRIDE",
        "UpstashREST", "UpstashStore", "UpstashStats",
        "record_dtype", "encode_records", "decode_records",
    }  # fmt: skip
    assert set(upstash.__all__) == former | {"DEFAULT_PREFIX", "KeyLayout"}
    assert all(getattr(upstash, name) is not None for name in upstash.__all__)
    assert (upstash.DEFAULT_CHUNK_BYTES, upstash.DEFAULT_SEGMENT_BYTES) == (4 * 2**20, 32 * 2**20)
    assert (upstash.MIN_CHUNK_BYTES, upstash.SEGMENT_STRIDE) == (4096, 2**40)
