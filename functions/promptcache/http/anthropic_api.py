"""The Anthropic face of the cache: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Parses Anthropic's Messages request into a ``ChatRequest`` (``anthropic_request``: what is
translated, keyed, forwarded and refused) and shapes the answer as Anthropic's ``message`` object
or as the Messages event stream. The cache path is the one every face takes: ``PromptCache.chat``
(or ``chat_stream`` for ``stream: true``), so an entry is shared with ``/v1/chat/completions``
when the internal request is the same.

The answer (docs/anthropic-messages.md):

- ``content``: the model's ``thinking`` blocks exactly as stored, then its text (no empty text
  block when it calls tools), then one ``tool_use`` block per call: the model's id on a miss, a
  fresh ``toolu_`` id on every replay, ``input`` the parsed arguments. Arguments that are not a
  JSON object (the Messages API carries only objects) are an ``api_error`` (502), never rewritten;
  empty arguments are ``{}``.
- ``stop_reason``: ``stop`` -> ``end_turn`` (``stop_sequence`` when the upstream named the
  sequence that ended it, as Claude does; stored with the answer and replayed), ``length`` ->
  ``max_tokens``, ``tool_calls`` -> ``tool_use``, ``content_filter`` -> ``refusal``.
  ``stop_sequence``: that sequence, else null (an OpenAI-compatible server does not say which).
- Streamed, a live miss sends the model's text deltas as they arrive; tool calls (as
  ``input_json_delta`` fragments) and any thinking come with the final result. A request with
  ``thinking`` on is answered from the finished answer, so that its thinking blocks come first.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from .._errors import BadRequest, PromptCacheError, Unprocessable, UpstreamError
from .._protocols import token_counter, upstream_for
from .._stream import ChatStream, replay_pieces
from .._types import ChatResult, ToolCall
from .anthropic_request import MessagesRequest, parse_request
from .intake import read_body
from .service import Service
from .sse import errors_as_events, named_event, stream_response
from .wire import (
    admit_chat,
    anthropic_error,
    check_threshold,
    json_response,
)

log = logging.getLogger("promptcache")

#: The internal finish reason (OpenAI's words) -> Anthropic's ``stop_reason``.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# ---------------------------------------------------------------- shaping
def _stop_reason(result: ChatResult) -> str:
    if result.tool_calls and result.finish_reason == "stop":
        return "tool_use"
    if result.finish_reason == "stop" and result.stop_sequence is not None:
        return "stop_sequence"
    return STOP_REASONS.get(result.finish_reason, "end_turn")


def tool_input(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as the ``input`` object; empty arguments are ``{}``. Raises
    UpstreamError (502) when they are not a JSON object."""
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise UpstreamError(
            f"the model's arguments for tool '{call.name}' are not a JSON object; the Messages "
            "API carries tool input as an object only (/v1/chat/completions returns them as "
            "they are)"
        )
    return value


def _tool_id(call: ToolCall) -> str:
    """The model's id on a miss, a fresh one on a replay (a stored call has none)."""
    return call.id or f"toolu_{uuid.uuid4().hex[:24]}"


def _usage(result: ChatResult) -> dict[str, int]:
    return {
        "input_tokens": result.usage.prompt_tokens,
        "output_tokens": result.usage.completion_tokens,
    }


def _tool_blocks(result: ChatResult) -> list[dict[str, Any]]:
    return [
        {"type": "tool_use", "id": _tool_id(c), "name": c.name, "input": tool_input(c)}
        for c in result.tool_calls
    ]


def message_object(result: ChatResult, *, message_id: str) -> dict[str, Any]:
    """Anthropic's ``message`` object of one answer."""
    content: list[dict[str, Any]] = [dict(block) for block in result.thinking]
    tools = _tool_blocks(result)
    if result.response or not tools:
        content.append({"type": "text", "text": result.response})
    content.extend(tools)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": result.model,
        "content": content,
        "stop_reason": _stop_reason(result),
        "stop_sequence": result.stop_sequence,
        "usage": _usage(result),
    }


def _thinking_events(index: int, block: Mapping[str, Any]) -> Iterator[bytes]:
    """One stored reasoning block as Anthropic streams it: a ``thinking`` block opened empty,
    its text as ``thinking_delta``s and its signature as a ``signature_delta``; any other
    (``redacted_thinking``) opened whole."""
    if block.get("type") == "thinking" and isinstance(block.get("thinking"), str):
        start: dict[str, Any] = {k: v for k, v in block.items() if k != "signature"}
        start["thinking"] = ""
        yield _start(index, start)
        for piece in replay_pieces(block["thinking"], size=64):
            yield _delta(index, {"type": "thinking_delta", "thinking": piece})
        if isinstance(block.get("signature"), str):
            yield _delta(index, {"type": "signature_delta", "signature": block["signature"]})
    else:
        yield _start(index, dict(block))
    yield _stop(index)


def _start(index: int, block: dict[str, Any]) -> bytes:
    payload = {"type": "content_block_start", "index": index, "content_block": block}
    return named_event("content_block_start", payload)


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    payload = {"type": "content_block_delta", "index": index, "delta": delta}
    return named_event("content_block_delta", payload)


def _stop(index: int) -> bytes:
    return named_event("content_block_stop", {"type": "content_block_stop", "index": index})


def sse_body(
    stream: ChatStream, *, message_id: str, errors_as_events: bool = True, size: int = 64
) -> Iterator[bytes]:
    """The Messages event stream of one answer: ``message_start``, its content blocks in order
    (thinking, text, tool_use), ``message_delta`` (stop reason, usage), ``message_stop``.

    A replay (a hit, or an answer finished before the stream began) knows its thinking blocks
    first; a live miss learns them, and its tool calls, at the end. A failure in the middle:
    with ``errors_as_events`` (the 200 is out) an ``error`` event ends the body; without, the
    exception propagates (a buffered body can still become an HTTP error). The stream is closed
    in the end, which cancels (and stores nothing for) a miss that did not finish."""
    try:
        known = stream.result
        start: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": stream.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": known.usage.prompt_tokens if known else 0,
                "output_tokens": 0,
            },
        }
        yield named_event("message_start", {"type": "message_start", "message": start})
        index = 0
        if known is not None:
            for block in known.thinking:
                yield from _thinking_events(index, block)
                index += 1
        text_at: int | None = None
        for delta in stream:
            if text_at is None:
                text_at, index = index, index + 1
                yield _start(text_at, {"type": "text", "text": ""})
            yield _delta(text_at, {"type": "text_delta", "text": delta})
        result = stream.result
        if result is None:  # a stream closed early ends nothing (the caller went away)
            return
        calls = [(_tool_id(c), c, tool_input(c)) for c in result.tool_calls]
        if text_at is not None:
            yield _stop(text_at)
        if known is None:  # a live miss's reasoning, known only now
            for block in result.thinking:
                yield from _thinking_events(index, block)
                index += 1
        if text_at is None and not calls:
            yield _start(index, {"type": "text", "text": ""})
            yield _stop(index)
            index += 1
        for call_id, call, args in calls:
            yield _start(index, {"type": "tool_use", "id": call_id, "name": call.name, "input": {}})
            text = json.dumps(args, ensure_ascii=False)
            for at in range(0, len(text), size):
                piece = {"type": "input_json_delta", "partial_json": text[at : at + size]}
                yield _delta(index, piece)
            yield _stop(index)
            index += 1
        finish = {"stop_reason": _stop_reason(result), "stop_sequence": result.stop_sequence}
        yield named_event(
            "message_delta", {"type": "message_delta", "delta": finish, "usage": _usage(result)}
        )
        yield named_event("message_stop", {"type": "message_stop"})
    except PromptCacheError as exc:
        if not errors_as_events:
            raise
        log.warning("stream failed: %s: %s", exc.code, exc.message)
        yield named_event("error", anthropic_error(exc))
    except Exception:
        if not errors_as_events:
            raise
        log.exception("stream failed")
        yield named_event("error", anthropic_error(PromptCacheError("internal error")))
    finally:
        stream.close()


# ---------------------------------------------------------------- the endpoint
def _admit(
    event: APIGatewayProxyEventV2, svc: Service, *, counting: bool = False
) -> MessagesRequest:
    """Authenticate, rate limit and parse. Malformed input is Anthropic's 400 (never 422)."""
    settings = svc.settings
    try:
        tenant, admin = admit_chat(event, settings, svc.limiter)
        body, big = read_body(event, settings)
        request = parse_request(body, settings, tenant, big=big, counting=counting)
        check_threshold(request.chat.threshold, svc.cache.threshold, admin=admin)
    except Unprocessable as exc:
        raise BadRequest(exc.message) from None
    return request


def messages(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    request = _admit(event, svc)
    message_id = f"msg_{uuid.uuid4().hex[:24]}"
    if not request.stream or request.thinking:
        result, headers = svc.answer(request.chat)
        if not request.stream:
            return json_response(200, message_object(result, message_id=message_id), headers)
        _tool_blocks(result)  # arguments that are no object: an HTTP error, not a broken stream
        stream = ChatStream.replay(result)
    else:
        stream, headers = svc.stream(request.chat)
        if stream.result is not None:  # a replay: arguments no object are an HTTP error
            _tool_blocks(stream.result)
    events = sse_body(stream, message_id=message_id, errors_as_events=errors_as_events())
    return stream_response(events, headers)


def count_tokens(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    """``{"input_tokens": N}`` as the upstream counts them: Claude's free ``count_tokens``, for a
    request whose model goes to Claude. Another upstream has no such count, and the cache makes
    none up: a 400 naming the upstream. Nothing is read from or written to the cache."""
    request = _admit(event, svc, counting=True)
    model = request.chat.model
    counter = token_counter(svc.cache.llm, model)
    if counter is None:
        llm = upstream_for(svc.cache.llm, model)
        upstream = llm.name if llm is not None else "no upstream"
        raise BadRequest(
            f"count_tokens is answered by Claude: model {model!r} goes to {upstream}, "
            "which has no token count"
        )
    return json_response(200, {"input_tokens": counter.count_tokens(request.chat)})
