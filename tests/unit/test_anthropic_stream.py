"""AnthropicLLM.stream: Claude's named server-sent events (message_start, content_block_*,
message_delta, message_stop, ping, error), faked at the transport (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from promptcache import ChatRequest, Completion, Message, UpstreamError, UpstreamRateLimited
from promptcache._types import ToolCall
from promptcache.adapters._http import RetryPolicy
from promptcache.adapters.anthropic import AnthropicLLM

REQ = ChatRequest(messages=(Message("user", "hi"),), model="claude-test", max_tokens=50)


def event(name: str, **data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def start() -> bytes:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-1",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 12, "output_tokens": 1},
    }
    return event("message_start", message=message)


def block(index: int, content: dict[str, Any], *deltas: dict[str, Any]) -> list[bytes]:
    return [
        event("content_block_start", index=index, content_block=content),
        *(event("content_block_delta", index=index, delta=d) for d in deltas),
        event("content_block_stop", index=index),
    ]


def end(reason: str = "end_turn", output: int = 9, sequence: str | None = None) -> list[bytes]:
    delta = {"stop_reason": reason, "stop_sequence": sequence}
    return [
        event("message_delta", delta=delta, usage={"output_tokens": output}),
        event("message_stop"),
    ]


class Body(httpx.SyncByteStream):
    def __init__(self, pieces: list[bytes], error: Exception | None = None) -> None:
        self.pieces, self.error, self.closed = pieces, error, False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed = True


def streaming(pieces: list[bytes], error: Exception | None = None) -> tuple[AnthropicLLM, Body]:
    stream = Body(pieces, error)
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=stream)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    model = AnthropicLLM(client, api_key="k", base_url="http://claude.test")
    model.sent = sent  # type: ignore[attr-defined]
    return model, stream


def run(model: AnthropicLLM) -> tuple[list[str], Completion]:
    deltas: list[str] = []
    generator = model.stream(REQ)
    while True:
        try:
            deltas.append(next(generator))
        except StopIteration as stop:
            return deltas, stop.value


def test_text_deltas_stream_and_the_completion_carries_usage_and_finish() -> None:
    text = block(
        0,
        {"type": "text", "text": ""},
        {"type": "text_delta", "text": "Hello"},
        {"type": "text_delta", "text": " there."},
    )
    model, body = streaming([start(), event("ping"), *text, *end("max_tokens", 9)])
    deltas, done = run(model)
    assert deltas == ["Hello", " there."]
    assert (done.text, done.model, done.finish_reason) == ("", "claude-test-1", "length")
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (12, 9)
    assert model.sent[0]["stream"] is True and body.closed  # type: ignore[attr-defined]


def test_the_stop_sequence_of_a_stream_is_kept() -> None:
    text = block(0, {"type": "text", "text": ""}, {"type": "text_delta", "text": "1, 2, 3"})
    model, _ = streaming([start(), *text, *end("stop_sequence", 5, sequence="4")])
    _, done = run(model)
    assert done.finish_reason == "stop" and done.stop_sequence == "4"


def test_tool_use_and_thinking_blocks_are_put_back_together() -> None:
    pieces = [
        start(),
        *block(
            0,
            {"type": "thinking", "thinking": ""},
            {"type": "thinking_delta", "thinking": "Let me "},
            {"type": "thinking_delta", "thinking": "check."},
            {"type": "signature_delta", "signature": "EqQBCgIYAh=="},
        ),
        *block(1, {"type": "redacted_thinking", "data": "EmwKAhgB"}),
        *block(2, {"type": "text", "text": ""}, {"type": "text_delta", "text": "Checking."}),
        *block(
            3,
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
            {"type": "input_json_delta", "partial_json": ""},
            {"type": "input_json_delta", "partial_json": '{"city": "Pa'},
            {"type": "input_json_delta", "partial_json": 'ris"}'},
        ),
        *block(4, {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}),
        *end("tool_use"),
    ]
    deltas, done = run(streaming(pieces)[0])
    assert deltas == ["Checking."] and done.finish_reason == "tool_calls"
    assert done.tool_calls == (
        ToolCall("weather", '{"city": "Paris"}', "toolu_1"),
        ToolCall("now", "{}", "toolu_2"),
    )
    assert done.thinking == (
        {"type": "thinking", "thinking": "Let me check.", "signature": "EqQBCgIYAh=="},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
    )


def test_an_error_event_is_an_upstream_error() -> None:
    text = block(0, {"type": "text", "text": ""}, {"type": "text_delta", "text": "Hel"})
    overloaded = event("error", error={"type": "overloaded_error", "message": "Overloaded"})
    model, body = streaming([start(), *text, overloaded])
    with pytest.raises(UpstreamError, match="overloaded_error"):
        run(model)
    assert body.closed


def test_a_stream_ending_before_message_stop_is_an_upstream_error() -> None:
    text = block(0, {"type": "text", "text": ""}, {"type": "text_delta", "text": "Hel"})
    with pytest.raises(UpstreamError, match="message_stop"):
        run(streaming([start(), *text])[0])


def test_a_broken_connection_is_an_upstream_error() -> None:
    text = block(0, {"type": "text", "text": ""}, {"type": "text_delta", "text": "Hel"})
    model, _ = streaming([start(), *text], error=httpx.ReadError("reset"))
    with pytest.raises(UpstreamError, match="broke"):
        run(model)


def test_unreadable_events_are_an_upstream_error() -> None:
    bad = [
        [start(), b"event: content_block_delta\ndata: {not json\n\n"],
        [start(), event("content_block_delta", index=3, delta={"type": "text_delta", "text": "x"})],
        [
            start(),
            *block(
                0,
                {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                {"type": "input_json_delta", "partial_json": '{"a": '},
            ),
            *end("tool_use"),
        ],
    ]
    for pieces in bad:
        with pytest.raises(UpstreamError, match="unreadable"):
            run(streaming(pieces)[0])


def test_closing_early_closes_the_connection() -> None:
    text = block(
        0,
        {"type": "text", "text": ""},
        {"type": "text_delta", "text": "one"},
        {"type": "text_delta", "text": "two"},
    )
    model, body = streaming([start(), *text, *end()])
    generator = model.stream(REQ)
    assert next(generator) == "one"
    generator.close()
    assert body.closed


def test_an_error_status_before_the_stream_is_mapped() -> None:
    payload = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json=payload, headers={"retry-after": "3"})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    model = AnthropicLLM(client, api_key="k", policy=RetryPolicy(attempts=1))
    with pytest.raises(UpstreamRateLimited) as caught:
        next(model.stream(REQ))
    assert caught.value.retry_after == 3
