"""The OpenAI request shape -> ChatRequest, and ChatResults / ChatStreams -> OpenAI objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from promptcache import CacheMode, ChatResult, Message, Settings, Tier, Usage
from promptcache._errors import Unprocessable, UpstreamError
from promptcache._keys import UNKEYED
from promptcache._stream import ChatStream, replay_pieces
from promptcache._types import BYPASS_REASONS, ToolCall
from promptcache.http.openai_api import MAX_N, completion_object, parse_request, sse_body
from promptcache.http.wire import ERROR_SHAPES, error_response
from promptcache.routes import NATIVE, OPENAI

SETTINGS = Settings.from_env(
    {"PROMPTCACHE_MODEL": "default-model", "PROMPTCACHE_MAX_MESSAGES": "4"}
)


def parse(**body: Any):  # type: ignore[no-untyped-def]
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return parse_request(body, SETTINGS, "acme")


def test_minimal_request_takes_the_defaults() -> None:
    req = parse()
    assert req.chat.messages == (Message("user", "hi"),)
    assert req.chat.model == "default-model" and req.chat.tenant == "acme"
    assert (req.n, req.stream, req.include_usage) == (1, False, False)
    assert req.chat.cache is CacheMode.USE and req.chat.temperature is None


def test_full_request() -> None:
    req = parse(
        model=" gpt-x ",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Part one."},
                    {"type": "text", "text": "Part two."},
                ],
            },
            {"role": "assistant", "content": "ok", "name": "bot"},
            {"role": "user", "content": "and now?"},
        ],
        temperature=0.7,
        max_completion_tokens=64,
        stream=True,
        stream_options={"include_usage": True},
        user="u-1",
        seed=3,
        metadata={"a": "b"},
        top_p=1,
        presence_penalty=0,
        tool_choice="none",
        response_format={"type": "text"},
        some_future_field={"x": 1},
        promptcache={"cache": "refresh", "threshold": 0.95, "ttl": 60},
    )
    chat = req.chat
    assert chat.model == "gpt-x" and chat.temperature == 0.7 and chat.max_tokens == 64
    assert chat.messages[0] == Message("system", "Be brief.")  # developer is the system role
    assert chat.messages[1] == Message("user", "Part one.\nPart two.")
    assert chat.messages[2] == Message("assistant", "ok", name="bot")
    assert chat.options["seed"] == 3 and chat.options["some_future_field"] == {"x": 1}
    assert chat.forward == {"user": "u-1", "metadata": {"a": "b"}, "max_completion_tokens": 64}
    assert chat.prompt == "and now?" and len(chat.context) == 3
    assert req.stream and req.include_usage
    assert chat.cache is CacheMode.REFRESH and chat.threshold == 0.95 and chat.ttl == 60


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": None}, "'messages'"),
        ({"messages": []}, "'messages'"),
        ({"messages": "hi"}, "'messages'"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "messages[0].content[0].text",
        ),
        ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "'type'"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "tool", "content": 4, "tool_call_id": "c"}]}, "content"),
        ({"messages": [{"role": "function", "content": "42"}]}, "messages[0].name"),
        (
            {
                "messages": [
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
                    {"role": "user", "content": "hi"},
                ]
            },
            "messages[0].tool_calls[0]",
        ),
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": {"id": "c"}}]},
            "messages[0].tool_calls",
        ),
        ({"messages": [{"role": "assistant", "content": None}]}, "messages[0].content"),
        (
            {"messages": [{"role": "assistant", "content": None, "function_call": "f"}]},
            "function_call",
        ),
        ({"messages": [{"role": "user", "content": "hi", "name": 3}]}, "messages[0].name"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"model": 5}, "'model'"),
        ({"model": " "}, "'model'"),
        ({"temperature": "hot"}, "'temperature'"),
        ({"temperature": 2.5}, "'temperature'"),
        ({"max_tokens": 0}, "'max_tokens'"),
        ({"max_tokens": True}, "'max_tokens'"),
        ({"max_completion_tokens": 1.5}, "'max_completion_tokens'"),
        ({"max_tokens": 10, "max_completion_tokens": 20}, "disagree"),
        ({"n": 0}, "'n'"),
        ({"n": "2"}, "'n'"),
        ({"n": MAX_N + 1}, "'n' is at most"),
        ({"stream": "yes"}, "'stream'"),
        ({"stream_options": {"include_usage": True}}, "only allowed with 'stream'"),
        ({"stream": True, "stream_options": ["x"]}, "'stream_options'"),
        ({"stream": True, "stream_options": {"include_usage": 1}}, "include_usage'"),
        ({"tools": {"type": "function"}}, "'tools'"),
        ({"tools": [{"type": "function", "function": {}}]}, "'tools[0].function.name'"),
        ({"tools": [{"function": {"name": "f"}}]}, "'tools[0].type'"),
        ({"functions": [{"description": "f"}]}, "'functions[0].name'"),
        ({"tool_choice": 3}, "'tool_choice'"),
        ({"parallel_tool_calls": "yes"}, "'parallel_tool_calls'"),
        ({"response_format": "json"}, "'response_format'"),
        ({"response_format": {"type": "yaml"}}, "'response_format.type'"),
        ({"response_format": {"type": "json_schema"}}, "'response_format.json_schema'"),
        ({"top_p": 1.5}, "'top_p'"),
        ({"top_p": True}, "'top_p'"),
        ({"stop": 3}, "'stop'"),
        ({"stop": ["a", 1]}, "'stop'"),
        ({"seed": 1.5}, "'seed'"),
        ({"seed": 2**64}, "'seed'"),
        ({"logprobs": "yes"}, "'logprobs'"),
        ({"top_logprobs": 21}, "'top_logprobs'"),
        ({"frequency_penalty": 3}, "'frequency_penalty'"),
        ({"presence_penalty": "x"}, "'presence_penalty'"),
        ({"logit_bias": [1]}, "'logit_bias'"),
        ({"logit_bias": {"1": 500}}, "'logit_bias.1'"),
        ({"modalities": "text"}, "'modalities'"),
        ({"reasoning_effort": 1}, "'reasoning_effort'"),
        ({"user": 1}, "'user'"),
        ({"metadata": "x"}, "'metadata'"),
        ({"store": "yes"}, "'store'"),
        ({"promptcache": {"semantic": "yes"}}, "'promptcache.semantic'"),
        ({"promptcache": "skip"}, "'promptcache'"),
        ({"promptcache": {"cache": "sometimes"}}, "promptcache.cache"),
        ({"promptcache": {"mode": "skip"}}, "unknown field(s) in 'promptcache': mode"),
        ({"promptcache": {"threshold": 2}}, "'threshold'"),
    ],
)
def test_bad_requests_name_the_problem(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(Unprocessable) as info:
        parse(**body)
    assert needle in info.value.message
    assert info.value.status == 422  # the faces of other APIs answer it as 400 (wire)
    # OpenAI's ``param``: every one of these names a field, and the message names it too
    param = info.value.param
    assert param and param.split(".")[-1].split("[")[0] in info.value.message, param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"top_p": 1.5}, "top_p"),
        ({"logit_bias": {"1": 500}}, "logit_bias.1"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "4"}]}, "messages[0].tool_call_id"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
        ),
        ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
        ({"promptcache": {"threshold": 2}}, "promptcache.threshold"),
        ({"promptcache": {"ttl": -1}}, "promptcache.ttl"),
        ({"promptcache": {"mode": "skip"}}, "promptcache.mode"),
        ({"max_tokens": 10, "max_completion_tokens": 20}, "max_completion_tokens"),
    ],
)
def test_errors_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(Unprocessable) as info:
        parse(**body)
    assert info.value.param == param


def test_missing_messages() -> None:
    with pytest.raises(Unprocessable, match="'messages' is required"):
        parse_request({"model": "m"}, SETTINGS, "t")


def test_over_the_limits_is_forwarded_uncached() -> None:
    too_many = [{"role": "user", "content": "x"}] * 5
    assert parse(messages=too_many).chat.bypass == "oversize"
    assert parse(messages=too_many[:4]).chat.bypass is None
    long = [{"role": "user", "content": "x" * (SETTINGS.max_prompt_chars + 1)}]
    assert parse(messages=long).chat.bypass == "oversize"
    assert (
        parse_request({"messages": too_many[:1]}, SETTINGS, "t", big=True).chat.bypass == "oversize"
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "x", "format": "wav"}}, "audio"),
        ({"n": 2}, "n"),
        ({"logprobs": False}, None),
        ({"modalities": ["text"]}, None),
    ],
)
def test_what_cannot_be_replayed_is_bypassed(body: dict[str, Any], reason: str | None) -> None:
    req = parse(**body)
    assert req.chat.bypass == reason
    assert reason is None or reason in BYPASS_REASONS


def test_every_field_is_forwarded_keyed_or_not() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    req = parse(
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": {}}},
        stop=["\n"],
        top_p=0.5,
        seed=7,
        frequency_penalty=0.3,
        presence_penalty=-0.2,
        logit_bias={"12": -100},
        reasoning_effort="low",
        verbosity="high",
        modalities=["text"],
        future_field={"x": [1]},
        user="u-1",
        metadata={"a": "b"},
        store=True,
        service_tier="flex",
        prompt_cache_key="k",
        safety_identifier="s",
        max_completion_tokens=50,
    )
    assert set(req.chat.options) == {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stop",
        "top_p",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "reasoning_effort",
        "verbosity",
        "modalities",
        "future_field",
    }
    assert req.chat.options["tools"] == tools and req.chat.options["future_field"] == {"x": [1]}
    assert dict(req.chat.forward) == {
        "user": "u-1",
        "metadata": {"a": "b"},
        "store": True,
        "service_tier": "flex",
        "prompt_cache_key": "k",
        "safety_identifier": "s",
        "max_completion_tokens": 50,
    }
    assert set(UNKEYED) <= set(req.chat.forward)
    assert req.chat.max_tokens == 50 and req.chat.bound and req.chat.bypass is None


def test_tool_turns_and_parts_are_parsed() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    req = parse(
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ]
    )
    user, assistant, tool = req.chat.messages
    assert user.content == "What is it?" and user.parts[1] == image and not user.plain
    assert assistant.tool_calls == (ToolCall("f", "{}", "c1"),) and assistant.content == ""
    assert assistant.as_dict()["content"] is None
    assert tool == Message("tool", "42", tool_call_id="c1")
    assert tool.as_dict() == {"role": "tool", "content": "42", "tool_call_id": "c1"}


def test_semantic_for_bound_requests_needs_the_setting_and_may_be_narrowed() -> None:
    assert parse().chat.semantic is False
    on = Settings.from_env({"PROMPTCACHE_SEMANTIC_TOOLS": "on"})
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert parse_request(body, on, "t").chat.semantic is True
    narrowed = {**body, "promptcache": {"semantic": False}}
    assert parse_request(narrowed, on, "t").chat.semantic is False
    widened = {**body, "promptcache": {"semantic": True}}
    assert parse_request(widened, SETTINGS, "t").chat.semantic is False


SOME_USAGE = Usage(3, 4)


def result(
    text: str, tier: Tier = Tier.MISS, usage: Usage = SOME_USAGE, finish: str = "stop"
) -> ChatResult:
    return ChatResult(
        response=text, tier=tier, model="m-1", usage=usage, latency_ms=1.0, finish_reason=finish
    )


def test_completion_object_has_openai_shape() -> None:
    body = completion_object(
        [result("a"), result("b", finish="length")], completion_id="chatcmpl-1", created=7
    )
    assert (
        body["object"] == "chat.completion" and body["id"] == "chatcmpl-1" and body["created"] == 7
    )
    assert body["model"] == "m-1"
    assert [c["message"]["content"] for c in body["choices"]] == ["a", "b"]
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 8, "total_tokens": 14}


def events(body: bytes) -> list[Any]:
    out: list[Any] = []
    for block in body.decode().split("\n\n"):
        if block:
            assert block.startswith("data: ")
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_sse_body_replays_a_hit_as_chunks() -> None:
    text = "A stored answer that is long enough to be cut into several chunks of text."
    stream = ChatStream.replay(result(text, Tier.EXACT, Usage(0, 0)))
    got = events(b"".join(sse_body([stream], completion_id="c", created=1, include_usage=True)))
    assert got[-1] == "[DONE]"
    chunks = got[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "c" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert len(content) > 2 and "".join(content) == text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["usage"] is None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 0


def test_sse_body_numbers_choices() -> None:
    streams = [ChatStream.replay(result("one")), ChatStream.replay(result("two"))]
    got = events(b"".join(sse_body(streams, completion_id="c", created=1)))
    by_index: dict[int, str] = {}
    for c in got[:-1]:
        choice = c["choices"][0]
        by_index[choice["index"]] = by_index.get(choice["index"], "") + (
            choice["delta"].get("content") or ""
        )
        assert "usage" not in c
    assert by_index == {0: "one", 1: "two"}


def broken() -> Iterator[str]:
    yield "partial "
    raise UpstreamError("the LLM upstream stream broke")


def test_a_broken_stream_ends_with_an_error_event_and_no_done() -> None:
    stream = ChatStream(tier=Tier.MISS, model="m", deltas=broken())
    got = events(b"".join(sse_body([stream], completion_id="c", created=1)))
    assert got[-1]["error"]["message"] == "the LLM upstream stream broke"
    assert (
        got[-1]["error"]["type"] == "server_error" and got[-1]["error"]["code"] == "upstream_error"
    )
    assert "[DONE]" not in got


def test_a_broken_stream_raises_when_buffered() -> None:
    stream = ChatStream(tier=Tier.MISS, model="m", deltas=broken())
    with pytest.raises(UpstreamError):
        b"".join(sse_body([stream], completion_id="c", created=1, errors_as_events=False))


def test_closing_the_body_closes_the_stream() -> None:
    closed = []

    def deltas() -> Iterator[str]:
        try:
            yield "a"
            yield "b"
        finally:
            closed.append(True)

    body = sse_body(
        [ChatStream(tier=Tier.MISS, model="m", deltas=deltas())], completion_id="c", created=1
    )
    next(body), next(body)
    body.close()  # type: ignore[attr-defined]
    assert closed == [True]


@pytest.mark.parametrize("text", ["", "one", "  leading", "a  b\n\nc ", "x" * 100, "word " * 40])
def test_replay_pieces_lose_nothing(text: str) -> None:
    pieces = replay_pieces(text)
    assert "".join(pieces) == text
    assert all(pieces)


def tool_result(*calls: ToolCall, text: str = "") -> ChatResult:
    return ChatResult(
        response=text,
        tier=Tier.EXACT,
        model="m-1",
        usage=Usage(0, 0),
        latency_ms=1.0,
        finish_reason="tool_calls",
        tool_calls=calls,
    )


def test_a_replayed_tool_call_gets_a_fresh_id_each_time() -> None:
    stored = tool_result(ToolCall("f", '{"a":1}'), ToolCall("g", "{}"))
    first = completion_object([stored], completion_id="c", created=1)["choices"][0]
    second = completion_object([stored], completion_id="c", created=1)["choices"][0]
    message = first["message"]
    assert message["content"] is None and first["finish_reason"] == "tool_calls"
    assert [(c["type"], c["function"]) for c in message["tool_calls"]] == [
        ("function", {"name": "f", "arguments": '{"a":1}'}),
        ("function", {"name": "g", "arguments": "{}"}),
    ]
    ids = [c["id"] for c in message["tool_calls"]] + [
        c["id"] for c in second["message"]["tool_calls"]
    ]
    assert len(set(ids)) == 4 and all(i.startswith("call_") for i in ids)
    upstream = tool_result(ToolCall("f", "{}", "call_model"), text="Let me check.")
    message = completion_object([upstream], completion_id="c", created=1)["choices"][0]["message"]
    assert message["content"] == "Let me check." and message["tool_calls"][0]["id"] == "call_model"


def test_streamed_tool_calls_go_out_as_indexed_pieces() -> None:
    args = json.dumps({"city": "Paris", "days": list(range(40))})
    stream = ChatStream.replay(tool_result(ToolCall("f", args), ToolCall("g", "{}")))
    chunks = events(b"".join(sse_body([stream], completion_id="c", created=1)))
    assert chunks[-1] == "[DONE]" and chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    pieces = [
        call for c in chunks[:-1] for call in c["choices"][0]["delta"].get("tool_calls") or ()
    ]
    heads = [p for p in pieces if "id" in p]
    assert [(h["index"], h["function"]["name"]) for h in heads] == [(0, "f"), (1, "g")]
    joined = "".join(p["function"]["arguments"] for p in pieces if p["index"] == 0)
    assert joined == args and sum(p["index"] == 0 for p in pieces) > 2  # in fragments


def test_a_wrong_field_is_a_400_on_every_face_but_the_native_one() -> None:
    """OpenAI (and Anthropic) answer 400 for a field of the wrong type or value, and their SDKs
    raise ``BadRequestError`` for it; the native face keeps its documented 422."""
    wrong = Unprocessable("'top_p' must be a number between 0 and 1", param="top_p")
    for face in ERROR_SHAPES:
        response = error_response(wrong, face)
        assert response.status_code == (422 if face == NATIVE else 400), face
    openai_body = json.loads(error_response(wrong, OPENAI).body or "")
    assert openai_body == {
        "error": {
            "code": "unprocessable",
            "message": "'top_p' must be a number between 0 and 1",
            "type": "invalid_request_error",
            "param": "top_p",
        }
    }
    native_body = json.loads(error_response(wrong, NATIVE).body or "")
    assert native_body == {"error": {"code": "unprocessable", "message": wrong.message}}
    # other errors keep their status on every face, with a null ``param``
    upstream = UpstreamError("the model is down")
    assert error_response(upstream, OPENAI).status_code == 502
    assert json.loads(error_response(upstream, OPENAI).body or "")["error"]["param"] is None
