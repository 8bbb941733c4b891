"""UpstashVectorIndex at the HTTP boundary (httpx.MockTransport): the requests it sends (the
SDK's payloads, the namespace in the path, the token) and every failure as a StoreError."""

from __future__ import annotations

import json
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
    upsert, _, query = seen
    assert upsert.url.raw_path == b"/upsert/t%3Am%3A2%2Fx%20y"
    assert upsert.headers["Authorization"] == "Bearer tok"
    body = json.loads(upsert.content)
    assert body[0]["id"] == "e1" and body[0]["metadata"] == {"exp": 1234.5}
    assert body[0]["vector"] == pytest.approx([0.6, 0.8])
    assert json.loads(seen[1].content)[0]["metadata"] == {"exp": 1e10}  # never expires
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
