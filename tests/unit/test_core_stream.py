"""PromptCache.chat_stream: tiers decided before the first delta, misses stored only when the
model's stream completes, broken and cancelled streams store nothing, single-flight shared with
plain requests. The model is the real OpenAI-compatible adapter behind httpx.MockTransport."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from promptcache import (
    CacheMode,
    ChatRequest,
    Message,
    PromptCache,
    Tier,
    UpstreamError,
    UpstreamNotConfigured,
    UpstreamRateLimited,
)
from promptcache._keys import normalize
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.adapters.openai_compat import OpenAICompatibleLLM
from tests.unit.fakes import FakeEmbedder, FakeLLM, blend, unit


class Upstream:
    """An OpenAI-compatible streaming endpoint at the transport: one word per chunk.

    ``hold`` pauses every stream after its first word until the event is set; ``break_after``
    raises a transport error after that many words; ``status`` answers an error instead."""

    def __init__(self) -> None:
        self.calls = 0
        self.hold: threading.Event | None = None
        self.break_after: int | None = None
        self.status = 200
        self.closed = 0
        self.streaming = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.calls += 1
            n = self.calls
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": f"status {self.status}"}})
        payload = json.loads(request.content)
        text = f"answer {n}: {payload['messages'][-1]['content']}"
        if not payload.get("stream"):
            message = {"role": "assistant", "content": text}
            return httpx.Response(200, json={"model": "m-v1", "choices": [{"message": message}]})
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Body(self, text)
        )


class _Body(httpx.SyncByteStream):
    def __init__(self, upstream: Upstream, text: str) -> None:
        self.upstream = upstream
        self.words = [w + " " for w in text.split(" ")]
        self.words[-1] = self.words[-1].rstrip()

    def __iter__(self) -> Iterator[bytes]:
        up = self.upstream
        for i, word in enumerate(self.words):
            if up.break_after is not None and i == up.break_after:
                raise httpx.RemoteProtocolError("peer closed connection: incomplete chunked read")
            yield _event({"model": "m-v1", "choices": [{"index": 0, "delta": {"content": word}}]})
            if i == 0:
                up.streaming.set()
                if up.hold is not None:
                    assert up.hold.wait(10)
        yield _event(
            {"model": "m-v1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        )
        yield _event(
            {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": len(self.words)}}
        )
        yield b"data: [DONE]\n\n"

    def close(self) -> None:
        with self.upstream._lock:
            self.upstream.closed += 1


def _event(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def cache(upstream: Upstream) -> PromptCache:
    llm = OpenAICompatibleLLM(
        httpx.Client(transport=httpx.MockTransport(upstream)), base_url="http://up/v1"
    )
    return PromptCache(store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)


def ask(prompt: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=(Message("user", prompt),), model="m", **kw)


def test_a_miss_passes_deltas_through_and_is_stored_only_at_the_end(
    cache: PromptCache, upstream: Upstream
) -> None:
    stream = cache.chat_stream(ask("Why is the sky blue?"))
    assert stream.tier is Tier.MISS and stream.entry_id is None and stream.result is None
    first = next(stream)
    assert first == "answer "
    assert cache.store.count() == 0  # not before the model has finished
    rest = list(stream)
    text = first + "".join(rest)
    assert text == "answer 1: Why is the sky blue?"
    assert cache.store.count() == 1
    result = stream.result
    assert result is not None and result.tier is Tier.MISS and result.entry_id
    assert result.model == "m-v1" and result.usage.total_tokens == 2 + 7
    assert upstream.closed == 1

    again = cache.chat_stream(ask("Why is the  sky blue? "))
    assert (
        again.tier is Tier.EXACT and again.entry_id == result.entry_id and again.similarity == 1.0
    )
    assert "".join(again) == text
    plain = cache.chat(ask("Why is the sky blue?"))
    assert plain.tier is Tier.EXACT and plain.response == text
    assert upstream.calls == 1
    report = cache.report()
    assert report["misses"] == 1 and report["hits"]["exact"] == 2
    assert report["tokens_used"] == 9 and report["tokens_saved"] == 18  # usage came from the stream


def test_embeddings_are_counted_per_request_even_when_the_stream_ends_later(
    cache: PromptCache,
) -> None:
    stream = cache.chat_stream(ask("Count my embeddings"))  # exact miss, embed, semantic miss
    assert cache.report()["embeddings"] == 0  # counted when the request is done, not before
    consumer = threading.Thread(target=lambda: list(stream))  # ends in another thread's context
    consumer.start()
    consumer.join(5)
    assert cache.report()["embeddings"] == 1  # the lookup's vector is reused to store
    list(cache.chat_stream(ask(" Count  my embeddings")))  # exact hit: no embedding
    assert cache.report()["embeddings"] == 1
    list(cache.chat_stream(ask("Count my embeddings", cache=CacheMode.REFRESH)))  # embeds to store
    assert cache.report()["embeddings"] == 2


def test_a_plain_miss_replays_as_a_streamed_hit(cache: PromptCache, upstream: Upstream) -> None:
    text = cache.chat(ask("Name a prime number")).response
    stream = cache.chat_stream(ask("Name a prime number"))
    assert stream.cached and "".join(stream) == text and stream.result is not None
    assert upstream.calls == 1


def test_a_semantic_hit_streams_with_its_similarity(upstream: Upstream) -> None:
    a = unit("a")
    embedder = FakeEmbedder(
        {
            normalize("How tall is Everest?"): a,
            normalize("Everest height?"): blend(a, unit("b"), 0.95),
        }
    )
    llm = OpenAICompatibleLLM(
        httpx.Client(transport=httpx.MockTransport(upstream)), base_url="http://up/v1"
    )
    cache = PromptCache(store=MemoryStore(), embedder=embedder, stats=MemoryStats(), llm=llm)
    text = "".join(cache.chat_stream(ask("How tall is Everest?")))
    stream = cache.chat_stream(ask("Everest height?"))
    assert stream.tier is Tier.SEMANTIC and stream.similarity == pytest.approx(0.95, abs=1e-4)
    assert "".join(stream) == text and upstream.calls == 1


def test_a_broken_stream_stores_nothing(cache: PromptCache, upstream: Upstream) -> None:
    upstream.break_after = 2
    stream = cache.chat_stream(ask("Tell me a story"))
    got = [next(stream), next(stream)]
    with pytest.raises(UpstreamError, match="stream broke"):
        next(stream)
    assert got == ["answer ", "1: "] and stream.result is None
    assert cache.store.count() == 0
    upstream.break_after = None
    again = cache.chat_stream(ask("Tell me a story"))
    assert again.tier is Tier.MISS and "".join(again) == "answer 2: Tell me a story"
    assert cache.report()["misses"] == 1  # the broken one is not counted as answered


def test_a_failure_before_the_first_delta_raises_from_chat_stream(
    cache: PromptCache, upstream: Upstream
) -> None:
    upstream.status = 429
    with pytest.raises(UpstreamRateLimited, match="status 429"):
        cache.chat_stream(ask("hello"))
    upstream.status = 200
    assert cache.chat_stream(ask("hello")).tier is Tier.MISS  # the flight was released


def test_a_cancelled_stream_stores_nothing(cache: PromptCache, upstream: Upstream) -> None:
    stream = cache.chat_stream(ask("Write a long essay"))
    next(stream)
    stream.close()
    assert upstream.closed == 1 and stream.result is None
    assert cache.store.count() == 0
    assert list(stream) == []  # closing is final
    again = cache.chat_stream(ask("Write a long essay"))
    assert again.tier is Tier.MISS and upstream.calls == 2
    assert list(again) and cache.store.count() == 1


def test_skip_streams_without_reading_or_writing(cache: PromptCache, upstream: Upstream) -> None:
    cache.chat(ask("cached question"))
    stream = cache.chat_stream(ask("cached question", cache=CacheMode.SKIP))
    assert stream.tier is Tier.BYPASS and stream.bypass_reason == "cache=skip"
    assert "".join(stream) == "answer 2: cached question"
    assert stream.result is not None and stream.result.tier is Tier.BYPASS
    assert cache.store.count() == 1


def test_refresh_streams_and_replaces_the_entry(cache: PromptCache, upstream: Upstream) -> None:
    old = cache.chat(ask("What time is it?"))
    stream = cache.chat_stream(ask("What time is it?", cache=CacheMode.REFRESH))
    assert stream.tier is Tier.MISS and "".join(stream) == "answer 2: What time is it?"
    assert cache.store.count() == 1 and cache.store.get(old.entry_id) is None  # type: ignore[arg-type]
    assert cache.chat(ask("What time is it?")).response == "answer 2: What time is it?"


def test_an_embedder_failure_bypasses_but_still_streams(upstream: Upstream) -> None:
    embedder = FakeEmbedder()
    llm = OpenAICompatibleLLM(
        httpx.Client(transport=httpx.MockTransport(upstream)), base_url="http://up/v1"
    )
    cache = PromptCache(store=MemoryStore(), embedder=embedder, stats=MemoryStats(), llm=llm)
    embedder.fail = True
    stream = cache.chat_stream(ask("anything"))
    assert stream.tier is Tier.BYPASS and "embedder" in (stream.bypass_reason or "")
    assert "".join(stream) == "answer 1: anything" and cache.store.count() == 0


def test_a_model_that_cannot_stream_answers_in_one_delta() -> None:
    llm = FakeLLM()
    cache = PromptCache(store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)
    stream = cache.chat_stream(ask("plain model"))
    assert list(stream) == ["answer 1: plain model"] and stream.tier is Tier.MISS
    assert cache.chat(ask("plain model")).tier is Tier.EXACT and llm.calls == 1


def test_no_model_configured() -> None:
    cache = PromptCache(store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=None)
    with pytest.raises(UpstreamNotConfigured):
        cache.chat_stream(ask("anyone?"))


def run(fn: Any, out: list[Any]) -> threading.Thread:
    def target() -> None:
        try:
            out.append(fn())
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_concurrent_identical_requests_share_one_streamed_miss(
    cache: PromptCache, upstream: Upstream
) -> None:
    upstream.hold = threading.Event()
    leader = cache.chat_stream(ask("Shared question"))
    assert leader.tier is Tier.MISS
    streamed: list[Any] = []
    plain: list[Any] = []

    def stream_and_read() -> tuple[Any, str]:
        follower = cache.chat_stream(ask("Shared  question"))
        return follower, "".join(follower)

    threads = [
        run(stream_and_read, streamed),
        run(lambda: cache.chat(ask("Shared question")), plain),
    ]
    time.sleep(0.2)
    assert streamed == [] and plain == []  # both wait for the leader
    upstream.hold.set()
    text = "".join(leader)
    for thread in threads:
        thread.join(5)
    follower, follower_text = streamed[0]
    assert follower.tier is Tier.EXACT and follower.entry_id == leader.result.entry_id  # type: ignore[union-attr]
    assert follower_text == text
    assert plain[0].tier is Tier.EXACT and plain[0].response == text
    assert upstream.calls == 1


def test_followers_of_a_cancelled_leader_try_again(cache: PromptCache, upstream: Upstream) -> None:
    upstream.hold = threading.Event()
    leader = cache.chat_stream(ask("Cancel me"))
    out: list[Any] = []
    thread = run(lambda: cache.chat(ask("Cancel me")), out)
    time.sleep(0.2)
    assert out == []
    upstream.hold.set()
    leader.close()  # the leader's client went away
    thread.join(5)
    assert out[0].tier is Tier.MISS and out[0].response == "answer 2: Cancel me"
    assert upstream.calls == 2 and cache.store.count() == 1


def test_followers_of_a_broken_leader_get_its_error(cache: PromptCache, upstream: Upstream) -> None:
    upstream.hold = threading.Event()
    upstream.break_after = 2
    leader = cache.chat_stream(ask("Break me"))
    out: list[Any] = []
    thread = run(lambda: cache.chat_stream(ask("Break me")), out)
    time.sleep(0.2)
    upstream.hold.set()
    with pytest.raises(UpstreamError):
        list(leader)
    thread.join(5)
    assert isinstance(out[0], UpstreamError) and upstream.calls == 1
    assert cache.store.count() == 0
