"""Claude as the upstream: the official ``openai`` client against a real ``promptcache serve``
whose misses go to a local stand-in speaking Anthropic's Messages protocol (translated out and
back by the cache), and a server with two upstreams routing by the model."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.anthropic_upstream import SIGNATURE, AnthropicUpstream
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "claude-test-1"
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "the weather of a city",
        "parameters": {"type": "object", "properties": {"question": {"type": "string"}}},
    },
}


def claude_env(tmp: Path, upstream: AnthropicUpstream, **extra: str) -> dict[str, str]:
    return {
        "PROMPTCACHE_DATA_DIR": str(tmp / "data"),
        "PROMPTCACHE_LLM": "anthropic",
        "ANTHROPIC_API_KEY": upstream.api_key,
        "ANTHROPIC_BASE_URL": upstream.base_url,
        "PROMPTCACHE_MODEL": MODEL,
        "PROMPTCACHE_ANTHROPIC_MAX_TOKENS": "777",
        "OPENAI_BASE_URL": "",
        "OPENAI_API_KEY": "",
        **extra,
    }


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, AnthropicUpstream]]:
    tmp: Path = tmp_path_factory.mktemp("claude")
    with AnthropicUpstream() as upstream:
        server = ServerProcess(claude_env(tmp, upstream), tmp / "server.log").start()
        try:
            yield server, upstream
        finally:
            server.stop()


@pytest.fixture
def server(running: tuple[ServerProcess, AnthropicUpstream]) -> ServerProcess:
    return running[0]


@pytest.fixture
def up(running: tuple[ServerProcess, AnthropicUpstream]) -> AnthropicUpstream:
    running[1].reset()
    return running[1]


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=server.url + "/v1", api_key="any-key", max_retries=0, timeout=60
    ) as c:
        yield c


def fresh(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def create(client: openai.OpenAI, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    kwargs.setdefault("model", MODEL)
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    return raw.parse(), dict(raw.headers)


def test_a_chat_completion_is_answered_by_claude_and_then_by_the_cache(
    client: openai.OpenAI, up: AnthropicUpstream
) -> None:
    question = fresh("What is the capital of France?")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
    first, headers = create(client, messages=messages, temperature=0.2, stop=["END"])
    assert headers["x-promptcache-tier"] == "miss" and up.calls == 1
    assert first.choices[0].message.content == f"[claude stand-in answer #1] {question}"
    assert first.choices[0].finish_reason == "stop"
    assert first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0
    sent, sent_headers = up.requests[0], up.headers[0]
    assert sent == {
        "model": MODEL,
        "max_tokens": 777,
        "messages": [{"role": "user", "content": question}],
        "system": "Be brief.",
        "temperature": 0.2,
        "stop_sequences": ["END"],
    }
    assert sent_headers["x-api-key"] == up.api_key and "authorization" not in sent_headers
    assert sent_headers["anthropic-version"] == "2023-06-01"
    again, headers = create(client, messages=messages, temperature=0.2, stop=["END"])
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 1
    assert again.choices[0].message.content == first.choices[0].message.content


def test_a_streamed_completion_is_relayed_from_claudes_events(
    client: openai.OpenAI, up: AnthropicUpstream
) -> None:
    question = fresh("Tell me about the Loire valley")
    messages = [{"role": "user", "content": question}]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, stream=True, max_tokens=64
    )
    assert raw.headers["x-promptcache-tier"] == "miss"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"[claude stand-in answer #1] {question}"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert up.requests[0]["stream"] is True and up.requests[0]["max_tokens"] == 64
    assert up.streams_completed == 1
    replay = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, stream=True, max_tokens=64
    )
    assert replay.headers["x-promptcache-tier"] == "exact" and up.calls == 1
    again = "".join(c.choices[0].delta.content or "" for c in replay.parse() if c.choices)
    assert again == text


def test_tool_calls_come_back_from_tool_use_and_results_go_as_tool_result(
    client: openai.OpenAI, up: AnthropicUpstream
) -> None:
    question = fresh("What is the weather in Paris?")
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    first, headers = create(client, messages=messages, tools=[WEATHER], tool_choice="required")
    choice = first.choices[0]
    assert headers["x-promptcache-tier"] == "miss" and choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "weather"
    assert json.loads(call.function.arguments) == {"question": question, "call": 0}
    sent = up.requests[0]
    assert sent["tools"] == [
        {
            "name": "weather",
            "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
            "description": "the weather of a city",
        }
    ]
    assert sent["tool_choice"] == {"type": "any"}
    again, headers = create(client, messages=messages, tools=[WEATHER], tool_choice="required")
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 1
    assert again.choices[0].message.tool_calls[0].function.name == "weather"

    follow = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    answer, _ = create(client, messages=follow, tools=[WEATHER])
    assert "from tool results: 18C and sunny" in answer.choices[0].message.content
    turns = up.requests[-1]["messages"]
    assert turns[1]["content"] == [
        {
            "type": "tool_use",
            "id": call.id,
            "name": "weather",
            "input": json.loads(call.function.arguments),
        }
    ]
    assert turns[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}],
    }


def test_streamed_tool_calls_and_thinking(client: openai.OpenAI, up: AnthropicUpstream) -> None:
    question = fresh("Weather in Lyon?")
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": question}],
        tools=[WEATHER],
        stream=True,
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
    )
    chunks = list(stream)
    calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or ())]
    assert calls and calls[0].function.name == "weather"
    arguments = "".join(t.function.arguments or "" for t in calls)
    assert json.loads(arguments) == {"question": question, "call": 0}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert up.requests[0]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert up.streams_completed == 1 and SIGNATURE


def test_a_field_claude_cannot_take_is_a_400_naming_it_and_claude_is_not_called(
    client: openai.OpenAI, up: AnthropicUpstream
) -> None:
    messages = [{"role": "user", "content": fresh("Pick a number")}]
    for kwargs in ({"seed": 7}, {"logit_bias": {"1": 5}}, {"temperature": 1.5}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=MODEL, messages=messages, **kwargs)
        error = caught.value.body
        assert isinstance(error, dict) and error["code"] == "unsupported_field"
        assert next(iter(kwargs)) in error["message"] and "Anthropic" in error["message"]
    with pytest.raises(openai.BadRequestError, match="seed"):
        list(client.chat.completions.create(model=MODEL, messages=messages, seed=7, stream=True))
    assert up.calls == 0


def test_claudes_errors_reach_the_client(client: openai.OpenAI, up: AnthropicUpstream) -> None:
    messages = [{"role": "user", "content": fresh("Hello")}]
    up.fail_status, up.fail_headers = 429, {"retry-after": "7"}
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert limited.value.response.headers["retry-after"] == "7"
    up.fail_status, up.fail_headers = 529, {}
    with pytest.raises(openai.APIStatusError) as overloaded:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert overloaded.value.status_code == 502 and "overloaded" in str(overloaded.value)
    up.fail_status = None
    up.stream_error_after = 2
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
    up.stream_error_after = None
    up.stream_cut_after = 1
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
    up.stream_cut_after = None
    fine, headers = create(client, messages=messages)  # nothing was stored by the failures
    assert headers["x-promptcache-tier"] == "miss" and fine.choices[0].message.content


def test_health_names_claude_and_reuses_its_models_probe(
    server: ServerProcess, up: AnthropicUpstream
) -> None:
    first = httpx.get(server.url + "/health", timeout=10).json()
    second = httpx.get(server.url + "/health", timeout=10).json()
    llm = first["dependencies"]["llm"]
    assert llm["ok"] is True and llm["detail"].startswith(f"configured: anthropic ({up.base_url})")
    assert llm["detail"].endswith("probe: ok") and second["dependencies"]["llm"] == llm
    assert up.model_calls <= 1 and up.calls == 0  # the probe is the models list, never a message


def test_two_upstreams_route_by_the_model(tmp_path: Path) -> None:
    with AnthropicUpstream() as claude, OpenAIUpstream() as gpt:
        env = claude_env(tmp_path, claude, OPENAI_BASE_URL=gpt.base_url, PROMPTCACHE_LLM="")
        env["PROMPTCACHE_MODEL"] = "test-model"
        server = ServerProcess(env, tmp_path / "server.log").start()
        try:
            with openai.OpenAI(
                base_url=server.url + "/v1", api_key="k", max_retries=0, timeout=60
            ) as client:
                question = [{"role": "user", "content": fresh("Which upstream?")}]
                by_claude, _ = create(client, model="claude-test-1", messages=question)
                by_default, _ = create(client, model="test-model", messages=question)
                n2, _ = create(client, model="claude-test-1", messages=question, n=2)
            health = httpx.get(server.url + "/health", timeout=10).json()
        finally:
            server.stop()
    assert "claude stand-in" in by_claude.choices[0].message.content
    assert "test upstream" in by_default.choices[0].message.content
    assert len(n2.choices) == 2 and claude.calls == 3 and gpt.calls == 1  # n fanned out
    assert all("n" not in body for body in claude.requests)
    detail = health["dependencies"]["llm"]["detail"]
    assert "openai-compatible" in detail and "claude-* -> anthropic" in detail
