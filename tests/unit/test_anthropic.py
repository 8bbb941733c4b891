"""AnthropicLLM: the internal request translated into a Messages request, Claude's answer back,
and every error mapped; Claude faked at the transport (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from promptcache import (
    ChatRequest,
    Message,
    UnsupportedField,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamPayloadTooLarge,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from promptcache._errors import ConfigError
from promptcache._types import ToolCall
from promptcache.adapters._http import RetryPolicy
from promptcache.adapters.anthropic import ANTHROPIC_VERSION, AnthropicLLM

Handler = Callable[[httpx.Request], httpx.Response]


def message(*content: dict[str, Any], stop: str = "end_turn", **extra: Any) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-1",
        "content": list(content),
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 7},
        **extra,
    }


def llm(handler: Handler, **kwargs: Any) -> AnthropicLLM:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    kwargs.setdefault("policy", RetryPolicy(attempts=1))
    return AnthropicLLM(client, api_key="sk-test", base_url="http://claude.test", **kwargs)


def recorder(answer: dict[str, Any]) -> tuple[AnthropicLLM, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer)

    return llm(handler), seen


def req(*messages: Message, **kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=messages, model="claude-test", **kwargs)


def body(request: ChatRequest, **kwargs: Any) -> dict[str, Any]:
    model, _ = recorder(message())
    return model.payload(request, **kwargs)


# ---------------------------------------------------------------- the request out
def test_a_plain_request_is_sent_with_the_key_the_pinned_version_and_max_tokens() -> None:
    model, seen = recorder(message({"type": "text", "text": "Paris."}))
    answer = model.generate(req(Message("user", "capital of France?")))
    sent = seen[0]
    assert sent.method == "POST" and str(sent.url) == "http://claude.test/v1/messages"
    assert sent.headers["x-api-key"] == "sk-test" and "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == ANTHROPIC_VERSION == "2023-06-01"
    assert json.loads(sent.content) == {
        "model": "claude-test",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "capital of France?"}],
    }
    assert (answer.text, answer.model, answer.finish_reason) == ("Paris.", "claude-test-1", "stop")
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 7)


def test_the_default_max_tokens_is_the_adapters_and_a_requests_own_wins() -> None:
    model, _ = recorder(message())
    small = AnthropicLLM(httpx.Client(), api_key="k", max_tokens=321)
    assert small.payload(req(Message("user", "q")))["max_tokens"] == 321
    assert model.payload(req(Message("user", "q"), max_tokens=55))["max_tokens"] == 55


def test_system_turns_become_system_a_string_or_blocks_with_cache_control() -> None:
    plain = body(req(Message("system", "Be brief."), Message("user", "q")))
    assert plain["system"] == "Be brief." and plain["messages"] == [
        {"role": "user", "content": "q"}
    ]
    two = body(req(Message("system", "A"), Message("developer", "B"), Message("user", "q")))
    assert two["system"] == "A\n\nB"
    cached = {"type": "text", "text": "long rules", "cache_control": {"type": "ephemeral"}}
    blocks = body(req(Message("system", "long rules", parts=(cached,)), Message("user", "q")))
    assert blocks["system"] == [cached]


def test_tool_calls_and_tool_results_are_translated_with_the_clients_ids() -> None:
    calls = (
        ToolCall("weather", '{"city": "Paris"}', "call_1"),
        ToolCall("time", "", "call_2"),
    )
    sent = body(
        req(
            Message("user", "weather and time in Paris?"),
            Message("assistant", "", tool_calls=calls),
            Message("tool", "18C", tool_call_id="call_1"),
            Message("tool", "noon", tool_call_id="call_2"),
            Message("user", "thanks; and tomorrow?"),
        )
    )
    assert sent["messages"] == [
        {"role": "user", "content": "weather and time in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
                {"type": "text", "text": "thanks; and tomorrow?"},
            ],
        },
    ]


def test_a_tool_result_carried_whole_goes_to_claude_as_it_is() -> None:
    """The Messages face keeps an ``is_error`` result whole, as the turn's one part: Claude gets
    that block itself, not a result wrapped in another."""
    failed = {"type": "tool_result", "tool_use_id": "toolu_a", "content": "boom", "is_error": True}
    sent = body(
        req(
            Message("user", "run it"),
            Message("assistant", "", tool_calls=(ToolCall("run", "{}", "toolu_a"),)),
            Message("tool", "boom", tool_call_id="toolu_a", parts=(failed,)),
        )
    )
    assert sent["messages"][-1] == {"role": "user", "content": [failed]}


def test_image_parts_become_image_blocks_and_anthropic_blocks_go_as_they_are() -> None:
    parts = (
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}},
    )
    sent = body(req(Message("user", "what is this?", parts=parts)))
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        parts[3],
    ]
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    replayed = body(
        req(
            Message("user", "q"),
            Message("assistant", "a", parts=(thinking, {"type": "text", "text": "a"})),
            Message("user", "more"),
        )
    )
    assert replayed["messages"][1]["content"] == [thinking, {"type": "text", "text": "a"}]


def test_options_are_translated() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "the weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    sent = body(
        req(
            Message("user", "q"),
            temperature=0.3,
            options={
                "stop": "END",
                "top_p": 0.9,
                "top_k": 5,
                "tools": [tool],
                "tool_choice": {"type": "function", "function": {"name": "weather"}},
                "parallel_tool_calls": False,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            forward={"user": "u-42"},
        )
    )
    assert sent["temperature"] == 0.3 and sent["stop_sequences"] == ["END"]
    assert (sent["top_p"], sent["top_k"]) == (0.9, 5)
    assert sent["tools"] == [
        {
            "name": "weather",
            "description": "the weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert sent["tool_choice"] == {
        "type": "tool",
        "name": "weather",
        "disable_parallel_tool_use": True,
    }
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent["metadata"] == {"user_id": "u-42"}
    assert "parallel_tool_calls" not in sent and "user" not in sent


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
def test_tool_choice_words(choice: str, expected: dict[str, Any]) -> None:
    tool = {"type": "function", "function": {"name": "f"}}
    sent = body(req(Message("user", "q"), options={"tools": [tool], "tool_choice": choice}))
    assert sent["tool_choice"] == expected
    assert sent["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


def test_a_json_schema_response_format_is_claudes_structured_output() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    sent = body(req(Message("user", "q"), options={"response_format": fmt}))
    assert sent["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "response_format" not in sent
    text = body(req(Message("user", "q"), options={"response_format": {"type": "text"}}))
    assert "output_config" not in text and "response_format" not in text


def test_the_stream_flag_and_max_completion_tokens() -> None:
    sent = body(
        req(Message("user", "q"), max_tokens=9, forward={"max_completion_tokens": 9}), stream=True
    )
    assert sent["stream"] is True and sent["max_tokens"] == 9
    assert "max_completion_tokens" not in sent


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logit_bias", {"50256": -100}),
        ("n", 2),
        ("seed", 7),
        ("frequency_penalty", 0.5),
        ("presence_penalty", 0.5),
        ("logprobs", True),
        ("response_format", {"type": "json_object"}),
        ("store", True),
        ("metadata", {"purpose": "tests"}),
        ("service_tier", "flex"),
    ],
)
def test_fields_claude_has_no_equivalent_for_are_refused_before_any_call(
    field: str, value: Any
) -> None:
    model, seen = recorder(message())
    where = "forward" if field in ("n", "store", "metadata", "service_tier") else "options"
    with pytest.raises(UnsupportedField) as caught:
        model.generate(req(Message("user", "q"), **{where: {field: value}}))
    assert field in caught.value.message and "Anthropic" in caught.value.message
    assert caught.value.status == 400 and caught.value.code == "unsupported_field"
    assert caught.value.param == field  # OpenAI's error body names it
    assert seen == []


def test_a_temperature_above_one_a_name_and_odd_parts_are_refused() -> None:
    model, seen = recorder(message())
    refused = [
        req(Message("user", "q"), temperature=1.5),
        req(Message("user", "q", name="alice")),
        req(Message("function", "x", name="f")),
        req(Message("user", "q", parts=({"type": "input_audio", "input_audio": {}},))),
        req(Message("user", "q", parts=({"type": "image_url", "image_url": {"url": "ftp://x"}},))),
        req(Message("assistant", "", tool_calls=(ToolCall("f", "[1]", "c"),))),
    ]
    params = [
        "temperature",
        "messages[0].name",
        "messages[0].name",  # a legacy function turn: its name is met first
        "messages[0].content[0]",
        "messages[0].content[0].image_url.url",
        "messages[0].tool_calls[0].function.arguments",
    ]
    for request, param in zip(refused, params, strict=True):
        with pytest.raises(UnsupportedField) as caught:
            model.generate(request)
        assert caught.value.param == param
    assert seen == []


def test_streamed_refusal_happens_before_any_call() -> None:
    model, seen = recorder(message())
    with pytest.raises(UnsupportedField):
        next(model.stream(req(Message("user", "q"), options={"seed": 1})))
    assert seen == []


# ---------------------------------------------------------------- the answer in
def test_tool_use_thinking_and_stop_reasons_come_back() -> None:
    thinking = {"type": "thinking", "thinking": "Paris weather...", "signature": "EqQBCgIYAh=="}
    redacted = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}
    model, _ = recorder(
        message(
            thinking,
            redacted,
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            stop="tool_use",
        )
    )
    answer = model.generate(req(Message("user", "q")))
    assert answer.text == "Checking." and answer.finish_reason == "tool_calls"
    assert answer.tool_calls == (ToolCall("weather", '{"city": "Paris"}', "toolu_1"),)
    assert answer.thinking == (thinking, redacted)


def test_the_stop_sequence_that_ended_the_answer_is_kept() -> None:
    answer = message({"type": "text", "text": "1, 2, 3"}, stop="stop_sequence", stop_sequence="4")
    model, _ = recorder(answer)
    done = model.generate(req(Message("user", "count"), options={"stop": ["4"]}))
    assert done.finish_reason == "stop" and done.stop_sequence == "4"
    model, _ = recorder(message({"type": "text", "text": "x"}))
    assert model.generate(req(Message("user", "q"))).stop_sequence is None


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    model, _ = recorder(message({"type": "text", "text": "x"}, stop=reason))
    assert model.generate(req(Message("user", "q"))).finish_reason == finish


def test_usage_counts_prompt_cache_tokens_as_input() -> None:
    usage = {
        "input_tokens": 5,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 20,
        "output_tokens": 3,
    }
    model, _ = recorder(message({"type": "text", "text": "x"}, usage=usage))
    done = model.generate(req(Message("user", "q")))
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (125, 3)


def test_an_unreadable_answer_is_an_upstream_error() -> None:
    for answer in ({"content": "nope"}, {"no": "content"}, [1, 2]):
        model = llm(lambda r, a=answer: httpx.Response(200, json=a))
        with pytest.raises(UpstreamError, match="unreadable"):
            model.generate(req(Message("user", "q")))


# ---------------------------------------------------------------- errors
def error(status: int, kind: str, text: str, **headers: str) -> Handler:
    payload = {"type": "error", "error": {"type": kind, "message": text}, "request_id": "req_1"}
    return lambda request: httpx.Response(status, json=payload, headers=headers)


def test_errors_are_mapped() -> None:
    cases: list[tuple[Handler, type[Exception], str]] = [
        (error(400, "invalid_request_error", "bad"), UpstreamBadRequest, "bad"),
        (error(404, "not_found_error", "model: x"), UpstreamBadRequest, "model: x"),
        (error(413, "request_too_large", "big"), UpstreamPayloadTooLarge, "big"),
        (error(401, "authentication_error", "invalid x-api-key"), UpstreamError, "ANTHROPIC"),
        (error(403, "permission_error", "no"), UpstreamError, "ANTHROPIC_API_KEY"),
        (error(529, "overloaded_error", "Overloaded"), UpstreamOverloaded, "overloaded"),
        (error(503, "api_error", "unavailable"), UpstreamOverloaded, "unavailable"),
        (error(500, "api_error", "oops"), UpstreamError, "500"),
        (error(504, "timeout_error", "slow"), UpstreamTimeout, "slow"),
    ]
    for handler, kind, text in cases:
        with pytest.raises(kind, match=text) as caught:
            llm(handler).generate(req(Message("user", "q")))
        assert type(caught.value) is kind
    assert UpstreamBadRequest(".").status == 400


def test_count_tokens_sends_what_the_endpoint_takes_and_reads_the_count() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"input_tokens": 42})

    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    request = req(
        Message("system", "be brief"),
        Message("user", "q"),
        temperature=0.5,
        max_tokens=9,
        options={"tools": tools, "stop": ["x"], "top_p": 0.5},
    )
    assert llm(handler).count_tokens(request) == 42
    assert seen[0].url.path == "/v1/messages/count_tokens"
    assert seen[0].headers["x-api-key"] == "sk-test"
    sent = json.loads(seen[0].content)
    assert set(sent) == {"model", "system", "messages", "tools"}  # no limit, no sampling
    assert sent["tools"][0]["name"] == "f"


def test_count_tokens_failures_are_upstream_errors() -> None:
    with pytest.raises(UpstreamBadRequest, match="bad"):
        llm(error(400, "invalid_request_error", "bad")).count_tokens(req(Message("user", "q")))
    for answer in ({"input_tokens": "many"}, {"tokens": 3}, [1]):
        reply = httpx.Response(200, json=answer)
        with pytest.raises(UpstreamError, match="unreadable count"):
            llm(lambda _, r=reply: r).count_tokens(req(Message("user", "q")))


def test_a_429_passes_claudes_retry_after_on() -> None:
    handler = error(429, "rate_limit_error", "slow down", **{"retry-after": "17"})
    with pytest.raises(UpstreamRateLimited) as caught:
        llm(handler).generate(req(Message("user", "q")))
    assert caught.value.retry_after == 17 and caught.value.status == 429


def test_an_overloaded_claude_is_retried_like_a_503() -> None:
    answers = [
        httpx.Response(529, json={"type": "error", "error": {"type": "overloaded_error"}}),
        httpx.Response(200, json=message({"type": "text", "text": "ok"})),
    ]
    model = llm(lambda r: answers.pop(0), policy=RetryPolicy(attempts=2, backoff=0), sleep=id)
    assert model.generate(req(Message("user", "q"))).text == "ok" and answers == []


def test_transport_failures() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamTimeout):
        llm(timeout).generate(req(Message("user", "q")))
    with pytest.raises(UpstreamError, match="unreachable"):
        llm(refused).generate(req(Message("user", "q")))


def test_a_key_is_required() -> None:
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicLLM(httpx.Client(), api_key="")


# ---------------------------------------------------------------- the probe
def test_the_probe_is_the_free_models_list() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": [{"type": "model", "id": "claude-x"}]})

    model = llm(handler)
    model.ping()
    assert seen[0].method == "GET" and seen[0].url.path == "/v1/models"
    assert seen[0].headers["x-api-key"] == "sk-test"
    assert model.name == "anthropic (http://claude.test)"
    with pytest.raises(UpstreamError, match="ANTHROPIC_API_KEY"):
        llm(error(401, "authentication_error", "invalid")).ping()
    with pytest.raises(UpstreamError, match="model list"):
        llm(lambda r: httpx.Response(200, json={"models": []})).ping()
