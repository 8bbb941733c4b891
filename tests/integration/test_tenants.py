"""Counters per tenant over real HTTP (``promptcache serve`` with API keys and an admin key), and
exact under 16 concurrent writers on every store's stats."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptcache import PromptCache
from promptcache._accounting import tenant_prefix
from promptcache._protocols import Stats
from promptcache._types import ChatRequest, Message
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.adapters.sqlite import SQLiteStats, SQLiteStore
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess, local_server
from tests.unit.fakes import FakeEmbedder, FakeLLM

ADMIN = "admin-http-key"


@pytest.fixture
def keyed(tmp_path: Path, upstream: OpenAIUpstream) -> Iterator[ServerProcess]:
    with local_server(
        tmp_path,
        upstream.base_url,
        PROMPTCACHE_API_KEYS="ka:alpha,kb:be|ta%",
        PROMPTCACHE_ADMIN_KEY=ADMIN,
    ) as server:
        yield server


def get(server: ServerProcess, path: str, key: str) -> httpx.Response:
    return httpx.get(server.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def post(server: ServerProcess, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=30)


def test_over_http_a_tenant_sees_only_its_own_and_the_admin_every_tenant(
    keyed: ServerProcess,
) -> None:
    assert post(keyed, "/chat", "ka", {"prompt": "alpha asks", "model": "alpha-m"}).is_success
    completion = {"model": "beta-m", "messages": [{"role": "user", "content": "beta asks"}]}
    assert post(keyed, "/v1/chat/completions", "kb", completion).is_success
    assert post(keyed, "/v1/chat/completions", "kb", completion).is_success

    alpha = get(keyed, "/stats", "ka").json()
    assert (
        alpha["tenant"] == "alpha"
        and alpha["requests"] == 1
        and list(alpha["models"]) == ["alpha-m"]
    )
    assert "beta" not in json.dumps(alpha) and alpha["entries"] is None
    models = [m["id"] for m in get(keyed, "/v1/models", "ka").json()["data"]]
    assert models == ["test-model", "alpha-m"]
    assert get(keyed, "/stats?tenant=be%7Cta%25", "ka").status_code == 403

    beta = get(keyed, "/stats", "kb").json()
    assert beta["tenant"] == "be|ta%" and beta["requests"] == 2 and beta["hits"]["exact"] == 1
    assert "alpha" not in json.dumps(beta)

    admin = get(keyed, "/stats", ADMIN).json()
    assert admin["requests"] == 3 and admin["entries"] == 2
    assert set(admin["tenants"]) == {"alpha", "be|ta%"}
    one = get(keyed, "/stats?tenant=be%7Cta%25", ADMIN)
    assert one.status_code == 200 and one.json()["requests"] == 2
    missing = get(keyed, "/stats?tenant=nobody", ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert missing.headers["content-type"].startswith("application/json")
    models = [m["id"] for m in get(keyed, "/v1/models", ADMIN).json()["data"]]
    assert models == ["test-model", "alpha-m", "beta-m"]
    assert post(keyed, "/chat", ADMIN, {"prompt": "admin asks"}).status_code == 422
    assert ADMIN not in (Path(keyed.log_path).read_text(errors="replace"))


def test_over_http_a_kept_response_is_its_tenants_alone(keyed: ServerProcess) -> None:
    """Neither GET /v1/responses/{id} nor previous_response_id reaches another tenant's
    response: the other tenant gets what an unknown id gets."""
    beta = post(keyed, "/v1/responses", "kb", {"input": "beta's private question"})
    assert beta.status_code == 200
    rid = beta.json()["id"]
    assert get(keyed, f"/v1/responses/{rid}", "kb").json() == beta.json()
    for path in (f"/v1/responses/{rid}", "/v1/responses/resp_" + "0" * 32):
        answer = get(keyed, path, "ka")
        assert answer.status_code == 404 and "private" not in answer.text
    follow = {"input": "what did I ask?", "previous_response_id": rid}
    answer = post(keyed, "/v1/responses", "ka", follow)
    assert answer.status_code == 400 and "private" not in answer.text
    assert answer.json()["error"]["code"] == "previous_response_not_found"
    mine = post(keyed, "/v1/responses", "kb", follow)
    assert mine.status_code == 200 and "what did I ask?" in mine.text


# ---------------------------------------------------------------- 16 writers, exact counters
WRITERS, PROMPTS = 16, 12
TENANTS = ("alpha", "be|ta")


def _sqlite(tmp_path: Path) -> tuple[MemoryStore | SQLiteStore, Stats]:
    store = SQLiteStore(tmp_path / "cache.sqlite3")
    return store, SQLiteStats(store)


def _memory(tmp_path: Path) -> tuple[MemoryStore | SQLiteStore, Stats]:
    return MemoryStore(), MemoryStats()


def hammer(cache: PromptCache) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def writer(i: int) -> None:
        try:
            start.wait()
            tenant = TENANTS[i % 2]
            for j in range(PROMPTS):
                for _ in range(2):  # a miss, then (most often) a hit
                    prompt = (Message("user", f"writer {i} prompt {j}"),)
                    cache.chat(ChatRequest(messages=prompt, model=f"m{i % 4}", tenant=tenant))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def assert_exact(cache: PromptCache) -> None:
    raw = cache.stats.read()  # before a report drops the entry counters beyond the most hit
    for tenant in TENANTS:
        prefix = tenant_prefix(tenant)
        entries = sum(v for k, v in raw.items() if k.startswith(prefix + "e|"))
        hits = raw.get(prefix + "hits.exact", 0) + raw.get(prefix + "hits.semantic", 0)
        assert entries == hits > 0
    report = cache.report(tenants=TENANTS)
    per_tenant = WRITERS // 2 * PROMPTS * 2
    assert report["requests"] == 2 * per_tenant
    for tenant in TENANTS:
        own = cache.tenant_report(tenant)
        assert own is not None and own["requests"] == per_tenant
        assert own["hits"]["total"] + own["misses"] + own["bypasses"] == per_tenant
        assert own["bypasses"] == 0 and own["misses"] >= WRITERS // 2 * PROMPTS // 2
        # alpha's writers are the even ones: models m0 and m2; beta's m1 and m3
        assert sum(m["requests"] for m in own["models"].values()) == per_tenant
        assert len(own["models"]) == 2
    for field in ("requests", "misses", "bypasses", "tokens_used", "tokens_saved", "embeddings"):
        assert report[field] == sum(report["tenants"][t][field] for t in TENANTS), field
    for tier in ("exact", "semantic"):
        assert report["hits"][tier] == sum(report["tenants"][t]["hits"][tier] for t in TENANTS)
    # the time buckets and the histograms are exact too
    assert sum(p["requests"] for p in report["series"]["points"]) == 2 * per_tenant
    hist = report["latency_ms"]
    assert hist["hit"]["count"] == report["hits"]["total"]
    assert hist["miss"]["count"] == report["misses"]
    assert hist["lookup"]["count"] == 2 * per_tenant
    for tenant in TENANTS:
        own = cache.tenant_report(tenant)  # a tenant's series and histograms: its own report
        assert own is not None
        assert sum(p["requests"] for p in own["series"]["points"]) == per_tenant
        assert own["latency_ms"]["hit"]["count"] + own["latency_ms"]["miss"]["count"] == per_tenant
        assert sum(e["hits"] for e in own["top_entries"]) <= own["hits"]["total"]


@pytest.mark.parametrize("make", [_sqlite, _memory], ids=["sqlite", "memory"])
def test_tenant_counters_are_exact_under_16_writers(
    tmp_path: Path, make: Callable[[Path], tuple[Any, Stats]]
) -> None:
    store, stats = make(tmp_path)
    cache = PromptCache(store=store, embedder=FakeEmbedder(), stats=stats, llm=FakeLLM())
    hammer(cache)
    assert_exact(cache)


def test_tenant_counters_are_exact_under_16_writers_on_upstash(upstash: Any) -> None:
    from promptcache.adapters.upstash import UpstashStats

    with httpx.Client(timeout=10.0) as client:
        stats = UpstashStats(client, upstash.url, upstash.token)
        cache = PromptCache(
            store=MemoryStore(), embedder=FakeEmbedder(), stats=stats, llm=FakeLLM()
        )
        hammer(cache)
        assert_exact(cache)
        stale = [k for k in stats.read() if k.startswith("s|m|")]
        stats.drop(stale)
        assert stale and not set(stale) & set(stats.read())
        assert cache.report()["requests"] == 2 * WRITERS // 2 * PROMPTS * 2


def test_one_canonical_authorization_over_http(keyed: ServerProcess) -> None:
    """Two Authorization headers are a 400 (the server joins them with a comma, as API Gateway
    does); a key with whitespace inside is a 401; neither is counted nor answered."""
    twice = httpx.post(
        keyed.url + "/chat",
        json={"prompt": "alpha asks"},
        headers=[("Authorization", "Bearer kb"), ("Authorization", "Bearer ka")],
        timeout=30,
    )
    assert twice.status_code == 400 and "one Authorization header" in twice.text
    spaced = httpx.post(
        keyed.url + "/chat",
        json={"prompt": "alpha asks"},
        headers={"Authorization": "Bearer  ka"},
        timeout=30,
    )
    assert spaced.status_code == 401 and "whitespace" in spaced.text
    assert get(keyed, "/stats", ADMIN).json()["requests"] == 0
    assert post(keyed, "/chat", "ka", {"prompt": "alpha asks"}).is_success


def test_the_messages_face_over_http_keeps_tenants_apart(keyed: ServerProcess) -> None:
    """/v1/messages with each tenant's key (x-api-key, as curl sends it, or Bearer): the same
    request is one entry per tenant; the admin key chats only for a named tenant; an unknown
    key, or two different keys, are refused in Anthropic's shape and counted nowhere."""

    def messages(headers: dict[str, str]) -> httpx.Response:
        body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "same"}]}
        return httpx.post(keyed.url + "/v1/messages", json=body, headers=headers, timeout=30)

    beta = messages({"x-api-key": "kb"})
    assert beta.status_code == 200 and beta.headers["x-promptcache-tier"] == "miss"
    assert messages({"Authorization": "Bearer kb"}).headers["x-promptcache-tier"] == "exact"
    alpha = messages({"x-api-key": "ka", "anthropic-version": "2023-06-01"})
    assert alpha.status_code == 200 and alpha.headers["x-promptcache-tier"] == "miss"
    assert alpha.headers["x-promptcache-entry"] != beta.headers["x-promptcache-entry"]
    for headers, status, kind in (
        ({"x-api-key": "nobody"}, 403, "permission_error"),
        ({"x-api-key": "ka", "Authorization": "Bearer kb"}, 400, "invalid_request_error"),
        ({}, 401, "authentication_error"),
        ({"x-api-key": ADMIN}, 400, "invalid_request_error"),
    ):
        refused = messages(headers)
        assert refused.status_code == status, headers
        assert refused.json() == {
            "type": "error",
            "error": {"type": kind, "message": refused.json()["error"]["message"]},
        }
    as_alpha = messages({"x-api-key": ADMIN, "X-Promptcache-Tenant": "alpha"})
    assert as_alpha.headers["x-promptcache-tier"] == "exact"
    assert as_alpha.headers["x-promptcache-entry"] == alpha.headers["x-promptcache-entry"]
    admin = get(keyed, "/stats", ADMIN).json()
    assert admin["requests"] == 4
    assert (
        admin["tenants"]["be|ta%"]["requests"] == 2 and admin["tenants"]["alpha"]["requests"] == 2
    )
    assert (
        httpx.get(keyed.url + "/stats", headers={"x-api-key": "ka"}, timeout=30).json()["tenant"]
        == "alpha"
    )
