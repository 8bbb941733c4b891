"""UpstashVectorIndex at the HTTP boundary (httpx.MockTransport): the requests it sends (the
SDK's payloads, the namespace in the path, the token) and every failure as a StoreError."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from promptcache import StoreError
from promptcache.adapters.upstash_vector import UpstashVectorIndex

URL = "https://idx-1-vector.upstash.io"
V = np.array([0.6, 0.8], dtype=np.float32)


def index(handler: Callable[[httpx.Request], httpx.Response]) -> UpstashVectorIndex:
    return UpstashVectorIndex(httpx.Client(transport=httpx.MockTransport(handler)), URL, "tok")


def test_requests_carry_the_namespace_the_token_and_the_expiry() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.startswith("/query"):
            result = [{"id": "e1", "score": 0.975}, {"id": "e2", "score": 0.8}]
            return httpx.Response(200, json={"result": result})
        return httpx.Response(200, json={"result": "Success"})

    idx = index(handler)
    idx.add("t:m:2/x y", "e1", V, 1234.5)
    idx.add("t:m:2/x y", "e2", V, None)
    found = idx.search("t:m:2/x y", V, k=4, min_score=0.9, now=1000.0)
    assert found == [("e1", pytest.approx(0.95))]  # 2 * 0.975 - 1; 0.8 -> cosine 0.6 < 0.9
    upsert, sweep, _, query = seen  # the namespace's first write sweeps it too
    assert sweep.url.raw_path == b"/delete/t%3Am%3A2%2Fx%20y"
    assert upsert.url.raw_path == b"/upsert/t%3Am%3A2%2Fx%20y"
    assert upsert.headers["Authorization"] == "Bearer tok"
    body = json.loads(upsert.content)
    assert body[0]["id"] == "e1" and body[0]["metadata"] == {"exp": 1234.5}
    assert body[0]["vector"] == pytest.approx([0.6, 0.8])
    assert json.loads(seen[2].content)[0]["metadata"] == {"exp": 1e10}  # never expires
    q = json.loads(query.content)
    assert q["topK"] == 4 and q["filter"] == "exp > 1000.0"
    assert idx.search("ns", V, k=0, min_score=0.0, now=0.0) == []


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx.Response(401, json={"error": "Unauthorized", "status": 401}), "HTTP 401: Unauth"),
        (httpx.Response(502, text="<html>bad gateway</html>"), "HTTP 502: <html>"),
        (httpx.Response(200, json={"error": "ERR something"}), "HTTP 200: ERR something"),
        (httpx.Response(200, json={"nothing": 1}), "without a result"),
        (httpx.Response(200, json=[1, 2]), "HTTP 200"),
    ],
)
def test_every_failure_is_a_store_error(response: httpx.Response, match: str) -> None:
    idx = index(lambda request: response)
    with pytest.raises(StoreError, match=match):
        idx.search("ns", V, k=1, min_score=0.0, now=0.0)


def test_a_transport_failure_is_a_store_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with pytest.raises(StoreError, match="ConnectTimeout"):
        index(handler).add("ns", "e", V, None)


def test_remove_clear_and_ping_use_their_endpoints() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(
            request.url.path + ("?" + request.url.query.decode() if request.url.query else "")
        )
        result = {"deleted": 1} if "delete" in request.url.path else "Success"
        if request.url.path == "/info":
            result = {"vectorCount": 0, "pendingVectorCount": 0, "indexSize": 0, "dimension": 2,
                      "similarityFunction": "COSINE", "namespaces": {}}  # fmt: skip
        return httpx.Response(200, json={"result": result})

    idx = index(handler)
    idx.remove("a:b", "e1")
    idx.clear()
    idx.ping()
    assert paths == ["/delete/a:b", "/reset?all", "/info"]  # httpx may unquote a ':' it sends


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_writes_sweep_expired_vectors_once_per_namespace_per_interval() -> None:
    seen: list[tuple[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.raw_path.decode(), json.loads(request.content)))
        path = request.url.path
        result = {"deleted": 2} if path.startswith("/delete") else "Success"
        return httpx.Response(200, json={"result": [] if path.startswith("/query") else result})

    clock = Clock(2000.0)
    client = httpx.Client(transport=httpx.MockTransport(handler))
    idx = UpstashVectorIndex(client, URL, "tok", sweep_interval=300.0, clock=clock)
    assert idx.sweep_interval == 300.0
    idx.add("a", "e1", V, None)
    idx.add("a", "e2", V, None)  # inside the interval: no second sweep
    idx.add("b", "e3", V, None)  # another namespace has its own
    clock.now += 299.0
    idx.add("a", "e4", V, None)
    idx.search("a", V, k=1, min_score=0.0, now=clock.now)  # reads never sweep
    clock.now += 1.0
    idx.add("a", "e5", V, None)
    sweeps = [(path, body) for path, body in seen if path.startswith("/delete")]
    assert sweeps == [
        ("/delete/a", {"filter": "exp <= 2000.0"}),
        ("/delete/b", {"filter": "exp <= 2000.0"}),
        ("/delete/a", {"filter": "exp <= 2300.0"}),
    ]
    assert idx.sweep_failures == 0


def test_add_many_upserts_in_batches_of_500_and_sweeps_once() -> None:
    sizes: list[int] = []
    deletes = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal deletes
        if request.url.path.startswith("/delete"):
            deletes += 1
            return httpx.Response(200, json={"result": {"deleted": 0}})
        sizes.append(len(json.loads(request.content)))
        return httpx.Response(200, json={"result": "Success"})

    idx = index(handler)
    idx.add_many("ns", [(f"e{i}", V, 1e9 + i) for i in range(1201)])
    assert sizes == [500, 500, 201] and deletes == 1
    idx.add_many("other", [])  # nothing to write: no request at all
    assert sizes == [500, 500, 201] and deletes == 1


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, json={"error": "boom", "status": 500}),
        httpx.ConnectError("refused"),
    ],
)
def test_a_failing_sweep_leaves_the_write_done(
    failure: httpx.Response | Exception, caplog: pytest.LogCaptureFixture
) -> None:
    upserts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/delete"):
            if isinstance(failure, Exception):
                raise failure
            return failure
        upserts.append(json.loads(request.content)[0]["id"])
        return httpx.Response(200, json={"result": "Success"})

    clock = Clock(2000.0)
    client = httpx.Client(transport=httpx.MockTransport(handler))
    idx = UpstashVectorIndex(client, URL, "tok", clock=clock)
    with caplog.at_level(logging.WARNING, logger="promptcache"):
        idx.add("ns", "e1", V, None)  # no exception: the vector is written
    assert upserts == ["e1"] and idx.sweep_failures == 1
    assert "sweeping expired vectors of ns failed" in caplog.text
    idx.add("ns", "e2", V, None)  # a failed sweep waits the interval too
    assert upserts == ["e1", "e2"] and idx.sweep_failures == 1
    clock.now += 300.0
    idx.add("ns", "e3", V, None)
    assert idx.sweep_failures == 2
