"""The deployed (buffered) path: API Gateway hands the Lambda handler a v2 event and returns the
handler's whole body at once. The official ``openai`` client talks to the handler in-process
through a mock transport (standing in for API Gateway); misses go to a local upstream."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import httpx2
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from promptcache import PromptCache, runtime
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.adapters.openai_compat import OpenAICompatibleLLM
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.support.openai_upstream import OpenAIUpstream

pytestmark = pytest.mark.integration


class Gateway:
    """What API Gateway does with a Lambda proxy integration: event in, whole response out."""

    def __init__(self, handler: ModuleType) -> None:
        self.handler = handler
        self.results: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        event = to_event(
            request.method, request.url.raw_path.decode(), dict(request.headers), request.read()
        )
        result = self.handler.lambda_handler(event, LocalContext("chat"))
        self.results.append(result)
        status, headers, body = from_result(result)
        return httpx2.Response(status, headers=headers, content=body)


@pytest.fixture
def gateway(
    monkeypatch: pytest.MonkeyPatch, upstream: OpenAIUpstream, local_embedder: Any
) -> Iterator[Gateway]:
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory")
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.base_url)
    monkeypatch.setenv("PROMPTCACHE_MODEL", "test-model")
    runtime.reset()
    with httpx.Client(timeout=30) as http:
        llm = OpenAICompatibleLLM(http, base_url=upstream.base_url)
        cache = PromptCache(
            store=MemoryStore(), embedder=local_embedder, stats=MemoryStats(), llm=llm
        )
        monkeypatch.setattr(runtime, "cache", lambda: cache)
        handler = importlib.reload(importlib.import_module("promptcache_handlers.chat"))
        yield Gateway(handler)
    monkeypatch.undo()
    runtime.reset()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    http = httpx2.Client(transport=httpx2.MockTransport(gateway))
    with openai.OpenAI(
        base_url="https://api.example/v1", api_key="k", http_client=http, max_retries=0
    ) as c:
        yield c


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_a_streamed_miss_is_one_buffered_event_stream_the_client_parses(
    client: openai.OpenAI, gateway: Gateway, upstream: OpenAIUpstream
) -> None:
    question = "Which planet is the largest in the solar system?"
    raw = client.chat.completions.with_raw_response.create(
        model="test-model",
        messages=ask(question),
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-promptcache-tier"] == "miss"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"[test upstream answer #1] {question}"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    result = gateway.results[-1]  # what the Lambda returned to API Gateway
    assert result["statusCode"] == 200 and result["isBase64Encoded"] is False
    assert result["headers"]["Content-Type"] == "text/event-stream"
    assert result["body"].startswith("data: {") and result["body"].endswith("data: [DONE]\n\n")

    raw = client.chat.completions.with_raw_response.create(
        model="test-model", messages=ask(question), stream=True
    )
    assert raw.headers["x-promptcache-tier"] == "exact"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == text
    assert upstream.calls == 1


def test_a_broken_stream_is_an_http_error_when_buffered(
    client: openai.OpenAI, gateway: Gateway, upstream: OpenAIUpstream
) -> None:
    upstream.stream_break_after = 2
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="test-model", messages=ask("Break this one"), stream=True
        )
    assert info.value.status_code == 502 and "stream" in info.value.message
    assert gateway.results[-1]["headers"]["Content-Type"] == "application/json"
    upstream.stream_break_after = None
    raw = client.chat.completions.with_raw_response.create(
        model="test-model", messages=ask("Break this one")
    )
    assert raw.headers["x-promptcache-tier"] == "miss" and upstream.calls == 2  # nothing was stored


def test_plain_completions_and_models(client: openai.OpenAI, upstream: OpenAIUpstream) -> None:
    first = client.chat.completions.create(model="test-model", messages=ask("Hello there"))
    assert first.choices[0].message.content == "[test upstream answer #1] Hello there"
    assert [m.id for m in client.models.list()] == ["test-model"]


def test_the_local_server_entry_point_returns_the_same_response_with_a_live_body(
    gateway: Gateway, upstream: OpenAIUpstream
) -> None:
    body = json.dumps(
        {"model": "test-model", "stream": True, "messages": [{"role": "user", "content": "Live?"}]}
    ).encode()
    event = to_event("POST", "/v1/chat/completions", {"Content-Type": "application/json"}, body)
    result, live = gateway.handler.stream_handler(event, LocalContext("chat"))
    assert result["statusCode"] == 200 and result["body"] == "" and live is not None
    sse = b"".join(live).decode()
    assert sse.endswith("data: [DONE]\n\n")
    chunks = [
        json.loads(e[len("data: ") :]) for e in sse.split("\n\n") if e and e != "data: [DONE]"
    ]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "[test upstream answer #1] Live?"

    plain = to_event(
        "POST",
        "/v1/chat/completions",
        {"Content-Type": "application/json"},
        body.replace(b"true", b"false"),
    )
    result, live = gateway.handler.stream_handler(plain, LocalContext("chat"))
    assert live is None and result["statusCode"] == 200 and "chat.completion" in result["body"]

    bad = to_event(
        "POST", "/v1/chat/completions", {"Content-Type": "application/json"}, b'{"stream": true}'
    )
    result, live = gateway.handler.stream_handler(bad, LocalContext("chat"))
    assert live is None and result["statusCode"] == 400


WEATHER = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
}


def test_a_tool_loop_through_the_lambda_handler_plain_and_streamed(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    """The deployed path serves tools as the local server does: a streamed tool call buffered
    into one event stream the SDK reassembles, then the loop's second run from the cache."""

    def run(stream: bool) -> list[str]:
        messages: list[Any] = ask("Weather in Madrid?")
        tiers = []
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(
                model="test-model", messages=messages, tools=[WEATHER], stream=stream
            )
            tiers.append(raw.headers["x-promptcache-tier"])
            if stream:
                state: ChatCompletionStreamState[Any] = ChatCompletionStreamState(
                    input_tools=[WEATHER]
                )
                for chunk in raw.parse():
                    state.handle_chunk(chunk)
                message: Any = state.get_final_completion().choices[0].message
            else:
                message = raw.parse().choices[0].message
            if not message.tool_calls:
                assert message.content.endswith("from tool results: sunny")
                return tiers
            messages.append(message.model_dump(exclude_none=True, exclude={"parsed"}))
            for call in message.tool_calls:
                messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
        raise AssertionError("the loop did not end")

    assert run(stream=True) == ["miss", "miss"] and upstream.calls == 2
    assert run(stream=False) == ["exact", "exact"] and upstream.calls == 2
    assert run(stream=True) == ["exact", "exact"] and upstream.calls == 2


# ---------------------------------------------------------------- the Responses face
def test_responses_through_the_lambda_handler_plain_streamed_and_chained(
    client: openai.OpenAI, gateway: Gateway, upstream: OpenAIUpstream
) -> None:
    """The deployed path: a response, its streamed repeat (one buffered event stream the
    client's helper reads) from the cache, a previous_response_id follow-up and GET by id."""
    first = client.responses.create(model="test-model", input="Largest ocean?")
    assert first.output_text == "[test upstream answer #1] Largest ocean?"
    with client.responses.stream(model="test-model", input="Largest ocean?") as stream:
        final = stream.get_final_response()
    assert final.output_text == first.output_text and upstream.calls == 1
    result = gateway.results[-1]
    assert result["headers"]["Content-Type"] == "text/event-stream"
    assert result["headers"]["X-Promptcache-Tier"] == "exact"
    assert result["body"].startswith("event: response.created\ndata: {")

    follow = client.responses.create(
        model="test-model", input="And the smallest?", previous_response_id=final.id
    )
    assert follow.output_text.endswith("And the smallest?") and upstream.calls == 2
    assert [m["role"] for m in upstream.requests[-1]["messages"]] == ["user", "assistant", "user"]
    assert client.responses.retrieve(follow.id).output_text == follow.output_text


def test_a_broken_responses_stream_is_an_http_error_when_buffered_and_an_event_when_live(
    client: openai.OpenAI, gateway: Gateway, upstream: OpenAIUpstream
) -> None:
    upstream.stream_break_after = 2
    with pytest.raises(openai.InternalServerError) as info:
        client.responses.create(model="test-model", input="Break this response", stream=True)
    assert info.value.status_code == 502 and "stream" in info.value.message

    body = json.dumps({"model": "test-model", "stream": True, "input": "Break it live"}).encode()
    event = to_event("POST", "/v1/responses", {"Content-Type": "application/json"}, body)
    result, live = gateway.handler.stream_handler(event, LocalContext("chat"))
    assert result["statusCode"] == 200 and result["body"] == "" and live is not None
    events = [e for e in b"".join(live).decode().split("\n\n") if e]
    kinds = [e.split("\n", 1)[0].removeprefix("event: ") for e in events]
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds
    assert kinds[-1] == "error" and "response.completed" not in kinds
    error = json.loads(events[-1].split("data: ", 1)[1])
    assert error["type"] == "error" and error["code"] == "upstream_error"
    assert error["sequence_number"] == len(events) - 1

    upstream.stream_break_after = None
    calls = upstream.calls
    again = client.responses.create(model="test-model", input="Break it live")
    assert again.output_text.endswith("Break it live") and upstream.calls == calls + 1  # unstored
