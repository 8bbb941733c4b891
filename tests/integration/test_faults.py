"""Faults mid-traffic through `promptcache serve`: the store (Upstash over its REST stand-in and a
real redis-server) erroring, down and slow; the embedder (Workers AI stand-in) down; the model
down and slow. Each phase sends concurrent requests and asserts the counts: every answer is 200
(a bypass during a store or embedder fault, hits still served where they can be), 502/504 JSON
when the model fails, nothing stored from a bypass or a failed answer, and the cache whole again
once the fault is gone.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from promptcache.adapters.upstash._keys import KeyLayout
from tests.support.fixtures_cloudflare import CloudflareAPIStandIn
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.redis_server import RedisServer
from tests.support.serve import ServerProcess, local_server
from tests.support.upstash_standin import UpstashStandIn

pytestmark = pytest.mark.integration

CLIENTS = 8
PER_PHASE = 16


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def cloudflare_api(local_embedder: Any) -> Iterator[CloudflareAPIStandIn]:
    with CloudflareAPIStandIn(local_embedder) as server:
        yield server  # type: ignore[misc]


@pytest.fixture(scope="module")
def redis_alone() -> Iterator[RedisServer]:
    """A redis-server of this module's own: it is paused (SIGSTOP) here."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def _server(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: OpenAIUpstream,
    redis_alone: RedisServer,
    cloudflare_api: CloudflareAPIStandIn,
) -> Iterator[tuple[ServerProcess, UpstashStandIn]]:
    """One server for the module (each test asks prompts of its own); the embedder's test goes
    last: its circuit breaker stays open for 30 s after the fault."""
    with (
        UpstashStandIn(redis_alone.port) as upstash,
        local_server(
            tmp_path_factory.mktemp("faults"),
            upstream.base_url,
            PROMPTCACHE_STORE="upstash",
            UPSTASH_REDIS_REST_URL=upstash.url,
            UPSTASH_REDIS_REST_TOKEN=upstash.token,
            PROMPTCACHE_EMBEDDER="workers-ai",
            PROMPTCACHE_LLM="openai",
            PROMPTCACHE_STATS="store",
            CLOUDFLARE_ACCOUNT_ID=cloudflare_api.account_id,
            CLOUDFLARE_API_TOKEN=cloudflare_api.token,
            CLOUDFLARE_API_BASE_URL=cloudflare_api.base_url,
            PROMPTCACHE_BACKEND_TIMEOUT="1.5",  # a healthy call on a loaded 2-core machine fits
            PROMPTCACHE_UPSTREAM_TIMEOUT="1",
        ) as server,
    ):
        yield server, upstash


@pytest.fixture
def faulty(
    _server: tuple[ServerProcess, UpstashStandIn],
    upstream: OpenAIUpstream,
    cloudflare_api: CloudflareAPIStandIn,
) -> Iterator[tuple[ServerProcess, UpstashStandIn]]:
    """The module's server, every fault cleared before and after each test."""

    def clear() -> None:
        _server[1].fail_all(None)
        upstream.fail_status, upstream.delay = None, 0.0
        cloudflare_api.clear_failures()

    clear()
    yield _server
    clear()


def ask(url: str, prompts: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """POST /chat for each prompt, CLIENTS at a time: (status, body) in order. Threshold 1: the
    prompts of the phases look alike, so only a prompt's own text may answer it."""
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(CLIENTS) as pool:

        def one(prompt: str) -> tuple[int, dict[str, Any]]:
            r = client.post(url + "/chat", json={"prompt": prompt, "threshold": 1.0})
            return r.status_code, r.json()

        return list(pool.map(one, prompts))


def tiers(answers: list[tuple[int, dict[str, Any]]]) -> Counter[str]:
    return Counter(str(body.get("tier")) if s == 200 else str(s) for s, body in answers)


def prompts(tag: str, n: int = PER_PHASE) -> list[str]:
    return [
        f"In the {tag} phase, what is the tracking code of parcel number {i}?" for i in range(n)
    ]


def entries(redis_alone: RedisServer) -> int:
    """The entries stored (the entry documents in Redis)."""
    client = redis_alone.client()
    try:
        return sum(1 for _ in client.scan_iter(match=KeyLayout().entry("*"), count=1000))
    finally:
        client.close()


def test_store_erroring_then_down_then_back_gives_bypasses_and_stores_nothing(
    faulty: tuple[ServerProcess, UpstashStandIn],
    upstream: OpenAIUpstream,
    redis_alone: RedisServer,
) -> None:
    server, upstash = faulty
    healthy = prompts("healthy")
    assert tiers(ask(server.url, healthy)) == {"miss": PER_PHASE}
    stored = entries(redis_alone)
    assert stored >= PER_PHASE

    for status, body in ((503, b'{"error": "service unavailable"}'), (500, b"")):
        upstash.fail_all(status, body)
        calls = upstream.calls
        fresh = prompts(f"failing {status}")
        answers = ask(server.url, fresh + healthy)
        # Every request answered by the model, none from the cache, none a 5xx.
        assert tiers(answers) == {"bypass": 2 * PER_PHASE}, tiers(answers)
        assert all(body["bypass_reason"] for _, body in answers)
        assert upstream.calls - calls == 2 * PER_PHASE
        upstash.fail_all(None)
        assert entries(redis_alone) == stored  # nothing stored while failing

    calls = upstream.calls
    again = ask(server.url, healthy + prompts("failing 503"))
    assert tiers(again) == {"exact": PER_PHASE, "miss": PER_PHASE}  # back at once, entries kept
    assert upstream.calls - calls == PER_PHASE
    answered = [body["response"] for _, body in again[:PER_PHASE]]
    assert all(text.endswith(p) for text, p in zip(answered, healthy, strict=True))


def test_store_slow_mid_traffic_times_out_to_bypasses(
    faulty: tuple[ServerProcess, UpstashStandIn],
    upstream: OpenAIUpstream,
    redis_alone: RedisServer,
) -> None:
    server, _ = faulty
    healthy = prompts("before the pause")
    assert tiers(ask(server.url, healthy)) == {"miss": PER_PHASE}
    assert redis_alone.proc is not None
    os.kill(redis_alone.proc.pid, signal.SIGSTOP)  # the store hangs: every call times out
    try:
        calls = upstream.calls
        answers = ask(server.url, prompts("paused") + healthy)
        assert tiers(answers) == {"bypass": 2 * PER_PHASE}, tiers(answers)
        assert upstream.calls - calls == 2 * PER_PHASE
    finally:
        os.kill(redis_alone.proc.pid, signal.SIGCONT)
    again = ask(server.url, healthy)
    assert tiers(again) == {"exact": PER_PHASE}
    paused = ask(server.url, prompts("paused"))
    assert tiers(paused) == {"miss": PER_PHASE}  # nothing was stored while the store hung


def test_model_down_or_slow_is_502_or_504_and_stores_nothing(
    faulty: tuple[ServerProcess, UpstashStandIn],
    upstream: OpenAIUpstream,
    redis_alone: RedisServer,
) -> None:
    server, _ = faulty
    healthy = prompts("model up")
    assert tiers(ask(server.url, healthy)) == {"miss": PER_PHASE}
    stored = entries(redis_alone)

    upstream.fail_status = 500
    answers = ask(server.url, healthy + prompts("model down"))
    assert tiers(answers) == {"exact": PER_PHASE, "502": PER_PHASE}, tiers(answers)
    assert all(body["error"]["code"] for s, body in answers if s == 502)
    upstream.fail_status = None

    upstream.delay = 2.0  # past PROMPTCACHE_UPSTREAM_TIMEOUT (1 s)
    answers = ask(server.url, prompts("model slow", CLIENTS) + healthy[:CLIENTS])
    upstream.delay = 0.0
    assert tiers(answers) == {"504": CLIENTS, "exact": CLIENTS}, tiers(answers)
    assert entries(redis_alone) == stored  # neither failure stored anything

    calls = upstream.calls
    back = ask(server.url, prompts("model down") + prompts("model slow", CLIENTS))
    assert tiers(back) == {"miss": PER_PHASE + CLIENTS}
    assert upstream.calls - calls == PER_PHASE + CLIENTS


def test_embedder_down_serves_exact_hits_and_bypasses_the_rest(
    faulty: tuple[ServerProcess, UpstashStandIn],
    upstream: OpenAIUpstream,
    cloudflare_api: CloudflareAPIStandIn,
    redis_alone: RedisServer,
) -> None:
    server, _ = faulty
    healthy = prompts("embedder up")
    assert tiers(ask(server.url, healthy)) == {"miss": PER_PHASE}
    stored = entries(redis_alone)
    cloudflare_api.fail(500, 7000, "embedder down", times=10**6, path="/ai/run/@cf/baai")
    try:
        calls = upstream.calls
        answers = ask(server.url, healthy + prompts("embedder down"))
        assert tiers(answers) == {"exact": PER_PHASE, "bypass": PER_PHASE}, tiers(answers)
        assert upstream.calls - calls == PER_PHASE
        assert entries(redis_alone) == stored
    finally:
        cloudflare_api.clear_failures()
    # The embedder's circuit breaker lets a probe through 30 s after it opened: until then the
    # cache is still bypassed, never an error, and exact hits are served throughout.
    after = tiers(ask(server.url, prompts("embedder down") + healthy))
    assert after["exact"] == PER_PHASE and after["miss"] + after["bypass"] == PER_PHASE, after
