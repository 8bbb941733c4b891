"""The product over real HTTP: `promptcache serve` (SQLite store, local embedder) in front of a
local OpenAI-compatible upstream that counts its calls."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from promptcache.routes import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

pytestmark = pytest.mark.integration


def chat(server: ServerProcess, **body: Any) -> httpx.Response:
    return httpx.post(server.url + "/chat", json=body, timeout=30)


def stats(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(server.url + "/stats", timeout=10)
    assert response.status_code == 200
    return response.json()


def test_exact_repeat_is_answered_without_an_embedding(
    serve: ServerProcess, upstream: OpenAIUpstream
) -> None:
    first = chat(serve, prompt="What is the capital of France?")
    assert first.status_code == 200
    body = first.json()
    assert body["tier"] == "miss" and body["cached"] is False
    assert body["response"].startswith("[test upstream answer #1]")
    assert upstream.calls == 1
    embeddings_before = stats(serve)["embeddings"]

    again = chat(serve, prompt="  What is the   capital of France?  ")
    assert again.status_code == 200
    assert again.json()["tier"] == "exact"
    assert again.json()["response"] == body["response"]
    assert again.json()["entry_id"] == body["entry_id"]
    assert again.headers["x-promptcache-tier"] == "exact"
    assert stats(serve)["embeddings"] == embeddings_before  # no embedding call at all
    assert upstream.calls == 1


def test_paraphrase_is_a_semantic_hit_and_unrelated_prompt_misses(
    serve: ServerProcess, upstream: OpenAIUpstream
) -> None:
    stored = chat(serve, prompt="How do I reset my password?").json()
    hit = chat(serve, prompt="What is the way to reset my password?")
    assert hit.status_code == 200
    body = hit.json()
    assert body["tier"] == "semantic"
    assert body["cached"] is True
    assert body["entry_id"] == stored["entry_id"]
    assert body["response"] == stored["response"]
    assert 0.9 < body["similarity"] < 1.0
    assert float(hit.headers["x-promptcache-similarity"]) == pytest.approx(
        body["similarity"], abs=1e-5
    )
    assert upstream.calls == 1

    unrelated = chat(serve, prompt="Which planet in the solar system is the largest?").json()
    assert unrelated["tier"] == "miss"
    assert upstream.calls == 2

    report = stats(serve)
    assert report["hits"] == {"exact": 0, "semantic": 1, "total": 1}
    assert report["misses"] == 2
    assert report["entries"] == 2
    assert report["models"]["test-model"]["hits"]["semantic"] == 1


def test_threshold_override(serve: ServerProcess, upstream: OpenAIUpstream) -> None:
    chat(serve, prompt="How do I reset my password?")
    strict = chat(serve, prompt="What is the way to reset my password?", threshold=0.999).json()
    assert strict["tier"] == "miss"
    loose = chat(serve, prompt="How can I change the password of my account?", threshold=0.5)
    assert loose.status_code == 422  # an override may only raise the threshold
    assert "below this cache's threshold" in loose.json()["error"]["message"]
    assert upstream.calls == 2 and stats(serve)["entries"] == 2


def test_expired_entries_never_answer(serve: ServerProcess, upstream: OpenAIUpstream) -> None:
    assert chat(serve, prompt="How do I reset my password?", ttl=0.5).json()["tier"] == "miss"
    assert chat(serve, prompt="How do I reset my password?").json()["tier"] == "exact"
    time.sleep(0.7)
    # neither the exact tier nor the semantic tier may answer from the expired entry
    assert chat(serve, prompt="What is the way to reset my password?").json()["tier"] == "miss"
    assert (
        chat(serve, prompt="How do I reset my password?", threshold=0.99).json()["tier"] == "miss"
    )
    assert upstream.calls == 3
    assert stats(serve)["entries"] == 2


def test_concurrent_identical_misses_make_one_upstream_call(
    serve: ServerProcess, upstream: OpenAIUpstream
) -> None:
    upstream.delay = 0.5
    barrier = threading.Barrier(20)

    def one(_: int) -> dict[str, Any]:
        barrier.wait()
        response = chat(serve, prompt="Explain single-flight request coalescing")
        assert response.status_code == 200
        return response.json()

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert upstream.calls == 1
    assert len({r["response"] for r in results}) == 1
    assert len({r["entry_id"] for r in results}) == 1
    assert sum(r["tier"] == "miss" for r in results) == 1


def test_failing_upstream_is_a_502_and_stores_nothing(
    serve: ServerProcess, upstream: OpenAIUpstream
) -> None:
    upstream.fail_status = 500
    failed = chat(serve, prompt="What is the boiling point of water?")
    assert failed.status_code == 502
    assert failed.json()["error"]["code"] == "upstream_error"
    assert stats(serve)["entries"] == 0

    upstream.fail_status = 429
    limited = chat(serve, prompt="What is the boiling point of water?")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "upstream_rate_limited"
    assert limited.headers["Retry-After"] == "5"  # the upstream sent none: the default
    upstream.fail_headers = {"Retry-After": "7"}
    limited = chat(serve, prompt="What is the boiling point of water?")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    v1 = httpx.post(
        f"{serve.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "What is the boiling point of water?"}]},
        timeout=10,
    )
    assert v1.status_code == 429 and v1.headers["Retry-After"] == "7"
    assert v1.json()["error"]["type"] == "rate_limit_error"
    assert stats(serve)["entries"] == 0
    upstream.fail_headers = {}

    upstream.fail_status = None
    recovered = chat(serve, prompt="What is the boiling point of water?").json()
    assert recovered["tier"] == "miss"  # nothing had been stored by the failures
    assert stats(serve)["entries"] == 1


def test_slow_upstream_is_a_504(tmp_path: Any, upstream: OpenAIUpstream) -> None:
    server = ServerProcess(
        {
            "PROMPTCACHE_DATA_DIR": str(tmp_path / "data"),
            "OPENAI_BASE_URL": upstream.base_url,
            "PROMPTCACHE_UPSTREAM_TIMEOUT": "0.3",
        },
        tmp_path / "server.log",
    ).start()
    try:
        upstream.delay = 1.0
        response = chat(server, prompt="Take your time")
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("application/json", b"{not json", 400, "bad_request"),
        ("application/json", b"", 400, "bad_request"),
        ("text/plain", b'{"prompt": "hi"}', 415, "unsupported_media_type"),
        ("application/json", b'["prompt"]', 422, "unprocessable"),
        ("application/json", b'{"prompt": 42}', 422, "unprocessable"),
        ("application/json", b'{"prompt": ""}', 422, "unprocessable"),
        ("application/json", b'{"prompt": "hi", "messages": []}', 422, "unprocessable"),
        (
            "application/json",
            b'{"messages": [{"role": "robot", "content": "x"}]}',
            422,
            "unprocessable",
        ),
        ("application/json", b'{"prompt": "hi", "threshold": 1.5}', 422, "unprocessable"),
        ("application/json", b'{"prompt": "hi", "threshold": "high"}', 422, "unprocessable"),
        ("application/json", b'{"prompt": "hi", "ttl": -1}', 422, "unprocessable"),
        ("application/json", b'{"prompt": "hi", "cache": "maybe"}', 422, "unprocessable"),
        ("application/json", b'{"prompt": "hi", "max_tokens": 0}', 422, "unprocessable"),
        ("application/json", b'{"prompt": "hi", "colour": "red"}', 422, "unprocessable"),
        ("application/json", b'{"prompt": "' + b"x" * 40_000 + b'"}', 413, "payload_too_large"),
        ("application/json", b'{"prompt": "' + b"x" * 300_000 + b'"}', 413, "payload_too_large"),
    ],
)
def test_bad_requests_get_their_4xx_and_change_nothing(
    serve: ServerProcess,
    upstream: OpenAIUpstream,
    content_type: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    chat(serve, prompt="A question stored before the bad request")
    before = stats(serve)
    response = httpx.post(
        serve.url + "/chat", content=body, headers={"Content-Type": content_type}, timeout=30
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    after = stats(serve)
    assert after["entries"] == before["entries"] == 1
    assert after["requests"] == before["requests"]
    assert upstream.calls == 1


def test_routes_methods_and_cors(serve: ServerProcess) -> None:
    missing = httpx.get(serve.url + "/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(serve.url + "/chat")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    preflight = httpx.options(
        serve.url + "/chat",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    # the one CORS list (promptcache.routes), as the deployed API Gateway and URL answer it
    allowed = {
        h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
    }
    assert allowed >= {h.lower() for h in CORS_ALLOW_HEADERS}  # Powertools adds AWS's own
    answered = httpx.post(
        serve.url + "/chat", json={"prompt": "cors"}, headers={"Origin": "https://app.example"}
    )
    exposed = answered.headers["access-control-expose-headers"].lower().split(",")
    assert {h.strip() for h in exposed} == {h.lower() for h in CORS_EXPOSE_HEADERS}
    health = httpx.get(serve.url + "/health")
    assert health.status_code == 200
    assert health.json()["dependencies"]["store"]["ok"] is True


def test_data_survives_a_restart(serve: ServerProcess, upstream: OpenAIUpstream) -> None:
    first = chat(serve, prompt="How do I reset my password?").json()
    serve.stop()
    serve.start()
    exact = chat(serve, prompt="How do I reset my password?").json()
    assert exact["tier"] == "exact" and exact["entry_id"] == first["entry_id"]
    semantic = chat(serve, prompt="What is the way to reset my password?").json()
    assert semantic["tier"] == "semantic" and semantic["entry_id"] == first["entry_id"]
    assert stats(serve)["misses"] == 1  # the stats survived too
    assert upstream.calls == 1


def test_a_failing_store_bypasses_the_cache(tmp_path: Any, upstream: OpenAIUpstream) -> None:
    """The store's file disappears under the running server (a lost volume): the answer still
    comes from the model with tier bypass, never a 5xx; the cache works again once it is back."""
    data = tmp_path / "data"
    server = ServerProcess(
        {"PROMPTCACHE_DATA_DIR": str(data), "OPENAI_BASE_URL": upstream.base_url},
        tmp_path / "server.log",
    ).start()
    db = data / "cache.sqlite3"
    try:
        assert chat(server, prompt="Is the store up?").json()["tier"] == "miss"
        saved = tmp_path / "saved"
        saved.mkdir()
        for path in data.iterdir():
            path.rename(saved / path.name)
        db.mkdir()  # a directory where the database file was: SQLite cannot open it
        try:
            response = chat(server, prompt="Is the store up?")
            assert response.status_code == 200
            body = response.json()
            assert body["tier"] == "bypass"
            assert body["cached"] is False
            assert "store" in body["bypass_reason"]
            assert body["response"].startswith("[test upstream answer #2]")
            health = httpx.get(server.url + "/health")
            assert health.status_code == 503
            assert health.json()["dependencies"]["store"]["ok"] is False
        finally:
            db.rmdir()
            for path in saved.iterdir():
                path.rename(data / path.name)
        assert chat(server, prompt="Is the store up?").json()["tier"] == "exact"
    finally:
        server.stop()


def test_two_servers_on_one_store_make_one_upstream_call(
    tmp_path: Any, upstream: OpenAIUpstream
) -> None:
    """Two processes sharing a store (as Lambda containers share Upstash): identical concurrent
    misses across both make one model call; the others wait for its entry."""
    env = {"PROMPTCACHE_DATA_DIR": str(tmp_path / "data"), "OPENAI_BASE_URL": upstream.base_url}
    servers = [ServerProcess(env, tmp_path / f"server{i}.log").start() for i in range(2)]
    try:
        upstream.delay = 1.0
        barrier = threading.Barrier(10)

        def one(i: int) -> dict[str, Any]:
            barrier.wait()
            response = chat(servers[i % 2], prompt="Explain cross-process single-flight")
            assert response.status_code == 200
            return response.json()

        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(one, range(10)))
        assert upstream.calls == 1
        assert len({r["entry_id"] for r in results}) == 1
        assert sorted(r["tier"] for r in results).count("miss") == 1
    finally:
        for server in servers:
            server.stop()


def test_an_entry_read_then_deleted_is_gone_for_every_server_on_the_store(
    tmp_path: Any, upstream: OpenAIUpstream
) -> None:
    """A client reports a wrong answer to one server; the other server, which already holds the
    entry in its index, stops serving it too (it reads the store's tombstone)."""
    env = {"PROMPTCACHE_DATA_DIR": str(tmp_path / "data"), "OPENAI_BASE_URL": upstream.base_url}
    a, b = (ServerProcess(env, tmp_path / f"server{i}.log").start() for i in range(2))
    try:
        stored = chat(a, prompt="How do I reset my password?").json()
        hit = chat(b, prompt="What is the way to reset my password?").json()
        assert hit["tier"] == "semantic"
        matched = httpx.get(f"{b.url}/entries/{hit['entry_id']}", timeout=10).json()
        assert matched["prompt"] == "How do I reset my password?"
        assert matched["response"] == stored["response"]

        gone = httpx.delete(f"{a.url}/entries/{stored['entry_id']}", timeout=10)
        assert gone.status_code == 200 and gone.json()["deleted"] == stored["entry_id"]
        assert httpx.delete(f"{b.url}/entries/{stored['entry_id']}", timeout=10).status_code == 404
        assert httpx.get(f"{b.url}/entries/{stored['entry_id']}", timeout=10).status_code == 404

        paraphrase = chat(b, prompt="What is the way to reset my password?").json()
        assert paraphrase["tier"] == "miss" and upstream.calls == 2
        assert (
            chat(a, prompt="how do i reset my password?").json()["entry_id"] != stored["entry_id"]
        )
        assert stats(a)["entries"] == 1
    finally:
        a.stop()
        b.stop()


def test_two_servers_on_one_store_share_the_rate_limit(
    tmp_path: Any, upstream: OpenAIUpstream
) -> None:
    """The per-tenant budget is counted in the store, not per process."""
    env = {
        "PROMPTCACHE_DATA_DIR": str(tmp_path / "data"),
        "OPENAI_BASE_URL": upstream.base_url,
        "PROMPTCACHE_RATE_LIMIT_PER_MINUTE": "4",
    }
    a, b = (ServerProcess(env, tmp_path / f"server{i}.log").start() for i in range(2))
    try:
        statuses = [chat(s, prompt=f"question {i}").status_code for i, s in enumerate([a, b] * 3)]
        assert statuses == [200] * 4 + [429, 429]
        limited = chat(a, prompt="one more").json()
        assert limited["error"]["code"] == "rate_limited"
        assert "PROMPTCACHE_RATE_LIMIT_PER_MINUTE" in limited["error"]["message"]
        assert upstream.calls == 4
    finally:
        a.stop()
        b.stop()
