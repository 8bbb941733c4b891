"""The server-side indexes against real servers: RedisIndex on Redis 8 + RediSearch, and the
Upstash Vector stand-in's protocol (which UpstashVectorIndex relies on) over the same engine.
``TEST_INDEX_ENTRIES`` sizes the recall check (default 400 entries of 384-d, CI the same)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from promptcache import (
    ChatRequest,
    ConfigError,
    Message,
    PromptCache,
    Settings,
    StoreError,
    Tier,
)
from promptcache import runtime as runtime_mod
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.adapters.redis_index import RedisIndex
from promptcache.adapters.upstash_vector import UpstashVectorIndex
from promptcache.index import VectorIndex
from tests.support.redis_server import RedisServer
from tests.support.serve import free_port
from tests.support.upstash_vector_standin import UpstashVectorStandIn
from tests.unit.fakes import FakeEmbedder, FakeLLM, blend, unit

pytestmark = pytest.mark.integration
ENTRIES = int(os.environ.get("TEST_INDEX_ENTRIES", "400"))
NS = "tenant:fake:8:abc"


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    m = rng.standard_normal((n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@pytest.fixture
def make_index(redis_server: RedisServer, redis_client: Any) -> Iterator[Callable[..., RedisIndex]]:
    """``make_index(**kwargs)``: a RedisIndex on the (emptied) test Redis, closed afterwards."""
    made: list[RedisIndex] = []

    def make(**kwargs: Any) -> RedisIndex:
        made.append(RedisIndex(redis_server.client(), **kwargs))
        return made[-1]

    yield make
    for index in made:
        index.close()


# ------------------------------------------------------------------ RedisIndex
def test_hnsw_knn_keeps_top1_of_the_exact_scan(make_index: Callable[..., RedisIndex]) -> None:
    """KNN with EF_RUNTIME (not a range query): top-1 identical to the exact scan on >= 99% of
    queries near stored entries (the cache's case: a paraphrase near one stored prompt)."""
    rng = np.random.default_rng(7)
    dim, n = 384, ENTRIES
    rows = unit_rows(rng, n, dim)
    index = make_index(algorithm="hnsw")
    exact = VectorIndex(dim)
    ids = [f"e{i}" for i in range(n)]
    for i, entry_id in enumerate(ids):
        index.add(NS, entry_id, rows[i], None)
    exact.add(ids, rows)
    queries = [blend(rows[i], unit(f"q{i}", dim), 0.9) for i in range(0, n, max(1, n // 200))]
    same = 0
    for q in queries:
        want = exact.search(q, k=1)[0][0]
        got = index.search(NS, q, k=1, min_score=-1.0, now=time.time())
        same += bool(got) and got[0][0] == want
    assert same / len(queries) >= 0.99, f"top-1 identical on {same}/{len(queries)}"


def test_redis_index_expiry_is_the_keys_ttl_too(
    make_index: Callable[..., RedisIndex], redis_client: Any
) -> None:
    index = make_index()
    now = time.time()
    index.add(NS, "a", unit("a"), now + 3600)
    index.add(NS, "b", unit("b"), None)
    assert 3_500_000 < redis_client.pttl("promptcache:vec:a") <= 3_600_000
    assert redis_client.pttl("promptcache:vec:b") == -1  # no expiry
    index.add(NS, "a", unit("a"), None)  # replaced: the old TTL goes too
    assert redis_client.pttl("promptcache:vec:a") == -1
    index.remove(NS, "a")
    assert not redis_client.exists("promptcache:vec:a")
    index.remove(NS, "never-there")  # absent: nothing happens


def test_redis_drops_an_expired_entrys_hash_by_itself(
    make_index: Callable[..., RedisIndex], redis_client: Any
) -> None:
    """No sweep needed: the key's PEXPIREAT removes the hash (and so its search index row)."""
    index = make_index()
    index.add(NS, "brief", unit("a"), time.time() + 0.05)
    index.add(NS, "kept", unit("b"), None)
    deadline = time.monotonic() + 5.0
    while redis_client.exists("promptcache:vec:brief") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not redis_client.exists("promptcache:vec:brief")
    assert redis_client.exists("promptcache:vec:kept")
    found = index.search(NS, unit("a"), k=4, min_score=-1.0, now=0.0)  # even with now = 0
    assert [i for i, _ in found] == ["kept"]


def test_redis_add_many_is_one_transaction_per_500_entries(
    make_index: Callable[..., RedisIndex], redis_client: Any
) -> None:
    index = make_index()
    index.add(NS, "warm", unit("warm"), None)  # the search index exists
    rows = unit_rows(np.random.default_rng(3), 1001, 8)
    redis_client.config_resetstat()
    index.add_many(NS, [(f"e{i}", rows[i], 4e9 if i % 2 else None) for i in range(1001)])
    assert redis_client.info("commandstats")["cmdstat_exec"]["calls"] == 3
    assert (
        redis_client.pttl("promptcache:vec:e1") > 0
        and redis_client.pttl("promptcache:vec:e0") == -1
    )
    found = index.search(NS, rows[700], k=1, min_score=0.99, now=time.time())
    assert [i for i, _ in found] == ["e700"]
    index.add_many(NS, [])  # nothing: no round trip


def test_redis_index_keeps_dimensions_apart(make_index: Callable[..., RedisIndex]) -> None:
    index = make_index()
    index.add(NS, "eight", unit("x", 8), None)
    index.add("tenant:other:16:abc", "sixteen", unit("x", 16), None)
    assert index.search(NS, unit("x", 8), k=4, min_score=0.5, now=0.0)[0][0] == "eight"
    found = index.search("tenant:other:16:abc", unit("x", 16), k=4, min_score=0.5, now=0.0)
    assert [i for i, _ in found] == ["sixteen"]
    assert index.search(NS, unit("x", 32), k=4, min_score=-1.0, now=0.0) == []  # none yet


def test_redis_index_reads_resp3_replies(redis_server: RedisServer, redis_client: Any) -> None:
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, protocol=3)
    try:
        index = RedisIndex(client, algorithm="flat")
        index.add(NS, "a", unit("a"), None)
        found = index.search(NS, unit("a"), k=2, min_score=0.9, now=0.0)
        assert [i for i, _ in found] == ["a"] and found[0][1] == pytest.approx(1.0, abs=1e-5)
    finally:
        client.close()


def test_redis_index_refuses_bad_settings(make_index: Callable[..., RedisIndex]) -> None:
    with pytest.raises(ConfigError, match="algorithm"):
        make_index(algorithm="ivf")
    with pytest.raises(ConfigError, match="positive"):
        make_index(ef_runtime=0)


def test_redis_without_the_query_engine_is_a_store_error() -> None:
    with RedisServer() as plain:  # no modules: FT.CREATE is an unknown command
        index = RedisIndex(plain.client())
        with pytest.raises(StoreError, match="cannot create"):
            index.add(NS, "a", unit("a"), None)
        index.close()


def _req(prompt: str) -> ChatRequest:
    return ChatRequest(messages=(Message("user", prompt),), model="m")


def test_an_unreachable_index_bypasses_and_stores_nothing() -> None:
    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    store = MemoryStore()
    llm = FakeLLM()
    cache = PromptCache(
        store=store, index=RedisIndex(client), embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm
    )
    first = cache.chat(_req("hello there"))
    assert first.tier is Tier.BYPASS and "index" in (first.bypass_reason or "")
    assert store.count() == 0 and llm.calls == 1
    ok, deps = cache.health()
    assert ok  # the store answers; the index's failures bypass, as the store's do
    client.close()


# ------------------------------------------------------------------ the Upstash Vector stand-in
def post(standin: UpstashVectorStandIn, path: str, body: Any, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token or standin.token}"}
    return httpx.post(standin.url + path, json=body, headers=headers, timeout=10)


def test_standin_auth_and_error_shapes(upstash_vector: UpstashVectorStandIn) -> None:
    r = post(upstash_vector, "/info", None, token="wrong")
    assert r.status_code == 401 and r.json() == {
        "error": "Unauthorized: Invalid auth token",
        "status": 401,
    }
    r = post(upstash_vector, "/upsert", {"id": "a", "vector": [1.0, 0.0]})
    assert r.status_code == 400 and "dimension" in r.json()["error"]
    assert r.json()["status"] == 400
    r = post(upstash_vector, "/nope", {})
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.put(
        upstash_vector.url + "/reset",
        headers={"Authorization": f"Bearer {upstash_vector.token}"},
        timeout=10,
    )
    assert r.status_code == 405


def test_standin_namespaces_query_fetch_delete_info(upstash_vector: UpstashVectorStandIn) -> None:
    a, b = unit("a"), unit("b")
    ok = post(upstash_vector, "/upsert/ns%3A1", [
        {"id": "a", "vector": a.tolist(), "metadata": {"exp": 10, "kind": "x"}, "data": "A"},
        {"id": "b", "vector": b.tolist(), "metadata": {"exp": 20, "kind": "y"}},
    ])  # fmt: skip
    assert ok.json() == {"result": "Success"}
    post(upstash_vector, "/upsert", {"id": "a", "vector": a.tolist()})  # default namespace
    query = {"vector": a.tolist(), "topK": 5, "includeMetadata": True, "includeData": True}
    r = post(upstash_vector, "/query/ns%3A1", query)
    result = r.json()["result"]
    assert [x["id"] for x in result] == ["a", "b"]
    assert result[0]["score"] == pytest.approx(1.0, abs=1e-5)  # (1 + cos) / 2
    assert result[1]["score"] == pytest.approx((1 + float(a @ b)) / 2, abs=1e-5)
    assert result[0]["metadata"] == {"exp": 10, "kind": "x"} and result[0]["data"] == "A"
    assert "vector" not in result[0]
    fetched = post(upstash_vector, "/fetch/ns%3A1", {"ids": ["b", "zz"], "includeVectors": True})
    got = fetched.json()["result"]
    assert got[1] is None and got[0]["id"] == "b"
    assert got[0]["vector"] == pytest.approx(b.tolist(), abs=1e-6)
    info = post(upstash_vector, "/info", None).json()["result"]
    assert info["dimension"] == 8 and info["similarityFunction"] == "COSINE"
    assert info["vectorCount"] == 3
    assert info["namespaces"]["ns:1"]["vectorCount"] == 2
    assert post(upstash_vector, "/delete/ns%3A1", {"ids": ["a", "zz"]}).json() == {
        "result": {"deleted": 1}
    }
    assert post(upstash_vector, "/reset?all", None).json() == {"result": "Success"}
    assert post(upstash_vector, "/info", None).json()["result"]["vectorCount"] == 0


@pytest.mark.parametrize(
    ("flt", "want"),
    [
        ("exp > 10", ["b", "c"]),
        ("exp >= 10 AND kind = 'x'", ["a"]),
        ("kind = 'x' OR exp = 30", ["a", "c"]),
        ("(kind != 'x') AND exp < 30", ["b"]),
        ("exp <= 20 AND (kind = 'y' OR kind = \"x\")", ["a", "b"]),
        ("missing > 1", []),
        ("", ["a", "b", "c"]),
    ],
)
def test_standin_filters_run_on_the_query_engine(
    upstash_vector: UpstashVectorStandIn, flt: str, want: list[str]
) -> None:
    rows = [("a", 10, "x"), ("b", 20, "y"), ("c", 30, "z")]
    post(upstash_vector, "/upsert/f", [
        {"id": i, "vector": unit(i).tolist(), "metadata": {"exp": e, "kind": k}} for i, e, k in rows
    ])  # fmt: skip
    r = post(upstash_vector, "/query/f", {"vector": unit("a").tolist(), "topK": 10, "filter": flt})
    assert r.status_code == 200, r.text
    assert sorted(x["id"] for x in r.json()["result"]) == want


@pytest.mark.parametrize("flt", ["kind GLOB 'x*'", "exp >", "exp > 1 AND", "(exp > 1", "a.b = 1"])
def test_standin_rejects_what_it_does_not_cover(
    upstash_vector: UpstashVectorStandIn, flt: str
) -> None:
    post(
        upstash_vector,
        "/upsert/f",
        {"id": "a", "vector": unit("a").tolist(), "metadata": {"exp": 1}},
    )
    r = post(upstash_vector, "/query/f", {"vector": unit("a").tolist(), "topK": 1, "filter": flt})
    assert r.status_code == 400 and r.json()["status"] == 400 and r.json()["error"]


def test_standin_deletes_by_filter_in_one_namespace(upstash_vector: UpstashVectorStandIn) -> None:
    for ns in ("f", "g"):
        post(upstash_vector, f"/upsert/{ns}", [
            {"id": i, "vector": unit(i).tolist(), "metadata": {"exp": e}}
            for i, e in [("a", 10), ("b", 20), ("c", 30)]
        ])  # fmt: skip
    r = post(upstash_vector, "/delete/f", {"filter": "exp <= 20"})
    assert r.status_code == 200 and r.json() == {"result": {"deleted": 2}}
    assert post(upstash_vector, "/delete/f", {"filter": "exp <= 20"}).json() == {
        "result": {"deleted": 0}
    }
    assert post(upstash_vector, "/delete/f", {"filter": "missing > 1"}).json() == {
        "result": {"deleted": 0}
    }
    counts = upstash_vector.info()["namespaces"]
    assert counts["f"]["vectorCount"] == 1 and counts["g"]["vectorCount"] == 3
    for bad in ("", "exp GLOB '1*'", "exp <="):
        r = post(upstash_vector, "/delete/f", {"filter": bad})
        assert r.status_code == 400 and r.json()["status"] == 400 and r.json()["error"]
    assert upstash_vector.info()["namespaces"]["f"]["vectorCount"] == 1


def test_upstash_vector_index_sweeps_expired_vectors_on_writes(
    upstash_vector: UpstashVectorStandIn,
) -> None:
    class Clock:
        now = 2000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    with httpx.Client(timeout=10) as client:
        index = UpstashVectorIndex(
            client, upstash_vector.url, upstash_vector.token, sweep_interval=300, clock=clock
        )
        index.add(NS, "old", unit("a"), 2100.0)  # the first write sweeps (nothing expired yet)
        index.add(NS, "live", unit("b"), 9000.0)
        index.add("other", "other-old", unit("a"), 2100.0)
        assert upstash_vector.requests["delete"] == 2
        clock.now = 2200.0  # "old" has expired, the interval has not passed
        index.add(NS, "new", unit("c"), None)
        assert upstash_vector.requests["delete"] == 2
        assert upstash_vector.info()["namespaces"][NS]["vectorCount"] == 3
        clock.now = 2300.0  # the interval has passed: this write sweeps
        index.add(NS, "newer", unit("d"), None)
        assert upstash_vector.requests["delete"] == 3
        counts = upstash_vector.info()["namespaces"]
        assert counts[NS]["vectorCount"] == 3 and counts["other"]["vectorCount"] == 1
        ids = {
            r["id"] for r in upstash_vector.fetch(NS, {"ids": ["old", "live", "new", "newer"]}) if r
        }
        assert ids == {"live", "new", "newer"}
        assert index.sweep_failures == 0


# ------------------------------------------------------------------ UpstashVectorIndex on it
def test_upstash_vector_index_errors_are_store_errors(
    upstash_vector: UpstashVectorStandIn,
) -> None:
    with httpx.Client(timeout=10) as client:
        bad = UpstashVectorIndex(client, upstash_vector.url, "wrong-token")
        with pytest.raises(StoreError, match="HTTP 401"):
            bad.search(NS, unit("a"), k=1, min_score=0.0, now=0.0)
        index = UpstashVectorIndex(client, upstash_vector.url, upstash_vector.token)
        with pytest.raises(StoreError, match="HTTP 400.*dimension"):
            index.add(NS, "a", unit("a", 16), None)  # the index is 8-d
        index.ping()
    unreachable = UpstashVectorIndex(
        httpx.Client(timeout=1), f"http://127.0.0.1:{free_port()}", "t"
    )
    with pytest.raises(StoreError, match="ConnectError"):
        unreachable.ping()


def test_upstash_vector_index_namespaces_and_expiry(upstash_vector: UpstashVectorStandIn) -> None:
    with httpx.Client(timeout=10) as client:
        index = UpstashVectorIndex(  # its sweeps at time 0 leave the vector of 1000 s
            client, upstash_vector.url, upstash_vector.token, clock=lambda: 0.0
        )
        index.add(NS, "a", unit("a"), 1000.0)
        index.add("tenant b:fake:8:abc/x?y", "b", unit("a"), None)  # any text is a namespace
        assert [i for i, _ in index.search(NS, unit("a"), k=3, min_score=0.5, now=999.0)] == ["a"]
        assert index.search(NS, unit("a"), k=3, min_score=0.5, now=1000.0) == []
        found = index.search("tenant b:fake:8:abc/x?y", unit("a"), k=3, min_score=0.5, now=5e9)
        assert [i for i, _ in found] == ["b"]
        assert set(upstash_vector.info()["namespaces"]) == {NS, "tenant b:fake:8:abc/x?y"}


# ------------------------------------------------------------------ chosen by settings
@pytest.mark.parametrize("kind", ["redis", "upstash-vector"])
def test_the_setting_chooses_the_index(
    kind: str, redis_server: RedisServer, upstash_vector: UpstashVectorStandIn
) -> None:
    env = {"PROMPTCACHE_STORE": "memory", "PROMPTCACHE_INDEX": kind, "PROMPTCACHE_LLM": "none"}
    if kind == "redis":
        env["PROMPTCACHE_REDIS_URL"] = f"redis://127.0.0.1:{redis_server.port}/0"
    else:
        env["UPSTASH_VECTOR_REST_URL"] = upstash_vector.url
        env["UPSTASH_VECTOR_REST_TOKEN"] = upstash_vector.token
    settings = Settings.from_env(env)
    assert settings.index == kind and "redis://" not in repr(settings)
    index = runtime_mod.INDEXES[kind](settings)
    assert isinstance(index, RedisIndex if kind == "redis" else UpstashVectorIndex)
    base = unit("q")
    cache = PromptCache(
        store=MemoryStore(),
        index=index,
        embedder=FakeEmbedder({"question one": base, "question 1": blend(base, unit("r"), 0.95)}),
        stats=MemoryStats(),
        llm=FakeLLM(),
    )
    try:
        assert cache.chat(_req("question one")).tier is Tier.MISS
        assert cache.chat(_req("question 1")).tier is Tier.SEMANTIC
    finally:
        assert isinstance(index, RedisIndex | UpstashVectorIndex)
        index.close()


def test_a_timed_out_search_is_a_store_error_not_a_miss() -> None:
    from promptcache.adapters.redis_index import _hits

    reply = {b"total_results": 0, b"results": [], b"warning": [b"Timeout limit was reached"]}
    with pytest.raises(StoreError, match="timed out"):
        _hits(reply)
    assert _hits({b"results": [], b"warning": []}) == []
    with pytest.raises(StoreError, match="unexpected FT.SEARCH reply"):
        _hits(b"OK")
