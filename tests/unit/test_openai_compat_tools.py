"""OpenAICompatibleLLM with tools: every field sent out, tool calls read back (plain and
streamed), faked at the transport (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import httpx
import pytest

from promptcache import ChatRequest, Completion, Message, UpstreamError
from promptcache._types import ToolCall
from promptcache.adapters.openai_compat import OpenAICompatibleLLM

TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
REQ = ChatRequest(
    messages=(
        Message("user", "Weather in Paris and Rome?"),
        Message("assistant", "", tool_calls=(ToolCall("weather", '{"city":"Paris"}', "c1"),)),
        Message("tool", "12C", tool_call_id="c1"),
    ),
    model="m",
    max_tokens=50,
    options={"tools": TOOLS, "seed": 3, "stop": ["\n\n"], "future": 1},
    forward={"user": "u-1", "max_completion_tokens": 50},
)


def llm(handler: Any) -> tuple[OpenAICompatibleLLM, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return handler(request)  # type: ignore[no-any-return]

    client = httpx.Client(transport=httpx.MockTransport(record))
    return OpenAICompatibleLLM(client, base_url="http://up/v1"), sent


def answer(message: dict[str, Any], finish: str = "tool_calls") -> httpx.Response:
    body = {"model": "m", "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    return httpx.Response(200, json=body)


CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"a":1}'}},
    {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
]


def test_every_field_goes_out_and_tool_calls_come_back() -> None:
    model, sent = llm(lambda r: answer({"role": "assistant", "content": None, "tool_calls": CALLS}))
    done = model.generate(REQ)
    body = sent[0]
    assert body["tools"] == TOOLS and body["seed"] == 3 and body["stop"] == ["\n\n"]
    assert body["future"] == 1 and body["user"] == "u-1"
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert body["messages"][2] == {"role": "tool", "content": "12C", "tool_call_id": "c1"}
    assert done.text == "" and done.finish_reason == "tool_calls"
    assert done.tool_calls == (
        ToolCall("weather", '{"a":1}', "call_1"),
        ToolCall("weather", "{}", "call_2"),
    )


def test_a_legacy_function_call_comes_back_as_a_call_of_its_type() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "f", "arguments": "{}"},
    }
    model, _ = llm(lambda r: answer(message, "function_call"))
    assert model.generate(REQ).tool_calls == (ToolCall("f", "{}", "", "function_call"),)


def sse(*chunks: dict[str, Any]) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )


def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"model": "m", "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


def drain(gen: Generator[str, None, Completion]) -> tuple[list[str], Completion]:
    out: list[str] = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration as stop:
            return out, stop.value


def test_streamed_tool_call_fragments_are_joined() -> None:
    body = sse(
        delta({"role": "assistant", "content": None}),
        delta({"content": "Checking."}),
        delta(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": ""},
                    }
                ]
            }
        ),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        delta(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "time", "arguments": "{}"},
                    }
                ]
            }
        ),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]}),
        delta({}, "tool_calls"),
    )
    model, sent = llm(
        lambda r: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    texts, done = drain(model.stream(REQ))
    assert sent[0]["stream"] is True and sent[0]["tools"] == TOOLS
    assert texts == ["Checking."] and done.finish_reason == "tool_calls"
    assert done.tool_calls == (
        ToolCall("weather", '{"city":"Paris"}', "call_1"),
        ToolCall("time", "{}", "call_2"),
    )


def test_n_choices_come_back_as_alternatives() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        choices = [
            {
                "index": 1,
                "message": {"role": "assistant", "content": "b"},
                "finish_reason": "length",
            },
            {"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "stop"},
        ]
        usage = {"prompt_tokens": 3, "completion_tokens": 4}
        return httpx.Response(200, json={"model": "m", "choices": choices, "usage": usage})

    model, sent = llm(handler)
    request = ChatRequest(messages=(Message("user", "hi"),), model="m", forward={"n": 2})
    done = model.generate(request)
    assert sent[0]["n"] == 2 and model.takes_n
    assert (done.text, done.finish_reason, done.usage.total_tokens) == ("a", "stop", 7)
    assert [(c.text, c.finish_reason) for c in done.alternatives] == [("b", "length")]


def test_an_answer_without_choices_is_an_upstream_error() -> None:
    model, _ = llm(lambda r: httpx.Response(200, json={"model": "m", "choices": []}))
    with pytest.raises(UpstreamError, match="unreadable"):
        model.generate(REQ)
