"""The Messages face's translation both ways: Anthropic's request -> the internal ChatRequest (the
same as the equivalent Chat Completions request where they mean the same), and the internal
answer -> Anthropic's message object and event stream; its errors in Anthropic's shape, and the
API key sent as ``x-api-key``. In-process, through the handlers where HTTP matters."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from promptcache import PromptCache, Settings, runtime
from promptcache._errors import (
    BadRequest,
    NotFound,
    PromptCacheError,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamNotConfigured,
    UpstreamOverloaded,
    UpstreamRateLimited,
)
from promptcache._stream import ChatStream
from promptcache._types import ChatResult, Completion, Message, Tier, ToolCall, Usage
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.http import anthropic_api, anthropic_request, openai_request
from promptcache.http.wire import anthropic_error
from promptcache.routes import face_of
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.unit.fakes import FakeEmbedder, FakeLLM

SETTINGS = Settings.from_env({"PROMPTCACHE_MODEL": "default-model"})


def parse(body: dict[str, Any]) -> anthropic_request.MessagesRequest:
    return anthropic_request.parse_request(body, SETTINGS, "t")


def ask(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 64, "messages": list(messages), **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


# ---------------------------------------------------------------- request -> ChatRequest
def test_a_plain_request_is_the_same_internal_request_as_chat_completions() -> None:
    messages = parse(ask(user("What is the capital of Peru?"), system="Be brief."))
    completions = openai_request.parse_request(
        {
            "model": "m",
            "max_tokens": 64,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the capital of Peru?"},
            ],
        },
        SETTINGS,
        "t",
    )
    assert messages.chat == completions.chat
    blocks = parse(
        ask(
            user([{"type": "text", "text": "What is the capital of Peru?"}]),
            system=[{"type": "text", "text": "Be brief."}],
        )
    )
    assert blocks.chat == completions.chat


def test_sampling_fields_tools_and_choice_are_translated() -> None:
    weather = {
        "name": "weather",
        "description": "the weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
    request = parse(
        ask(
            user("Weather in Lima?"),
            stop_sequences=["END"],
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            tools=[weather, search],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            thinking={"type": "enabled", "budget_tokens": 2048},
            metadata={"user_id": "end-user-7"},
            service_tier="auto",
            future_knob={"level": 2},
        )
    ).chat
    assert request.temperature == 0.5 and request.max_tokens == 64
    assert dict(request.options) == {
        "stop": ["END"],
        "top_p": 0.9,
        "top_k": 40,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "the weather of a city",
                    "parameters": weather["input_schema"],
                },
            },
            search,
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "future_knob": {"level": 2},
    }
    assert dict(request.forward) == {"user": "end-user-7", "service_tier": "auto"}
    choices = {
        "auto": "auto",
        "none": "none",
        "tool": {"type": "function", "function": {"name": "weather"}},
    }
    for kind, expected in choices.items():
        choice = {"type": kind, "name": "weather"} if kind == "tool" else {"type": kind}
        chat = parse(ask(user("x"), tools=[weather], tool_choice=choice)).chat
        assert chat.options["tool_choice"] == expected and "parallel_tool_calls" not in chat.options
    chat = parse(ask(user("x"), store=False, safety_identifier="s-1")).chat
    assert dict(chat.forward) == {"store": False, "safety_identifier": "s-1"} and not chat.options
    cached = {**weather, "cache_control": {"type": "ephemeral"}}  # no equivalent: as it is
    assert parse(ask(user("x"), tools=[cached])).chat.options["tools"] == [cached]


def test_blocks_without_an_equivalent_are_carried_as_they_are() -> None:
    cached = {"type": "text", "text": "A long manual.", "cache_control": {"type": "ephemeral"}}
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "Some text"},
    }
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "QQ=="},
    }
    linked = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    chat = parse(
        ask(user([{"type": "text", "text": "Look:"}, image, linked, document]), system=[cached])
    ).chat
    system, turn = chat.messages
    assert system == Message("system", "A long manual.", parts=(cached,))
    assert turn.content == "Look:"
    assert turn.parts == (
        {"type": "text", "text": "Look:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        document,
    )


def test_tool_use_and_tool_results_become_calls_and_tool_turns_in_order() -> None:
    thinking = {"type": "thinking", "thinking": "Two cities.", "signature": "sig-1"}
    chat = parse(
        ask(
            user("Weather in Lima and Quito?"),
            assistant(
                [
                    thinking,
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {"c": 1}},
                    {"type": "tool_use", "id": "toolu_b", "name": "weather", "input": {}},
                ]
            ),
            user(
                [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_b",
                        "content": [{"type": "text", "text": "rain"}],
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ]
            ),
        )
    ).chat
    roles = [m.role for m in chat.messages]
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    turn = chat.messages[1]
    assert turn.tool_calls == (
        ToolCall("weather", '{"c": 1}', "toolu_a"),
        ToolCall("weather", "{}", "toolu_b"),
    )
    assert turn.content == "Checking." and turn.parts == (
        thinking,
        {"type": "text", "text": "Checking."},
    )
    assert chat.messages[2] == Message("tool", "sunny", tool_call_id="toolu_a")
    assert chat.messages[3] == Message("tool", "rain", tool_call_id="toolu_b")
    assert chat.messages[4] == Message("user", "And tomorrow?")

    failed = {"type": "tool_result", "tool_use_id": "toolu_a", "content": "boom", "is_error": True}
    turn = parse(ask(user("q"), assistant([turn_use()]), user([failed]))).chat.messages[-1]
    assert turn == Message("tool", "boom", tool_call_id="toolu_a", parts=(failed,))


def turn_use() -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}}


def test_a_tool_loop_has_the_same_key_as_its_chat_completions_twin() -> None:
    """The turns an Anthropic client sends back are the internal turns of the same loop on
    /v1/chat/completions: the entries are shared (the key names calls by position)."""
    messages = parse(
        ask(
            user("Weather?"),
            assistant([turn_use()]),
            user([{"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"}]),
        )
    ).chat
    completions = openai_request.parse_request(
        {
            "model": "m",
            "max_tokens": 64,
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": "{ }"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
        },
        SETTINGS,
        "t",
    ).chat
    from promptcache._keys import namespace, turn_keys

    assert turn_keys(messages.messages) == turn_keys(completions.messages)
    assert namespace(messages, "e", 8) == namespace(completions, "e", 8)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"model": "m", "messages": [user("hi")]}, "max_tokens"),
    ({"model": "m", "max_tokens": 5}, "messages"),
    (ask(), "messages"),
    (ask({"role": "system", "content": "hi"}), "messages.0.role"),
    (ask(user("hi"), max_tokens="5"), "max_tokens"),
    (ask(user("hi"), max_tokens=0), "max_tokens"),
    (ask(user("hi"), temperature=1.5), "temperature"),
    (ask(user("hi"), top_p="x"), "top_p"),
    (ask(user("hi"), top_k=-1), "top_k"),
    (ask(user("hi"), stop_sequences="END"), "stop_sequences"),
    (ask(user("hi"), system=5), "system"),
    (ask(user("hi"), system=[{"type": "image"}]), "system.0.type"),
    (ask(user(5)), "messages.0.content"),
    (ask(user([])), "messages.0.content"),
    (ask(user("  ")), "messages.0.content"),
    (ask(user([{"text": "no type"}])), "messages.0.content[0]"),
    (ask(user([{"type": "text", "text": 3}])), "messages.0.content.0.text"),
    (ask(user([turn_use()])), "messages.0.content.0"),
    (ask(assistant([{"type": "tool_result", "tool_use_id": "x"}])), "messages.0.content.0"),
    (ask(user([{"type": "tool_result"}])), "tool_use_id"),
    (ask(assistant([{**turn_use(), "input": "x"}])), "input"),
    (ask(user("hi"), tools={"name": "x"}), "tools"),
    (ask(user("hi"), tools=[{"name": "x"}]), "tools.0.input_schema"),
    (ask(user("hi"), tool_choice="auto"), "tool_choice"),
    (ask(user("hi"), tool_choice={"type": "every"}), "tool_choice.type"),
    (ask(user("hi"), tool_choice={"type": "tool"}), "tool_choice.name"),
    (ask(user("hi"), thinking=True), "thinking"),
    (ask(user("hi"), metadata={"user_id": 5}), "metadata.user_id"),
    (ask(user("hi"), stream="yes"), "stream"),
    (ask(user("hi"), model=""), "model"),
    (ask(user("hi"), promptcache={"cache": "never"}), "promptcache.cache"),
]


@pytest.mark.parametrize(("body", "field"), BAD)
def test_bad_input_is_a_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse(body)
    assert field in info.value.message and info.value.status == 400


# ---------------------------------------------------------------- answer -> message
def result(**fields: Any) -> ChatResult:
    base: dict[str, Any] = {
        "response": "Lima is sunny.",
        "tier": Tier.MISS,
        "model": "m",
        "usage": Usage(12, 5),
        "latency_ms": 1.0,
    }
    return ChatResult(**(base | fields))


THINKING = (
    {"type": "thinking", "thinking": "The user wants the weather." * 5, "signature": "c2ln"},
    {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
)


def test_the_message_object_orders_thinking_text_and_tool_use() -> None:
    calls = (ToolCall("weather", '{"city": "Lima"}'), ToolCall("clock", ""))
    answer = anthropic_api.message_object(
        result(tool_calls=calls, finish_reason="tool_calls", thinking=THINKING), message_id="msg_1"
    )
    assert answer["id"] == "msg_1" and answer["type"] == "message"
    assert answer["role"] == "assistant" and answer["model"] == "m"
    assert answer["stop_reason"] == "tool_use" and answer["stop_sequence"] is None
    assert answer["usage"] == {"input_tokens": 12, "output_tokens": 5}
    content = answer["content"]
    assert content[:2] == list(THINKING)
    assert content[2] == {"type": "text", "text": "Lima is sunny."}
    assert [(b["type"], b["name"], b["input"]) for b in content[3:]] == [
        ("tool_use", "weather", {"city": "Lima"}),
        ("tool_use", "clock", {}),
    ]
    ids = [b["id"] for b in content[3:]]
    assert all(i.startswith("toolu_") for i in ids) and len(set(ids)) == 2
    again = anthropic_api.message_object(result(tool_calls=calls), message_id="msg_2")
    assert not {b["id"] for b in again["content"][1:]} & set(ids)  # fresh on every replay
    live = anthropic_api.message_object(
        result(response="", tool_calls=(ToolCall("clock", "{}", "call_up_1"),)), message_id="m"
    )
    assert live["content"] == [
        {"type": "tool_use", "id": "call_up_1", "name": "clock", "input": {}}
    ]
    assert live["stop_reason"] == "tool_use"  # calls with a 'stop' finish: still tool_use
    empty = anthropic_api.message_object(result(response=""), message_id="m")
    assert empty["content"] == [{"type": "text", "text": ""}]


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("tool_calls", "tool_use"),
    ],
)
def test_finish_reasons_become_stop_reasons(finish: str, stop: str) -> None:
    answer = anthropic_api.message_object(result(finish_reason=finish), message_id="m")
    assert answer["stop_reason"] == stop


@pytest.mark.parametrize("arguments", ["[1, 2]", '"text"', "not json", "3"])
def test_arguments_that_are_no_object_are_an_api_error(arguments: str) -> None:
    with pytest.raises(UpstreamError, match="not a JSON object"):
        anthropic_api.message_object(result(tool_calls=(ToolCall("f", arguments),)), message_id="m")


# ---------------------------------------------------------------- answer -> event stream
def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for chunk in body.decode().split("\n\n"):
        if chunk:
            name, data = chunk.split("\n", 1)
            assert name.startswith("event: ") and data.startswith("data: ")
            payload = json.loads(data[len("data: ") :])
            assert payload["type"] == name[len("event: ") :]
            out.append((name[len("event: ") :], payload))
    return out


def rebuild(stream: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """What a Messages stream reader rebuilds: the blocks by index, deltas applied."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for name, event in stream:
        if name == "message_start":
            message = event["message"]
        elif name == "content_block_start":
            assert event["index"] == len(message["content"])
            message["content"].append(dict(event["content_block"]))
        elif name == "content_block_delta":
            block, delta = message["content"][event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                assert delta["type"] == "input_json_delta"
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif name == "content_block_stop":
            if event["index"] in partial:
                message["content"][event["index"]]["input"] = json.loads(partial[event["index"]])
        elif name == "message_delta":
            message.update(event["delta"])
            message["usage"].update(event["usage"])
    return message


def test_a_replay_streams_thinking_first_then_text_then_tool_use() -> None:
    calls = (ToolCall("weather", json.dumps({"city": "Lima", "notes": "x" * 200})),)
    done = result(tool_calls=calls, finish_reason="tool_calls", thinking=THINKING)
    stream = events(b"".join(anthropic_api.sse_body(ChatStream.replay(done), message_id="msg_9")))
    names = [n for n, _ in stream]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 4
    rebuilt = rebuild(stream)
    expected = anthropic_api.message_object(done, message_id="msg_9")
    for block in (*rebuilt["content"], *expected["content"]):
        block.pop("id", None)
    assert rebuilt == expected
    deltas = [e["delta"]["type"] for n, e in stream if n == "content_block_delta"]
    assert deltas.count("input_json_delta") > 1 and "signature_delta" in deltas


def test_a_live_stream_sends_text_as_it_comes_and_calls_at_the_end() -> None:
    def relay() -> Iterator[str]:
        yield "Checking "
        yield "now."
        return result(  # type: ignore[return-value]
            response="Checking now.",
            tool_calls=(ToolCall("clock", "{}", "call_up_1"),),
            finish_reason="tool_calls",
        )

    live = ChatStream(tier=Tier.MISS, model="m", deltas=relay())
    stream = events(b"".join(anthropic_api.sse_body(live, message_id="msg_1")))
    first = stream[1]
    assert first == (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    message = rebuild(stream)
    assert message["content"] == [
        {"type": "text", "text": "Checking now."},
        {"type": "tool_use", "id": "call_up_1", "name": "clock", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use" and message["usage"]["output_tokens"] == 5


def test_a_failure_after_the_200_is_an_error_event() -> None:
    def relay() -> Iterator[str]:
        yield "Half "
        raise UpstreamError("the LLM upstream stream broke")

    stream = ChatStream(tier=Tier.MISS, model="m", deltas=relay())
    body = b"".join(anthropic_api.sse_body(stream, message_id="m", errors_as_events=True))
    name, error = events(body)[-1]
    assert name == "error" and error["error"]["type"] == "api_error"
    assert "broke" in error["error"]["message"]
    again = ChatStream(tier=Tier.MISS, model="m", deltas=relay())
    with pytest.raises(UpstreamError):  # buffered: still an HTTP error
        b"".join(anthropic_api.sse_body(again, message_id="m", errors_as_events=False))


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (BadRequest("x"), "invalid_request_error"),
        (Unauthorized("x"), "authentication_error"),
        (PromptCacheError("x"), "api_error"),
        (NotFound("x"), "not_found_error"),
        (RateLimited("x", retry_after=3), "rate_limit_error"),
        (UpstreamRateLimited("x"), "rate_limit_error"),
        (UpstreamError("x"), "api_error"),
        (UpstreamNotConfigured("x"), "api_error"),
        (UpstreamOverloaded("x"), "overloaded_error"),
    ],
)
def test_errors_in_anthropics_shape(exc: PromptCacheError, kind: str) -> None:
    assert anthropic_error(exc) == {"type": "error", "error": {"type": kind, "message": "x"}}


def test_paths_under_v1_messages_answer_in_anthropics_shape() -> None:
    assert face_of("/v1/messages") == "anthropic"
    assert face_of("/v1/messages/count_tokens") == "anthropic"
    assert face_of("/v1/messagesx") == "openai" and face_of("/v1/other") == "openai"


# ---------------------------------------------------------------- through the handler
@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory")
    monkeypatch.setenv("PROMPTCACHE_API_KEYS", "ka:alpha,kb:beta")
    monkeypatch.setenv("PROMPTCACHE_ADMIN_KEY", "admin-key")
    runtime.reset()
    llm = FakeLLM()
    cache = PromptCache(store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)
    monkeypatch.setattr(runtime, "cache", lambda: cache)
    module = importlib.reload(importlib.import_module("promptcache_handlers.chat"))
    module.llm = llm
    yield module
    monkeypatch.undo()
    runtime.reset()


def post(
    module: Any, path: str, body: Any, headers: dict[str, str], live: bool = False
) -> tuple[int, dict[str, str], Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    event = to_event("POST", path, {"Content-Type": "application/json", **headers}, raw)
    if live:
        result, chunks = module.stream_handler(event, LocalContext("chat"))
    else:
        result, chunks = module.lambda_handler(event, LocalContext("chat")), None
    status, out, payload = from_result(result)
    if chunks is not None:
        payload = b"".join(chunks)
    text = payload.decode()
    is_json = dict(out).get("Content-Type") == "application/json"
    return status, dict(out), json.loads(text) if is_json else text


def test_the_key_as_x_api_key_or_bearer_and_both_only_when_equal(handler: Any) -> None:
    body = ask(user("Hello?"))
    status, headers, answer = post(handler, "/v1/messages", body, {"x-api-key": "ka"})
    assert status == 200 and headers["X-Promptcache-Tier"] == "miss"
    status, headers, _ = post(handler, "/v1/messages", body, {"Authorization": "Bearer ka"})
    assert status == 200 and headers["X-Promptcache-Tier"] == "exact"
    both = {"Authorization": "Bearer ka", "x-api-key": "ka", "anthropic-version": "2023-06-01"}
    assert post(handler, "/v1/messages", body, both)[0] == 200
    other = {"Authorization": "Bearer kb", "x-api-key": "ka"}
    status, _, error = post(handler, "/v1/messages", body, other)
    assert status == 400 and error["error"]["type"] == "invalid_request_error"
    assert "differ" in error["error"]["message"]
    status, _, error = post(handler, "/chat", {"prompt": "hi"}, other)  # on every route
    assert status == 400 and "differ" in error["error"]["message"]
    assert post(handler, "/chat", {"prompt": "hi"}, {"x-api-key": "kb"})[0] == 200
    status, _, error = post(handler, "/v1/messages", body, {"x-api-key": "ka,kb"})
    assert status == 400 and "one X-Api-Key header" in error["error"]["message"]
    status, _, error = post(handler, "/v1/messages", body, {})
    assert status == 401 and error == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "message": "missing API key: send 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'",
        },
    }
    status, _, error = post(handler, "/v1/messages", body, {"x-api-key": "wrong"})
    assert status == 403 and error["error"]["type"] == "permission_error"
    status, _, error = post(handler, "/v1/messages", body, {"x-api-key": "admin-key"})
    assert status == 400 and "X-Promptcache-Tenant" in error["error"]["message"]  # not a 422
    assert handler.llm.calls == 2  # the first request, and /chat's


def test_malformed_bodies_are_anthropic_400s_and_ask_no_model(handler: Any) -> None:
    key = {"x-api-key": "ka"}
    for raw in (b"[1]", b"{", b"", json.dumps({"messages": [user("hi")]}).encode()):
        status, headers, error = post(handler, "/v1/messages", raw, key)
        assert status == 400 and headers["Content-Type"] == "application/json", raw
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    status, _, error = post(handler, "/v1/messages/batches", ask(user("hi")), key)
    assert status == 404 and error["error"]["type"] == "not_found_error"
    # count_tokens is Claude's count: another upstream has none, and none is made up
    status, _, error = post(handler, "/v1/messages/count_tokens", ask(user("hi")), key)
    assert status == 400 and error["error"]["type"] == "invalid_request_error"
    assert "count_tokens is answered by Claude" in error["error"]["message"]
    status, _, error = post(handler, "/v1/messages/count_tokens", b"{", key)
    assert status == 400 and error["error"]["type"] == "invalid_request_error"
    event = to_event("GET", "/v1/messages", key, b"")
    status, _, payload = from_result(handler.lambda_handler(event, LocalContext("chat")))
    assert status == 405 and json.loads(payload)["error"]["type"] == "invalid_request_error"
    assert handler.llm.calls == 0


def test_a_streamed_request_through_the_handler_live_and_buffered(handler: Any) -> None:
    body = ask(user("Stream me"), stream=True)
    for live, tier in ((True, "miss"), (False, "exact")):
        status, headers, text = post(handler, "/v1/messages", body, {"x-api-key": "ka"}, live)
        assert status == 200 and headers["Content-Type"] == "text/event-stream"
        assert headers["X-Promptcache-Tier"] == tier
        message = rebuild(events(text.encode()))
        assert message["content"] == [{"type": "text", "text": "answer 1: Stream me"}]
    thinking = ask(user("Think first"), stream=True, thinking={"type": "enabled"})
    status, headers, text = post(handler, "/v1/messages", thinking, {"x-api-key": "ka"}, True)
    assert status == 200 and headers["X-Promptcache-Tier"] == "miss"  # answered, then streamed
    assert rebuild(events(text.encode()))["content"][0]["text"] == "answer 2: Think first"


def test_a_stored_answer_with_thinking_is_replayed_with_it(handler: Any) -> None:
    cache: PromptCache = runtime.cache()
    request = parse(ask(user("Deep question"), thinking={"type": "enabled"}))
    stored = Completion("Deep answer.", "m", Usage(3, 4), thinking=THINKING)
    cache.store_answer(
        anthropic_request.parse_request(
            ask(user("Deep question"), thinking={"type": "enabled"}),
            SETTINGS,
            "alpha",
        ).chat,
        stored,
    )
    assert request.thinking
    body = ask(user("Deep question"), thinking={"type": "enabled"})
    status, headers, answer = post(handler, "/v1/messages", body, {"x-api-key": "ka"})
    assert status == 200 and headers["X-Promptcache-Tier"] == "exact"
    assert answer["content"] == [*THINKING, {"type": "text", "text": "Deep answer."}]
    status, _, text = post(handler, "/v1/messages", {**body, "stream": True}, {"x-api-key": "ka"})
    assert rebuild(events(text.encode()))["content"] == answer["content"]


def test_a_live_miss_with_reasoning_closes_its_text_before_the_thinking_blocks() -> None:
    def relay() -> Iterator[str]:
        yield "Done."
        return result(response="Done.", thinking=THINKING)  # type: ignore[return-value]

    live = ChatStream(tier=Tier.MISS, model="m", deltas=relay())
    stream = events(b"".join(anthropic_api.sse_body(live, message_id="msg_1")))
    opened: list[int] = []
    for name, event in stream:  # one block open at a time, each closed before the next
        if name == "content_block_start":
            assert not opened
            opened.append(event["index"])
        elif name == "content_block_stop":
            assert opened == [event["index"]]
            opened.clear()
    content = rebuild(stream)["content"]
    assert content == [{"type": "text", "text": "Done."}, *THINKING]
