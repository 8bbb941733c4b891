"""LLM adapter for any OpenAI-compatible chat completions server (OpenAI, Ollama, vLLM, llama.cpp).

Configured with the OpenAI SDK's own variables: OPENAI_BASE_URL and OPENAI_API_KEY.

The request body (``chat_payload``) and the reading of an answer, whole (``completion_of``) or
streamed (``completion_stream``), are shared with the Workers AI adapter, which sends what its
native API cannot carry to Workers AI's OpenAI-compatible endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from .._errors import (
    UpstreamBadRequest,
    UpstreamError,
    UpstreamPayloadTooLarge,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from .._types import ChatRequest, Completion, ToolCall, Usage
from ._chat import chat_body
from ._http import retry_after

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or body)[:300]


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code == 429:
        raise UpstreamRateLimited(
            f"the LLM upstream is rate limiting: {_error_message(response)}",
            retry_after=retry_after(response),
        )
    if response.status_code in (408, 504):
        raise UpstreamTimeout(f"the LLM upstream timed out: {_error_message(response)}")
    if response.status_code in (401, 403):  # our credentials, not the client's request
        raise UpstreamError(
            f"the LLM upstream refused our credentials ({response.status_code}): "
            f"{_error_message(response)}; check OPENAI_API_KEY"
        )
    if response.status_code == 413:
        raise UpstreamPayloadTooLarge(f"the LLM upstream: {_error_message(response)}")
    if response.status_code in (400, 404, 422):  # e.g. an unknown model, too many tokens
        raise UpstreamBadRequest(
            f"the LLM upstream refused the request ({response.status_code}): "
            f"{_error_message(response)}"
        )
    if response.status_code >= 400:
        raise UpstreamError(
            f"the LLM upstream answered {response.status_code}: {_error_message(response)}"
        )


def _chunk(data: str) -> dict[str, Any]:
    """One streamed chat.completion.chunk; an error event or unreadable data -> UpstreamError."""
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise UpstreamError(f"the LLM upstream streamed unreadable data: {data[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise UpstreamError(f"the LLM upstream streamed unreadable data: {data[:200]!r}")
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        raise UpstreamError(f"the LLM upstream stream failed: {message}")
    return chunk


def _arguments(value: Any) -> str:
    """A call's arguments as JSON text: as sent when text, else (a server that answers them as
    an object) the object as JSON."""
    if value is None or isinstance(value, str):
        return value or ""
    return json.dumps(value, ensure_ascii=False)


def _tool_calls(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    """An answer's tool calls (and a legacy ``function_call``, kept as a call of that type)."""
    calls = [
        ToolCall(
            name=str(call["function"]["name"]),
            arguments=_arguments(call["function"].get("arguments")),
            id=str(call.get("id") or ""),
            type=str(call.get("type") or "function"),
        )
        for call in message.get("tool_calls") or ()
    ]
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls.append(
            ToolCall(str(legacy["name"]), _arguments(legacy.get("arguments")), "", "function_call")
        )
    return tuple(calls)


def _choice(choice: dict[str, Any], model: str) -> Completion:
    """One choice of a chat.completion: its text (empty when it holds only tool calls), tool
    calls and finish reason."""
    message = choice["message"]
    text = message.get("content")
    calls = _tool_calls(message)
    if text is None and calls:
        text = ""
    if not isinstance(text, str):
        raise TypeError("message.content is not a string")
    finish = str(choice.get("finish_reason") or "stop")
    return Completion(text=text, model=model, finish_reason=finish, tool_calls=calls)


def _gather(calls: dict[int, dict[str, str]], delta: dict[str, Any]) -> None:
    """Add a streamed delta's tool-call fragments to ``calls`` (by index): the id, type and name
    come once, the arguments in pieces."""
    pieces = list(delta.get("tool_calls") or ())
    legacy = delta.get("function_call")
    if isinstance(legacy, dict):
        pieces.append({"index": -1, "type": "function_call", "function": legacy})
    for piece in pieces:
        index = int(piece.get("index", 0))
        call = calls.setdefault(index, {"id": "", "type": "function", "name": "", "arguments": ""})
        if piece.get("id"):
            call["id"] = str(piece["id"])
        if piece.get("type"):
            call["type"] = str(piece["type"])
        function = piece.get("function") or {}
        if function.get("name"):
            call["name"] += str(function["name"])
        if function.get("arguments"):
            call["arguments"] += _arguments(function["arguments"])


def chat_payload(request: ChatRequest, model: str, *, stream: bool = False) -> dict[str, Any]:
    """The request as sent: the conversation, every field the client set (keyed or not), and
    the output limit under the name the client used (``max_completion_tokens`` is the only one
    reasoning models take)."""
    body: dict[str, Any] = {"model": model, **chat_body(request, stream=stream)}
    body.update(request.forward)
    body.update(request.options)
    if "max_completion_tokens" in body:
        body.pop("max_tokens", None)
    return body


def completion_of(
    response: httpx.Response, model: str, who: str = "the LLM upstream"
) -> Completion:
    """A ``chat.completion`` answer: its first choice, the others as ``alternatives``, and the
    usage; anything unreadable is an UpstreamError naming ``who``."""
    try:
        body = response.json()
        model = str(body.get("model") or model)
        choices = sorted(body["choices"], key=lambda c: int(c.get("index") or 0))
        first, *others = [_choice(c, model) for c in choices]
        usage = body.get("usage") or {}
        return replace(
            first,
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            alternatives=tuple(others),
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise UpstreamError(f"{who} sent an unreadable answer: {exc}") from exc


def completion_stream(
    response: httpx.Response, model: str, who: str = "the LLM upstream"
) -> Generator[str, None, Completion]:
    """The text deltas of an open ``chat.completion.chunk`` stream, then (``StopIteration.value``)
    a Completion with empty text, the model, the usage (zero when not reported), the finish
    reason and the tool calls, joined from their fragments. The stream is complete at
    ``data: [DONE]``, or at a clean end after a finish reason; one that breaks, ends before that,
    or carries an error event raises UpstreamError (UpstreamTimeout for a read timeout)."""
    usage, finish = Usage(), ""
    calls: dict[int, dict[str, str]] = {}
    done = False
    try:
        for event in EventSource(response).iter_sse():
            if event.data.strip() == "[DONE]":
                done = True
                break
            chunk = _chunk(event.data)
            model = str(chunk.get("model") or model)
            reported = chunk.get("usage")
            if isinstance(reported, dict):
                usage = Usage(
                    int(reported.get("prompt_tokens") or 0),
                    int(reported.get("completion_tokens") or 0),
                )
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
                delta = choice.get("delta") or {}
                _gather(calls, delta)
                content = delta.get("content")
                if isinstance(content, str) and content:
                    yield content
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"{who} timed out while streaming: {exc}") from exc
    except (httpx.HTTPError, SSEError) as exc:
        raise UpstreamError(f"{who} stream broke: {exc}") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise UpstreamError(f"{who} streamed an unreadable chunk: {exc}") from exc
    if not done and not finish:
        raise UpstreamError(f"{who} stream ended before the answer was complete")
    tool_calls = tuple(
        ToolCall(c["name"], c["arguments"], c["id"], c["type"]) for _, c in sorted(calls.items())
    )
    return Completion(
        text="", model=model, usage=usage, finish_reason=finish or "stop", tool_calls=tool_calls
    )


class OpenAICompatibleLLM:
    #: ``n`` is sent as it is: the server answers n choices in one call (``ChoicesLLM``)
    takes_n = True

    def __init__(self, client: httpx.Client, *, base_url: str = "", api_key: str = "") -> None:
        self._client = client
        self._url = (base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @property
    def name(self) -> str:
        return f"openai-compatible ({self._url.rsplit('/chat/completions', 1)[0]})"

    def payload(self, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        """The request as sent (``chat_payload``)."""
        return chat_payload(request, request.model, stream=stream)

    def generate(self, request: ChatRequest) -> Completion:
        try:
            response = self._client.post(
                self._url, json=self.payload(request), headers=self._headers
            )
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"the LLM upstream timed out: {exc}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the LLM upstream is unreachable: {exc}") from exc
        _raise_for_status(response)
        return completion_of(response, request.model)

    def stream(self, request: ChatRequest) -> Generator[str, None, Completion]:
        """The answer's text deltas as the upstream streams them (server-sent events).

        Returns (``StopIteration.value``) a Completion with the model, the usage (requested with
        ``stream_options.include_usage``; zero when the server does not report it), the finish
        reason and the tool calls; its text is empty, the deltas are the text
        (``completion_stream``). Closing the generator early closes the upstream connection.
        """
        payload = self.payload(request, stream=True)
        payload["stream_options"] = {"include_usage": True}
        try:
            with self._client.stream(
                "POST", self._url, json=payload, headers=self._headers
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response)
                return (yield from completion_stream(response, request.model))
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"the LLM upstream timed out while streaming: {exc}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the LLM upstream stream broke: {exc}") from exc
