"""The OpenAI-compatible API, driven by the official ``openai`` client against a real
``promptcache serve`` whose misses go to a local OpenAI-compatible upstream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "test-model"


@pytest.fixture
def client(serve: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=serve.url + "/v1", api_key="any-key", max_retries=0, timeout=30
    ) as c:
        yield c


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, OpenAIUpstream]]:
    """One server for the tests that only send requests it refuses (no cache state involved)."""
    tmp: Path = tmp_path_factory.mktemp("openai-shared")
    with OpenAIUpstream() as upstream:
        env = {"PROMPTCACHE_DATA_DIR": str(tmp / "data"), "OPENAI_BASE_URL": upstream.base_url}
        server = ServerProcess(env, tmp / "server.log").start()
        try:
            yield server, upstream
        finally:
            server.stop()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def entries(serve: ServerProcess) -> int:
    return int(httpx.get(serve.url + "/stats", timeout=10).json()["entries"])


def content(chunks: Any) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_plain_completion_miss_then_hits(client: openai.OpenAI, upstream: OpenAIUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("How do I reverse a list in Python?")
    )
    first = raw.parse()
    assert raw.headers["x-promptcache-tier"] == "miss"
    entry = raw.headers["x-promptcache-entry"]
    assert "x-promptcache-similarity" not in raw.headers
    assert first.object == "chat.completion" and first.id.startswith("chatcmpl-")
    assert (
        first.choices[0].message.content
        == "[test upstream answer #1] How do I reverse a list in Python?"
    )
    assert first.choices[0].finish_reason == "stop" and first.usage and first.usage.total_tokens > 0

    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("How do I   reverse a list in Python? ")
    )
    assert raw.headers["x-promptcache-tier"] == "exact"
    assert raw.headers["x-promptcache-entry"] == entry
    assert raw.headers["x-promptcache-similarity"] == "1.000000"
    hit = raw.parse()
    assert hit.choices[0].message.content == first.choices[0].message.content
    assert hit.usage and hit.usage.total_tokens == 0  # what this request cost upstream

    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("How can I reverse a list in Python?")
    )
    assert raw.headers["x-promptcache-tier"] == "semantic"
    assert 0.86 <= float(raw.headers["x-promptcache-similarity"]) < 1.0
    assert raw.parse().choices[0].message.content == first.choices[0].message.content
    assert upstream.calls == 1


def test_streamed_miss_passes_chunks_through_and_stores_after_completion(
    client: openai.OpenAI, serve: ServerProcess, upstream: OpenAIUpstream
) -> None:
    upstream.stream_delay = 0.15
    question = "What is the capital city of France these days?"
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user(question), stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-promptcache-tier"] == "miss"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert "x-promptcache-entry" not in raw.headers  # the entry exists only once the stream ends
    arrivals: list[float] = []
    parts: list[str] = []
    stored_mid_stream = None
    usage = None
    for chunk in raw.parse():
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            parts.append(chunk.choices[0].delta.content)
            if stored_mid_stream is None:
                stored_mid_stream = entries(serve)
    text = "".join(parts)
    assert text == f"[test upstream answer #1] {question}"
    assert stored_mid_stream == 0  # nothing stored while the model is still answering
    assert len(parts) >= 10
    assert arrivals[-1] - arrivals[0] > 1.0  # chunks arrived as produced, not all at the end
    assert usage is not None and usage.completion_tokens == len(parts)
    assert entries(serve) == 1
    assert upstream.requests[0]["stream"] is True

    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=user(question))
    assert raw.headers["x-promptcache-tier"] == "exact"
    assert raw.parse().choices[0].message.content == text
    assert upstream.calls == 1


def test_streamed_hit_replays_the_stored_answer(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    question = "Explain in one sentence why the sky is blue during the day"
    stored = (
        client.chat.completions.create(model=MODEL, messages=user(question))
        .choices[0]
        .message.content
    )
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user(question), stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-promptcache-tier"] == "exact" and raw.headers["x-promptcache-entry"]
    chunks = list(raw.parse())
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    assert content(chunks) == stored
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 0
    assert upstream.calls == 1


@pytest.mark.parametrize("mode", ["reset", "eof"])
def test_a_broken_upstream_stream_stores_nothing(
    client: openai.OpenAI, serve: ServerProcess, upstream: OpenAIUpstream, mode: str
) -> None:
    upstream.stream_break_after = 3
    upstream.stream_break_mode = mode
    question = "Tell me a short story about a lighthouse keeper"
    got: list[str] = []
    stream = client.chat.completions.create(model=MODEL, messages=user(question), stream=True)
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert "".join(got) == "[test upstream answer "  # what arrived before the break
    assert "stream" in info.value.message
    assert entries(serve) == 0

    upstream.stream_break_after = None
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=user(question))
    assert raw.headers["x-promptcache-tier"] == "miss"
    assert upstream.calls == 2


def test_an_upstream_failure_before_the_first_chunk_is_an_http_error(
    client: openai.OpenAI, serve: ServerProcess, upstream: OpenAIUpstream
) -> None:
    upstream.fail_status = 500
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=user("Will this fail?"), stream=True)
    assert info.value.status_code == 502
    assert "injected failure" in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "server_error"
    assert entries(serve) == 0


def test_a_cancelled_stream_stores_nothing(
    client: openai.OpenAI, serve: ServerProcess, upstream: OpenAIUpstream
) -> None:
    upstream.stream_delay = 0.1
    question = " ".join(["Please write a long answer about the history of"] * 4)
    stream = client.chat.completions.create(model=MODEL, messages=user(question), stream=True)
    received = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
            if received == 2:
                break
    stream.close()  # the client goes away mid-answer
    assert upstream.stream_aborted.wait(10), "the server did not cancel the upstream stream"
    assert upstream.streams_completed == 0
    assert entries(serve) == 0

    upstream.stream_delay = 0.0
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=user(question))
    assert raw.headers["x-promptcache-tier"] == "miss" and upstream.calls == 2


def test_concurrent_identical_streams_call_the_model_once(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    upstream.stream_delay = 0.1
    question = "What are the three primary colors of light?"
    first = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user(question), stream=True
    )
    chunks = iter(first.parse())
    head = [next(chunks), next(chunks)]  # the leader is now streaming
    out: dict[str, Any] = {}

    def second() -> None:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=user(question), stream=True
        )
        out["tier"] = raw.headers["x-promptcache-tier"]
        out["text"] = content(raw.parse())

    thread = threading.Thread(target=second)
    thread.start()
    text = content(head + list(chunks))
    thread.join(30)
    assert first.headers["x-promptcache-tier"] == "miss"
    assert out == {"tier": "exact", "text": text}
    assert upstream.calls == 1


def test_a_follow_up_in_another_conversation_does_not_hit(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    finance = [
        {"role": "system", "content": "You are a financial analyst."},
        {"role": "user", "content": "What was Microsoft's revenue in 2023?"},
        {"role": "assistant", "content": "About 212 billion dollars."},
        {"role": "user", "content": "and for Apple?"},
    ]
    orchards = [
        {"role": "system", "content": "You are a gardener."},
        {"role": "user", "content": "How many pears does a tree give in a year?"},
        {"role": "assistant", "content": "A few hundred."},
        {"role": "user", "content": "and for Apple?"},
    ]
    tiers = []
    for messages in (finance, orchards, finance, orchards):
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
        tiers.append(raw.headers["x-promptcache-tier"])
    assert tiers == ["miss", "miss", "exact", "exact"]
    assert upstream.requests[0]["messages"] == finance  # the whole conversation went upstream
    # content given as a list of text parts is the same text
    parts = [dict(m, content=[{"type": "text", "text": m["content"]}]) for m in finance]
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=parts)
    assert raw.headers["x-promptcache-tier"] == "exact"


def test_different_models_never_share(client: openai.OpenAI, upstream: OpenAIUpstream) -> None:
    tiers = []
    for model in ("model-a", "model-b", "model-a", "model-b"):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=user("Same question")
        )
        assert raw.parse().model == model
        tiers.append(raw.headers["x-promptcache-tier"])
    assert tiers == ["miss", "miss", "exact", "exact"] and upstream.calls == 2
    assert [r["model"] for r in upstream.requests] == ["model-a", "model-b"]


def test_n_above_one_bypasses_the_cache(client: openai.OpenAI, upstream: OpenAIUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("Name a color"), n=3
    )
    assert raw.headers["x-promptcache-tier"] == "bypass"
    answers = sorted(c.message.content or "" for c in raw.parse().choices)
    assert [c.index for c in raw.parse().choices] == [0, 1, 2]
    assert len(set(answers)) == 3 and upstream.calls == 1  # n forwarded: one model call
    assert upstream.requests[0]["n"] == 3

    stream = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("Name a color"), n=2, stream=True
    )
    assert stream.headers["x-promptcache-tier"] == "bypass"
    texts: dict[int, str] = {}
    for chunk in stream.parse():
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert sorted(texts) == [0, 1] and texts[0] != texts[1]
    assert all("n" not in r for r in upstream.requests[1:])  # streamed: fanned out
    # nothing was stored: an ordinary request is still a miss
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("Name a color")
    )
    assert raw.headers["x-promptcache-tier"] == "miss" and upstream.calls == 4


def test_temperature_is_cached_in_its_own_namespace(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    def tier(**kw: Any) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=user("Write a haiku"), **kw
        )
        return raw.headers["x-promptcache-tier"]

    assert tier(temperature=0.9) == "miss"
    assert tier(temperature=0.9) == "exact"  # a stored sample answers the same request
    assert tier(temperature=0.2) == "miss"  # another temperature never shares
    assert tier() == "miss"
    assert (
        tier(temperature=0.9, extra_body={"promptcache": {"cache": "skip"}}) == "bypass"
    )  # a fresh sample
    assert upstream.calls == 4
    assert [r.get("temperature") for r in upstream.requests] == [0.9, 0.2, None, 0.9]


def test_models_list(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    client.chat.completions.create(model="other-model", messages=user("hello"))
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL, "other-model"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"messages": []}, "'messages'"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": user("x"), "n": 9, "stream": True}, "'n' is at most"),
        ({"messages": user("x"), "temperature": 5}, "'temperature'"),
        (
            {
                "messages": user("x"),
                "tools": [{"type": "function", "function": {"parameters": {}}}],
            },
            "'tools[0].function.name'",
        ),
        ({"messages": user("x"), "response_format": {"type": "yaml"}}, "'response_format.type'"),
        (
            {"messages": [{"role": "tool", "content": "42"}]},
            "messages[0].tool_call_id",
        ),
        ({"messages": user("x"), "seed": 1.5}, "'seed'"),
        ({"messages": user("x"), "stop": 7}, "'stop'"),
        (
            {"messages": user("x"), "extra_body": {"promptcache": {"cache": "never"}}},
            "promptcache.cache",
        ),
    ],
)
def test_bad_requests_are_4xx_in_the_openai_error_shape(
    shared: tuple[ServerProcess, OpenAIUpstream], kwargs: dict[str, Any], needle: str
) -> None:
    server, upstream = shared
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0, timeout=30)
    with client, pytest.raises(openai.BadRequestError) as info:  # OpenAI's 400, not a 422
        client.chat.completions.create(model=MODEL, **kwargs)
    assert info.value.status_code == 400 and needle in info.value.message
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "unprocessable" and body["type"] == "invalid_request_error"
    # the SDK's ``param``: the field at fault, which the message names
    param = "n" if "'n'" in needle else needle.strip("'")
    assert info.value.param == param and body["param"] == param
    assert upstream.calls == 0


def test_malformed_http_requests(shared: tuple[ServerProcess, OpenAIUpstream]) -> None:
    serve, upstream = shared
    url = serve.url + "/v1/chat/completions"
    r = httpx.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(url, content=b"hi", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = httpx.get(url)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = httpx.post(serve.url + "/v1/models", json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = httpx.get(serve.url + "/v1/embeddings")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    # /chat keeps its own error body
    r = httpx.post(serve.url + "/chat", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"code", "message"}
    assert upstream.calls == 0


def test_chat_keeps_working_and_shares_the_cache(
    client: openai.OpenAI, serve: ServerProcess, upstream: OpenAIUpstream
) -> None:
    r = httpx.post(
        serve.url + "/chat", json={"prompt": "Shared between both routes?", "model": MODEL}
    )
    assert r.json()["tier"] == "miss"
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("Shared between both routes?")
    )
    assert raw.headers["x-promptcache-tier"] == "exact"
    assert raw.parse().choices[0].message.content == r.json()["response"]
    assert upstream.calls == 1
