"""The OpenAI request shape -> ChatRequest, and ChatResults / ChatStreams -> OpenAI objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from promptcache import CacheMode, ChatResult, Message, Settings, Tier, Usage
from promptcache._errors import PayloadTooLarge, Unprocessable, UpstreamError
from promptcache._stream import ChatStream, replay_pieces
from promptcache.http.openai_api import MAX_N, completion_object, parse_request, sse_body

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
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "'image_url' part",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "messages[0].content[0].text",
        ),
        ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        (
            {
                "messages": [
                    {"role": "tool", "content": "42", "tool_call_id": "c"},
                    {"role": "user", "content": "hi"},
                ]
            },
            "tool calling",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
                    {"role": "user", "content": "hi"},
                ]
            },
            "tool calls",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            },
            "last message",
        ),
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
        ({"stream": True, "stream_options": {"include_usage": 1}}, "'include_usage'"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "'tools'"),
        ({"tool_choice": "required"}, "'tool_choice'"),
        ({"response_format": {"type": "json_object"}}, "'response_format'"),
        ({"top_p": 0.5}, "'top_p'"),
        ({"stop": ["\n"]}, "'stop'"),
        ({"logprobs": True}, "'logprobs'"),
        ({"frequency_penalty": 0.3}, "'frequency_penalty'"),
        ({"logit_bias": {"1": 5}}, "'logit_bias'"),
        ({"modalities": ["text", "audio"]}, "'modalities'"),
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
    assert info.value.status == 422


def test_missing_messages() -> None:
    with pytest.raises(Unprocessable, match="'messages' is required"):
        parse_request({"model": "m"}, SETTINGS, "t")


def test_limits_apply_as_on_chat() -> None:
    too_many = [{"role": "user", "content": "x"}] * 5
    with pytest.raises(PayloadTooLarge):
        parse(messages=too_many)


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
