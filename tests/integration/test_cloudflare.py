"""The deployed backends on loopback stand-ins: Workers AI (embeddings from the local embedder,
deterministic generation) and KV (REST shapes, optional eventual consistency)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptcache import (
    ChatRequest,
    Message,
    PromptCache,
    Settings,
    Tier,
    UpstreamError,
    UpstreamTimeout,
    runtime,
)
from promptcache._errors import UpstreamBadRequest
from promptcache.adapters._http import RetryPolicy
from promptcache.adapters.cloudflare_kv import KVStats
from promptcache.adapters.workers_ai import DEFAULT_LLM_MODEL, WorkersAILLM
from tests.support.fixtures_cloudflare import CloudflareAPIStandIn
from tests.support.kv_standin import KVStandIn
from tests.support.serve import ServerProcess

pytestmark = pytest.mark.integration

EMBED = "/ai/run/@cf/baai/bge-base-en-v1.5"
GENERATE = f"/ai/run/{DEFAULT_LLM_MODEL}"


def ask(cache: PromptCache, prompt: str, model: str = DEFAULT_LLM_MODEL) -> Any:
    return cache.chat(ChatRequest(messages=(Message("user", prompt),), model=model))


@pytest.fixture
def build() -> Iterator[Callable[..., PromptCache]]:
    """runtime.build from settings; the backends' HTTP clients are closed afterwards."""
    built: list[PromptCache] = []

    def make(env: dict[str, str], **extra: str) -> PromptCache:
        cache = runtime.build(Settings.from_env({**env, **extra}))
        built.append(cache)
        return cache

    yield make
    for cache in built:
        judge = cache.rules.verifier_model.verifier if cache.rules.verifier_model else None
        for backend in (cache.embedder, cache.llm, cache.stats, judge):
            close = getattr(backend, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()


# ---------------------------------------------------------------------------- the chat path
def test_paraphrase_is_a_semantic_hit_on_workers_ai(
    cloudflare_env: dict[str, str],
    cloudflare_api: CloudflareAPIStandIn,
    build: Callable[..., PromptCache],
) -> None:
    cache = build(cloudflare_env)
    assert cache.embedder.id == "cf-bge-base-en-v1.5" and cache.embedder.dim == 768
    assert cache.threshold == 0.90

    first = ask(cache, "What is the capital of France?")
    assert first.tier is Tier.MISS
    assert first.response.startswith(f"[Workers AI stand-in, {DEFAULT_LLM_MODEL}]")
    assert first.usage.completion_tokens > 0
    assert cloudflare_api.calls[DEFAULT_LLM_MODEL] == 1

    hit = ask(cache, "Which city is the capital of France?")
    assert hit.tier is Tier.SEMANTIC
    assert hit.response == first.response and hit.entry_id == first.entry_id
    assert 0.90 <= hit.similarity < 1.0
    assert cloudflare_api.calls[DEFAULT_LLM_MODEL] == 1

    embedded = cloudflare_api.texts_embedded
    exact = ask(cache, "What is the capital of   France? ")
    assert exact.tier is Tier.EXACT
    assert cloudflare_api.texts_embedded == embedded  # no embedding call for an exact hit

    other = ask(cache, "How do I bake sourdough bread?")
    assert other.tier is Tier.MISS
    assert cloudflare_api.calls[DEFAULT_LLM_MODEL] == 2

    # the stats went to KV, one key per writer, and read back exactly
    report = cache.report()
    assert report["requests"] == 4
    assert report["hits"] == {"exact": 1, "semantic": 1, "total": 2}
    assert report["misses"] == 2
    assert report["models"][DEFAULT_LLM_MODEL]["requests"] == 4
    assert [k for k in cloudflare_api.live_keys() if k.startswith("stats:w:")]


RERANK = "/ai/run/@cf/baai/bge-reranker-base"


def test_the_workers_ai_reranker_judges_candidates_and_its_failure_is_a_miss(
    cloudflare_env: dict[str, str],
    cloudflare_api: CloudflareAPIStandIn,
    build: Callable[..., PromptCache],
) -> None:
    # band 1: every candidate is judged (the default 0.04 band would let this one pass unasked)
    cache = build(
        cloudflare_env, PROMPTCACHE_VERIFIER_MODEL="workers-ai", PROMPTCACHE_VERIFIER_MODEL_BAND="1"
    )
    assert cache.rules.verifier_model is not None
    assert cache.rules.verifier_model.verifier.id == "cf-bge-reranker-base"
    first = ask(cache, "What is the capital of France?")
    assert first.tier is Tier.MISS
    hit = ask(cache, "Which city is the capital of France?")
    assert cloudflare_api.calls["@cf/baai/bge-reranker-base"] == 1  # it judged the candidate
    assert hit.tier is Tier.SEMANTIC and hit.entry_id == first.entry_id
    assert "verify" in hit.timings
    # Failing, it rejects its candidates: a miss answered by the model, never an error.
    cloudflare_api.fail(500, 3001, "Internal server error", times=1000, path=RERANK)
    refused = cloudflare_api.counts["failed"]
    failed = ask(cache, "Which city is France's capital?")
    assert cloudflare_api.counts["failed"] > refused  # it was asked, and refused
    assert failed.tier is Tier.MISS
    assert failed.response.startswith("[Workers AI stand-in")


def test_an_embedder_failure_is_a_bypass_not_an_error(
    cloudflare_env: dict[str, str],
    cloudflare_api: CloudflareAPIStandIn,
    build: Callable[..., PromptCache],
) -> None:
    cache = build(cloudflare_env)
    ask(cache, "What is the capital of France?")
    cloudflare_api.fail(500, 3001, "Internal server error", times=1000, path=EMBED)
    result = ask(cache, "Which city is the capital of France?")
    assert result.tier is Tier.BYPASS
    assert result.bypass_reason is not None and result.bypass_reason.startswith("embedder_error")
    assert "3001" in result.bypass_reason
    assert result.response.startswith("[Workers AI stand-in")
    assert cloudflare_api.calls[DEFAULT_LLM_MODEL] == 2


def test_a_failing_embedder_trips_the_breaker_and_answers_keep_coming(
    cloudflare_env: dict[str, str],
    cloudflare_api: CloudflareAPIStandIn,
    build: Callable[..., PromptCache],
) -> None:
    cache = build(cloudflare_env)
    cloudflare_api.fail(503, None, times=1000, path=EMBED)
    for i in range(2):  # 3 + 2 failed attempts open the circuit (5 in a row)
        assert ask(cache, f"question number {i}").tier is Tier.BYPASS
    failed = cloudflare_api.counts["failed"]
    assert failed == 5
    started = time.perf_counter()
    for i in range(5):
        result = ask(cache, f"another question {i}")
        assert result.tier is Tier.BYPASS and "circuit open" in (result.bypass_reason or "")
    assert cloudflare_api.counts["failed"] == failed  # no embedding request went out
    assert time.perf_counter() - started < 2.0


def test_a_slow_embedder_times_out_into_a_bypass(
    cloudflare_env: dict[str, str],
    cloudflare_api: CloudflareAPIStandIn,
    build: Callable[..., PromptCache],
) -> None:
    cache = build(cloudflare_env, PROMPTCACHE_BACKEND_TIMEOUT="0.2")
    cloudflare_api.slow_paths[EMBED] = 0.5
    started = time.perf_counter()
    result = ask(cache, "What is the capital of France?")
    assert result.tier is Tier.BYPASS and "timed out" in (result.bypass_reason or "")
    assert time.perf_counter() - started < 3.0


def test_a_model_timeout_3007_is_upstream_timeout_and_stores_nothing(
    cloudflare_env: dict[str, str],
    cloudflare_api: CloudflareAPIStandIn,
    build: Callable[..., PromptCache],
) -> None:
    cache = build(cloudflare_env)
    cloudflare_api.fail(408, 3007, "Request timeout", path=GENERATE)
    with pytest.raises(UpstreamTimeout) as info:
        ask(cache, "What is the capital of France?")
    assert info.value.status == 504
    assert cloudflare_api.calls[DEFAULT_LLM_MODEL] == 0  # answered by the injected failure
    assert ask(cache, "What is the capital of France?").tier is Tier.MISS


def test_an_unknown_model_is_a_400_naming_it(
    cloudflare_env: dict[str, str],
    cloudflare_api: CloudflareAPIStandIn,
    build: Callable[..., PromptCache],
) -> None:
    cache = build(cloudflare_env)
    with pytest.raises(UpstreamBadRequest) as info:
        ask(cache, "hello there", model="@cf/meta/llama-9-imaginary")
    assert info.value.status == 400 and info.value.code == "model_not_found"
    assert "@cf/meta/llama-9-imaginary" in info.value.message
    assert "5007" in info.value.message


def test_a_transient_llm_failure_is_retried(
    cloudflare_env: dict[str, str],
    cloudflare_api: CloudflareAPIStandIn,
    build: Callable[..., PromptCache],
) -> None:
    cache = build(cloudflare_env)
    cloudflare_api.fail(503, 3040, "Capacity temporarily exceeded", path=GENERATE)
    assert ask(cache, "What is the capital of France?").tier is Tier.MISS
    assert cloudflare_api.counts["failed"] == 1


def test_stream_over_http_matches_generate(cloudflare_api: CloudflareAPIStandIn) -> None:
    with httpx.Client(timeout=5) as client:
        model = WorkersAILLM(
            client, cloudflare_api.account_id, cloudflare_api.token, cloudflare_api.base_url
        )
        request = ChatRequest(
            messages=(Message("user", "Stream me an answer"),),
            model=DEFAULT_LLM_MODEL,
            max_tokens=8,
        )
        whole = model.generate(request)
        deltas: list[str] = []
        gen = model.stream(request)
        while True:
            try:
                deltas.append(next(gen))
            except StopIteration as stop:
                completion = stop.value
                break
    assert len(deltas) == 8
    assert "".join(deltas) == whole.text
    assert completion.usage == whole.usage


def test_a_stalled_stream_is_upstream_timeout(cloudflare_api: CloudflareAPIStandIn) -> None:
    cloudflare_api.stream_delay = 0.5
    with httpx.Client(timeout=0.2) as client:
        model = WorkersAILLM(
            client,
            cloudflare_api.account_id,
            cloudflare_api.token,
            cloudflare_api.base_url,
            policy=RetryPolicy(attempts=1),
        )
        request = ChatRequest(messages=(Message("user", "slow"),), model=DEFAULT_LLM_MODEL)
        with pytest.raises(UpstreamTimeout):
            list(model.stream(request))


def test_wrong_token_is_a_clear_upstream_error(
    cloudflare_env: dict[str, str], build: Callable[..., PromptCache]
) -> None:
    cache = build(cloudflare_env, CLOUDFLARE_API_TOKEN="wrong", PROMPTCACHE_STATS="store")
    with pytest.raises(UpstreamError, match="CLOUDFLARE_API_TOKEN"):
        ask(cache, "hello")


def test_the_local_server_runs_on_the_cloudflare_backends(
    tmp_path: Path, cloudflare_env: dict[str, str], cloudflare_api: CloudflareAPIStandIn
) -> None:
    server = ServerProcess(
        {**cloudflare_env, "PROMPTCACHE_DATA_DIR": str(tmp_path / "data")},
        tmp_path / "server.log",
    ).start()
    try:

        def chat(**body: Any) -> httpx.Response:
            return httpx.post(server.url + "/chat", json=body, timeout=30)

        assert chat(prompt="What is the capital of France?").json()["tier"] == "miss"
        hit = chat(prompt="Which city is the capital of France?")
        assert hit.status_code == 200 and hit.json()["tier"] == "semantic"

        cloudflare_api.fail(408, 3007, "Request timeout", path=GENERATE)
        timeout = chat(prompt="A question nobody asked before")
        assert timeout.status_code == 504
        assert timeout.json()["error"]["code"] == "upstream_timeout"

        unknown = chat(prompt="hi", model="@cf/meta/llama-9-imaginary")
        assert unknown.status_code == 400
        assert unknown.json()["error"]["code"] == "model_not_found"

        cloudflare_api.fail(413, 3006, "Request too large", path=GENERATE)
        large = chat(prompt="a long one")
        assert large.status_code == 413

        cloudflare_api.fail(429, 3036, "Daily free allocation used up", path=GENERATE)
        quota = chat(prompt="yet another question")
        assert quota.status_code == 429
        assert quota.json()["error"]["code"] == "upstream_rate_limited"

        report = httpx.get(server.url + "/stats", timeout=10).json()
        assert report["hits"]["semantic"] == 1 and report["misses"] == 1
    finally:
        server.stop()


# ---------------------------------------------------------------------------- KV counters
def _writer(kv: KVStandIn, **kwargs: Any) -> tuple[KVStats, httpx.Client]:
    client = httpx.Client(timeout=10)
    kwargs.setdefault("background", False)
    return KVStats(client, kv.account_id, kv.namespace_id, kv.token, kv.base_url, **kwargs), client


def test_16_writers_x_500_increments_read_back_exactly_despite_stale_reads(
    make_kv: Callable[..., KVStandIn],
) -> None:
    kv = make_kv(stale_seconds=0.3, seed=7)
    writers, per_writer = 16, 500
    expected = writers * per_writer
    reads: list[float] = []
    done = threading.Event()

    def write(i: int) -> int:
        stats, client = _writer(kv, flush_every=0.02, background=True)
        with client:
            for n in range(per_writer):
                stats.add({"requests": 1, "latency_ms.hit": 0.25, f"writer.{i}": 1})
                if n % 50 == 0:
                    time.sleep(0.001)  # let the writers interleave
            stats.close()
        return i

    def read_while_writing() -> None:
        reader, client = _writer(kv)
        with client:
            while not done.is_set():
                reads.append(reader.read().get("requests", 0.0))

    started = time.perf_counter()
    poller = threading.Thread(target=read_while_writing)
    poller.start()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers)))
    done.set()
    poller.join()
    wrote = time.perf_counter() - started

    reader, client = _writer(kv)
    with client:
        deadline = time.monotonic() + 10
        final = reader.read()
        while final.get("requests") != expected and time.monotonic() < deadline:
            time.sleep(0.05)
            final = reader.read()
    assert final["requests"] == expected
    assert final["latency_ms.hit"] == expected * 0.25
    assert all(final[f"writer.{i}"] == per_writer for i in range(writers))
    assert reads and all(r <= expected for r in reads)  # stale views lag, never over-count
    assert kv.counts["put"] >= writers
    print(
        f"16x500 stale={kv.stale_seconds}s: {wrote:.2f}s, {kv.counts['put']} PUTs, "
        f"{len(reads)} concurrent reads"
    )


def test_a_read_modify_write_counter_loses_updates_on_the_same_stand_in(
    make_kv: Callable[..., KVStandIn],
) -> None:
    """The control: the naive design this adapter avoids, against the same KV stand-in."""
    kv = make_kv(stale_seconds=0.05, seed=3)
    url = f"{kv.base_url}/accounts/{kv.account_id}/storage/kv/namespaces/{kv.namespace_id}"
    headers = {"Authorization": f"Bearer {kv.token}"}

    def increment(_: int) -> None:
        with httpx.Client(timeout=10, headers=headers) as client:
            for _ in range(25):
                got = client.get(f"{url}/values/naive")
                current = int(got.text) if got.status_code == 200 else 0
                client.put(f"{url}/values/naive", content=str(current + 1))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(increment, range(16)))
    time.sleep(0.1)
    final = int(kv.value("naive") or b"0")
    assert final < 16 * 25
    print(f"read-modify-write counter: {final} of {16 * 25} increments kept")
