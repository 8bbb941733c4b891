"""The Messages face driven by the official ``anthropic`` client: over HTTP against a real
``promptcache serve`` (with API keys) whose misses go to the local OpenAI-compatible stand-in, and
through the Lambda handler (buffered, as API Gateway) and the streaming entry point."""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from promptcache import PromptCache, runtime
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.adapters.openai_compat import OpenAICompatibleLLM
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess, local_server

pytestmark = pytest.mark.integration

MODEL = "test-model"
KEY = "key-alpha"
WEATHER = {
    "name": "weather",
    "description": "the weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"question": {"type": "string"}, "call": {"type": "integer"}},
        "required": ["question"],
    },
}
CLOCK = {**WEATHER, "name": "local_time", "description": "the local time of a city"}


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, OpenAIUpstream]]:
    tmp: Path = tmp_path_factory.mktemp("anthropic-messages")
    with (
        OpenAIUpstream() as upstream,
        local_server(tmp, upstream.base_url, PROMPTCACHE_API_KEYS=f"{KEY}:alpha") as server,
    ):
        yield server, upstream


@pytest.fixture
def server(running: tuple[ServerProcess, OpenAIUpstream]) -> ServerProcess:
    return running[0]


@pytest.fixture
def up(running: tuple[ServerProcess, OpenAIUpstream]) -> OpenAIUpstream:
    running[1].reset()
    return running[1]


@pytest.fixture
def client(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=60) as c:
        yield c


def fresh(text: str) -> str:
    """A question no other test asks (the module shares one cache)."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def create(client: anthropic.Anthropic, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=256, **kwargs)
    return raw.parse(), dict(raw.headers)


def calls_of(message: Any) -> list[tuple[str, Any]]:
    return [(b.name, b.input) for b in message.content if b.type == "tool_use"]


def test_create_then_a_hit_with_no_model_call(
    client: anthropic.Anthropic, up: OpenAIUpstream, server: ServerProcess
) -> None:
    question = fresh("What is the capital of Peru?")
    message, headers = create(
        client, system="Answer briefly.", messages=[{"role": "user", "content": question}]
    )
    assert headers["x-promptcache-tier"] == "miss" and headers["x-request-id"]
    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == f"[test upstream answer #1] {question}"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    sent = up.requests[0]
    assert sent["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": question},
    ]
    assert sent["max_tokens"] == 256

    again, headers = create(
        client, system="Answer briefly.", messages=[{"role": "user", "content": question}]
    )
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 1
    assert again.content[0].text == message.content[0].text and again.id != message.id
    assert again.usage.input_tokens == 0

    # the same request on /v1/chat/completions shares the entry
    completion = httpx.post(
        server.url + "/v1/chat/completions",
        json={
            "model": MODEL,
            "max_tokens": 256,
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": question},
            ],
        },
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert completion.headers["x-promptcache-tier"] == "exact" and up.calls == 1
    assert completion.json()["choices"][0]["message"]["content"] == message.content[0].text


def test_sampling_fields_are_forwarded_and_keyed(
    client: anthropic.Anthropic, up: OpenAIUpstream
) -> None:
    messages = [{"role": "user", "content": fresh("Name three rivers")}]
    fields: dict[str, Any] = {  # this client sends the sampling fields as extra body fields
        "stop_sequences": ["END"],
        "extra_body": {"temperature": 0.2, "top_p": 0.9, "top_k": 20},
        "metadata": {"user_id": "end-user-1"},
    }
    _, headers = create(client, messages=messages, **fields)
    assert headers["x-promptcache-tier"] == "miss"
    sent = up.requests[0]
    assert (sent["stop"], sent["temperature"], sent["top_p"], sent["top_k"]) == (
        ["END"],
        0.2,
        0.9,
        20,
    )
    assert sent["user"] == "end-user-1" and "metadata" not in sent
    other_user = {**fields, "metadata": {"user_id": "end-user-2"}}
    assert create(client, messages=messages, **other_user)[1]["x-promptcache-tier"] == "exact"
    other_stop = {**fields, "stop_sequences": ["STOP"]}
    assert create(client, messages=messages, **other_stop)[1]["x-promptcache-tier"] == "miss"


def test_stream_text_and_final_message_miss_then_hit(
    client: anthropic.Anthropic, up: OpenAIUpstream
) -> None:
    question = fresh("Stream the largest planet")
    texts, finals = [], []
    for _ in range(2):
        with client.messages.stream(
            model=MODEL, max_tokens=128, messages=[{"role": "user", "content": question}]
        ) as stream:
            texts.append("".join(stream.text_stream))
            finals.append(stream.get_final_message())
    assert texts[0] == texts[1] == f"[test upstream answer #1] {question}"
    assert up.calls == 1 and up.requests[0]["stream"] is True
    for final in finals:
        assert final.stop_reason == "end_turn" and final.content[0].text == texts[0]
    assert finals[0].usage.output_tokens > 0


def test_tool_use_and_a_tool_result_loop_each_repeated_turn_a_hit(
    client: anthropic.Anthropic, up: OpenAIUpstream
) -> None:
    question = fresh("Weather and time in Lima?")

    def run(stream: bool) -> tuple[list[str], str, list[str]]:
        messages: list[Any] = [{"role": "user", "content": question}]
        tiers, ids = [], []
        for _ in range(3):
            kwargs = {"system": "Use the tools.", "messages": messages, "tools": [WEATHER, CLOCK]}
            if stream:
                with client.messages.stream(model=MODEL, max_tokens=256, **kwargs) as s:
                    message = s.get_final_message()
                    tiers.append(s.response.headers["x-promptcache-tier"])
            else:
                message, headers = create(client, **kwargs)
                tiers.append(headers["x-promptcache-tier"])
            if message.stop_reason != "tool_use":
                return tiers, message.content[0].text, ids
            assert calls_of(message) == [
                ("weather", {"question": question, "call": 0}),
                ("local_time", {"question": question, "call": 1}),
            ]
            ids += [b.id for b in message.content if b.type == "tool_use"]
            messages.append({"role": "assistant", "content": message.content})
            results = [
                {"type": "tool_result", "tool_use_id": b.id, "content": f"{b.name}: 21C"}
                for b in message.content
                if b.type == "tool_use"
            ]
            messages.append({"role": "user", "content": results})
        raise AssertionError("the loop did not end")

    tiers, answer, ids = run(stream=False)
    assert tiers == ["miss", "miss"] and up.calls == 2
    assert answer.endswith("from tool results: weather: 21C; local_time: 21C")
    assert ids == ["call_up_1_0", "call_up_1_1"]  # the model's own ids on a miss
    sent = up.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool"]
    assert sent[3]["tool_call_id"] == sent[2]["tool_calls"][0]["id"] == "call_up_1_0"
    assert json.loads(sent[2]["tool_calls"][0]["function"]["arguments"])["call"] == 0

    again, answer_again, replay_ids = run(stream=False)
    assert again == ["exact", "exact"] and up.calls == 2 and answer_again == answer
    assert all(i.startswith("toolu_") for i in replay_ids)
    streamed, answer_streamed, streamed_ids = run(stream=True)
    assert streamed == ["exact", "exact"] and up.calls == 2 and answer_streamed == answer
    assert not set(streamed_ids) & set(replay_ids)


def test_a_streamed_miss_with_tools_rebuilds_tool_use_from_json_deltas(
    client: anthropic.Anthropic, up: OpenAIUpstream
) -> None:
    question = fresh("Weather in Quito?")
    with client.messages.stream(
        model=MODEL,
        max_tokens=128,
        messages=[{"role": "user", "content": question}],
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "content_block_delta" in kinds and kinds[-1] == "message_stop"
    assert final.stop_reason == "tool_use"
    assert calls_of(final) == [("weather", {"question": question, "call": 0})]
    assert up.requests[0]["tool_choice"] == "required"
    assert up.requests[0]["parallel_tool_calls"] is False
    assert up.requests[0]["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]


def test_the_key_as_x_api_key_and_errors_as_the_sdk_raises_them(
    server: ServerProcess, client: anthropic.Anthropic, up: OpenAIUpstream
) -> None:
    question = fresh("Hello by curl")
    body = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": question}]}
    curl = httpx.post(
        server.url + "/v1/messages",
        json=body,
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert curl.status_code == 200 and curl.json()["type"] == "message"
    assert create(client, messages=body["messages"])[1]["x-promptcache-tier"] == "exact"
    both = httpx.post(
        server.url + "/v1/messages",
        json=body,
        headers={"x-api-key": KEY, "Authorization": "Bearer other"},
        timeout=30,
    )
    assert both.status_code == 400 and both.json()["error"]["type"] == "invalid_request_error"

    with pytest.raises(anthropic.BadRequestError) as bad:
        create(client, messages=body["messages"], extra_body={"temperature": 1.5})
    assert bad.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "temperature: must be a number between 0 and 1",
        },
    }
    assert bad.value.type == "invalid_request_error"
    wrong = anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0)
    with wrong, pytest.raises(anthropic.PermissionDeniedError):
        create(wrong, messages=body["messages"])
    missing = httpx.post(server.url + "/v1/messages", json=body, timeout=30)
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError, match="count_tokens is answered by Claude"):
        client.messages.count_tokens(model=MODEL, messages=body["messages"])  # no Claude here

    up.fail_status, up.fail_headers = 429, {"Retry-After": "7"}
    with pytest.raises(anthropic.RateLimitError) as limited:
        create(client, messages=[{"role": "user", "content": fresh("Busy?")}])
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    up.fail_status, up.fail_headers = 500, {}
    with pytest.raises(anthropic.InternalServerError) as failed:
        create(client, messages=[{"role": "user", "content": fresh("Broken?")}])
    assert failed.value.status_code == 502
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]


# ---------------------------------------------------------------- the Lambda paths
class Gateway:
    """API Gateway's Lambda proxy integration: event in, the whole response out."""

    def __init__(self, handler: Any) -> None:
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
    monkeypatch.setenv("PROMPTCACHE_MODEL", MODEL)
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


def test_through_the_lambda_handler_plain_streamed_and_tools(
    gateway: Gateway, upstream: OpenAIUpstream
) -> None:
    http = httpx2.Client(transport=httpx2.MockTransport(gateway))
    with anthropic.Anthropic(
        base_url="https://api.example", api_key="k", http_client=http, max_retries=0
    ) as client:
        messages = [{"role": "user", "content": "Which planet is the largest?"}]
        with client.messages.stream(model=MODEL, max_tokens=64, messages=messages) as stream:
            text = "".join(stream.text_stream)
        assert text == "[test upstream answer #1] Which planet is the largest?"
        result = gateway.results[-1]  # one buffered event stream
        assert result["headers"]["Content-Type"] == "text/event-stream"
        assert result["body"].startswith("event: message_start\n")
        assert result["body"].endswith('event: message_stop\ndata: {"type": "message_stop"}\n\n')
        plain = client.messages.create(model=MODEL, max_tokens=64, messages=messages)
        assert plain.content[0].text == text and upstream.calls == 1

        ask = [{"role": "user", "content": "Weather in Madrid?"}]
        for tier in ("miss", "exact"):
            raw = client.messages.with_raw_response.create(
                model=MODEL, max_tokens=64, messages=ask, tools=[WEATHER]
            )
            assert raw.headers["x-promptcache-tier"] == tier
            assert calls_of(raw.parse())[0][0] == "weather"
        assert upstream.calls == 2

        upstream.stream_break_after = 2  # buffered: a broken stream is still an HTTP error
        broken = [{"role": "user", "content": "Break it"}]
        with (
            pytest.raises(anthropic.InternalServerError) as info,
            client.messages.stream(model=MODEL, max_tokens=64, messages=broken) as stream,
        ):
            stream.get_final_message()
        assert info.value.status_code == 502
        assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_the_streaming_entry_point_sends_the_events_live(
    gateway: Gateway, upstream: OpenAIUpstream
) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "Live?"}],
    }
    event = to_event(
        "POST", "/v1/messages", {"Content-Type": "application/json"}, json.dumps(body).encode()
    )
    result, live = gateway.handler.stream_handler(event, LocalContext("chat"))
    assert result["statusCode"] == 200 and result["body"] == "" and live is not None
    names, text = [], ""
    for chunk in b"".join(live).decode().split("\n\n"):
        if chunk:
            name, data = chunk.split("\n", 1)
            names.append(name.removeprefix("event: "))
            payload = json.loads(data.removeprefix("data: "))
            if payload["type"] == "content_block_delta":
                text += payload["delta"]["text"]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert text == "[test upstream answer #1] Live?"

    upstream.stream_break_after = 1  # live: the 200 is out, the failure is an error event
    event = to_event(
        "POST",
        "/v1/messages",
        {"Content-Type": "application/json"},
        json.dumps({**body, "messages": [{"role": "user", "content": "Break it live"}]}).encode(),
    )
    result, live = gateway.handler.stream_handler(event, LocalContext("chat"))
    assert result["statusCode"] == 200 and live is not None
    last = b"".join(live).decode().strip().split("\n\n")[-1]
    assert last.startswith("event: error\n")
    assert json.loads(last.split("\n", 1)[1].removeprefix("data: "))["error"]["type"] == "api_error"
    bad = to_event("POST", "/v1/messages", {"Content-Type": "application/json"}, b'{"stream": 1}')
    result, live = gateway.handler.stream_handler(bad, LocalContext("chat"))
    assert live is None and result["statusCode"] == 400
