"""OpenAICompatibleLLM.stream: server-sent events from an OpenAI-compatible server, faked at the
transport (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from promptcache import (
    ChatRequest,
    Completion,
    Message,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from promptcache.adapters.openai_compat import OpenAICompatibleLLM

REQ = ChatRequest(messages=(Message("user", "hi"),), model="m", max_tokens=5)


def sse(*events: Any) -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        out += f"data: {data}\n\n".encode()
    return out


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "model": "m-2024",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


class Body(httpx.SyncByteStream):
    """A response body sent in pieces, optionally breaking after them; records being closed."""

    def __init__(self, pieces: list[bytes], error: Exception | None = None) -> None:
        self.pieces = pieces
        self.error = error
        self.closed = False
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.pieces:
            self.sent += 1
            yield piece
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed = True


def llm(handler) -> OpenAICompatibleLLM:  # type: ignore[no-untyped-def]
    return OpenAICompatibleLLM(
        httpx.Client(transport=httpx.MockTransport(handler)), base_url="http://up/v1", api_key="k"
    )


def streaming(body: Body, status: int = 200, seen: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen["body"] = json.loads(request.content)
            seen["auth"] = request.headers.get("authorization")
        return httpx.Response(status, headers={"content-type": "text/event-stream"}, stream=body)

    return handler


def drain(gen: Iterator[str]) -> tuple[list[str], Any]:
    deltas: list[str] = []
    while True:
        try:
            deltas.append(next(gen))
        except StopIteration as stop:
            return deltas, stop.value


def test_deltas_then_the_completion() -> None:
    seen: dict[str, Any] = {}
    body = Body(
        [
            sse(
                {
                    "model": "m-2024",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
                }
            ),
            sse(chunk("Hel"), chunk("lo")),
            sse(chunk(None, "length")),
            sse(
                {
                    "model": "m-2024",
                    "choices": [],
                    "usage": {"prompt_tokens": 2, "completion_tokens": 3},
                },
                "[DONE]",
            ),
        ]
    )
    deltas, done = drain(llm(streaming(body, seen=seen)).stream(REQ))
    assert deltas == ["Hel", "lo"]  # empty deltas are not passed on
    assert isinstance(done, Completion)
    assert (done.model, done.usage.total_tokens, done.finish_reason) == ("m-2024", 5, "length")
    assert seen["body"]["stream"] is True and seen["body"]["stream_options"] == {
        "include_usage": True
    }
    assert seen["body"]["max_tokens"] == 5 and seen["auth"] == "Bearer k"
    assert body.closed


def test_a_clean_end_after_a_finish_reason_is_complete_without_done() -> None:
    deltas, done = drain(llm(streaming(Body([sse(chunk("ok"), chunk(None, "stop"))]))).stream(REQ))
    assert deltas == ["ok"] and done.finish_reason == "stop" and done.usage.total_tokens == 0


def test_other_choices_are_ignored() -> None:
    other = {"choices": [{"index": 1, "delta": {"content": "nope"}, "finish_reason": None}]}
    deltas, _ = drain(llm(streaming(Body([sse(other, chunk("yes"), "[DONE]")]))).stream(REQ))
    assert deltas == ["yes"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (Body([sse(chunk("half"))]), "ended before the answer was complete"),
        (
            Body([sse(chunk("half"))], httpx.RemoteProtocolError("incomplete chunked read")),
            "stream broke",
        ),
        (Body([sse(chunk("half"))], httpx.ReadTimeout("slow")), "timed out"),
        (Body([sse(chunk("half"), {"error": {"message": "overloaded"}})]), "overloaded"),
        (Body([sse(chunk("half"), "{not json")]), "unreadable"),
        (Body([sse(chunk("half"), {"choices": [{"index": 0, "delta": "x"}]})]), "unreadable"),
    ],
)
def test_a_broken_stream_raises_after_its_deltas(body: Body, message: str) -> None:
    gen = llm(streaming(body)).stream(REQ)
    assert next(gen) == "half"
    with pytest.raises(UpstreamError, match=message):
        next(gen)
    assert body.closed


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, UpstreamRateLimited),
        (504, UpstreamTimeout),
        (500, UpstreamError),
        (404, UpstreamError),
    ],
)
def test_error_statuses_raise_before_any_delta(status: int, error: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"message": "nope"}})

    with pytest.raises(error, match="nope"):
        next(llm(handler).stream(REQ))


def test_not_an_event_stream() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": []})

    with pytest.raises(UpstreamError, match="stream broke"):
        next(llm(handler).stream(REQ))


def test_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(UpstreamError, match="refused"):
        next(llm(handler).stream(REQ))


def test_closing_early_closes_the_connection() -> None:
    body = Body([sse(chunk("a")), sse(chunk("b")), sse(chunk("c"), "[DONE]")])
    gen = llm(streaming(body)).stream(REQ)
    assert next(gen) == "a"
    gen.close()
    assert body.closed and body.sent == 1
