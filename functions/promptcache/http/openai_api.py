"""The OpenAI-compatible face of the cache: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Parses OpenAI's request shape into a ``ChatRequest`` (``openai_request``: what is forwarded,
keyed, bypassed and refused) and shapes the answer as OpenAI's ``chat.completion`` object or as
``chat.completion.chunk`` server-sent events, text and tool calls alike. The cache path is the one
``POST /chat`` takes: ``PromptCache.chat`` (or ``chat_stream`` for ``stream: true``).

Policy (docs/openai-compatibility.md: what is forwarded, keyed, bypassed and refused):

- The system prompt and earlier turns (tool calls by position, tool results, content parts) are
  part of the cache namespace (``_keys.namespace``), so are the model and every field that can
  change the answer; only a plain last user turn is compared loosely.
- ``temperature > 0`` is cached like any other value, in its own namespace: a stored answer is one
  valid sample of what the caller asked for. Fresh samples: ``"promptcache": {"cache": "skip"}``.
- ``n > 1`` asks for n different samples, which one stored answer cannot be: the cache is
  bypassed (not read, not written) and the model is asked n times (at most PROMPTCACHE_MAX_N).
- Tool calls go out with fresh ids on every replay (ids are opaque; the next turn's key names
  calls by position). Streamed, a call goes out as OpenAI's ``delta.tool_calls`` pieces (id,
  type and name first, then the arguments in fragments), after the answer's text.
- A bypassed answer carries ``x-promptcache-bypass`` (its reason).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from .._errors import PromptCacheError
from .._protocols import takes_n as upstream_takes_n
from .._stream import ChatStream
from .._types import ChatResult, Tier, ToolCall, Usage
from ..core import PromptCache
from .intake import read_body
from .observability import record
from .openai_request import CompletionRequest, parse_request
from .service import Service
from .sse import data_event, errors_as_events, stream_response
from .wire import (
    admit_chat,
    check_threshold,
    json_response,
    openai_error,
    reader,
    result_headers,
)

log = logging.getLogger("promptcache")

#: The most samples one request may ask for with ``n`` by default (PROMPTCACHE_MAX_N).
MAX_N = 8


# ---------------------------------------------------------------- shaping
def _usage(results: Sequence[ChatResult]) -> dict[str, int]:
    total = Usage(
        sum(r.usage.prompt_tokens for r in results),
        sum(r.usage.completion_tokens for r in results),
    )
    return total.as_dict()


def _call_id(call: ToolCall) -> str:
    """The id a call goes out with: the model's on a miss, a fresh one on a replay (a stored
    call has none)."""
    return call.id or f"call_{uuid.uuid4().hex[:24]}"


def _message(result: ChatResult) -> dict[str, Any]:
    """The answer as OpenAI's assistant message: its text (None when it holds only tool calls)
    and its calls (a legacy ``function_call`` as such)."""
    calls = [c for c in result.tool_calls if c.type != "function_call"]
    legacy = [c for c in result.tool_calls if c.type == "function_call"]
    text = result.response if (result.response or not result.tool_calls) else None
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        message["tool_calls"] = [c.as_wire(_call_id(c)) for c in calls]
    if legacy:
        message["function_call"] = {"name": legacy[0].name, "arguments": legacy[0].arguments}
    return message


def _call_deltas(calls: Sequence[ToolCall], size: int = 64) -> Iterator[dict[str, Any]]:
    """A streamed answer's tool calls as OpenAI streams them: for each call, a first piece with
    its index, id, type and name, then the arguments in fragments (the SDK joins them)."""
    for index, call in enumerate(c for c in calls if c.type != "function_call"):
        head = {"index": index, "id": _call_id(call), "type": call.type}
        yield {"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]}
        for at in range(0, len(call.arguments), size):
            piece = {"arguments": call.arguments[at : at + size]}
            yield {"tool_calls": [{"index": index, "function": piece}]}
    for call in (c for c in calls if c.type == "function_call"):
        yield {"function_call": {"name": call.name, "arguments": call.arguments}}


def completion_object(
    results: Sequence[ChatResult], *, completion_id: str, created: int
) -> dict[str, Any]:
    """OpenAI's ``chat.completion`` object; one choice per result."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": results[0].model,
        "choices": [
            {
                "index": i,
                "message": _message(r),
                "logprobs": None,
                "finish_reason": r.finish_reason,
            }
            for i, r in enumerate(results)
        ],
        "usage": _usage(results),
        "system_fingerprint": None,
    }


def _error_event(exc: PromptCacheError) -> bytes:
    return data_event(openai_error(exc))


def sse_body(
    streams: Sequence[ChatStream],
    *,
    completion_id: str,
    created: int,
    include_usage: bool = False,
    errors_as_events: bool = True,
) -> Iterator[bytes]:
    """``chat.completion.chunk`` events for each stream (choice index = position), then
    ``data: [DONE]``. Each choice opens with a role delta and closes with its finish reason.

    A failure in the middle of a stream: with ``errors_as_events`` (the response has started) an
    ``error`` event ends the body without ``[DONE]`` (OpenAI clients raise it); without, the
    exception propagates (a buffered response can still become an HTTP error). Every stream is
    closed in the end, which cancels (and stores nothing for) one that did not finish.
    """

    def chunk(index: int, delta: dict[str, Any], finish: str | None, model: str) -> bytes:
        obj: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        }
        if include_usage:
            obj["usage"] = None
        return data_event(obj)

    try:
        for index, stream in enumerate(streams):
            yield chunk(index, {"role": "assistant", "content": ""}, None, stream.model)
            for delta in stream:
                yield chunk(index, {"content": delta}, None, stream.model)
            for call_delta in _call_deltas(stream.result.tool_calls if stream.result else ()):
                yield chunk(index, call_delta, None, stream.model)
            finish = stream.result.finish_reason if stream.result else "stop"
            yield chunk(index, {}, finish, stream.model)
        if include_usage:
            results = [s.result for s in streams if s.result is not None]
            yield data_event(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": streams[0].model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": _usage(results),
                }
            )
        yield b"data: [DONE]\n\n"
    except PromptCacheError as exc:
        if not errors_as_events:
            raise
        log.warning("stream failed: %s: %s", exc.code, exc.message)
        yield _error_event(exc)
    except Exception:
        if not errors_as_events:
            raise
        log.exception("stream failed")
        yield _error_event(PromptCacheError("internal error"))
    finally:
        for stream in streams:
            stream.close()


# ---------------------------------------------------------------- the two endpoints
def _samples(cache: PromptCache, request: CompletionRequest) -> list[ChatResult]:
    """n > 1: n model answers, the cache neither read nor written (bypass ``n``): one call when
    the upstream takes ``n`` (forwarded), else n calls in parallel."""
    if "n" in request.chat.forward:
        first = cache.chat(request.chat)
        others = [
            replace(first, response=c.text, tool_calls=c.tool_calls, finish_reason=c.finish_reason)
            for c in first.alternatives
        ]
        return [first, *(replace(o, usage=Usage()) for o in others)]
    with ThreadPoolExecutor(max_workers=request.n) as pool:
        return list(pool.map(cache.chat, [request.chat] * request.n))


def chat_completions(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    cache, settings = svc.cache, svc.settings
    tenant, admin = admit_chat(event, settings, svc.limiter)
    body, big = read_body(event, settings)
    model = body.get("model")
    takes_n = upstream_takes_n(
        cache.llm, model.strip() if isinstance(model, str) else settings.model
    )
    request = parse_request(body, settings, tenant, big=big, takes_n=takes_n)
    check_threshold(
        request.chat.threshold, cache.threshold, admin=admin, param="promptcache.threshold"
    )
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    if request.n > 1:
        results = _samples(svc.cache, request)
        for one in results:
            record(one)
        headers = result_headers(
            Tier.BYPASS, None, None, _slowest(results), results[0].bypass_reason
        )
        if not request.stream:
            body = completion_object(results, completion_id=completion_id, created=created)
            return json_response(200, body, headers)
        streams = [ChatStream.replay(r) for r in results]
    elif request.stream:
        stream, headers = svc.stream(request.chat)
        streams = [stream]
    else:
        result, headers = svc.answer(request.chat)
        body = completion_object([result], completion_id=completion_id, created=created)
        return json_response(200, body, headers)

    events = sse_body(
        streams,
        completion_id=completion_id,
        created=created,
        include_usage=request.include_usage,
        errors_as_events=errors_as_events(),
    )
    return stream_response(events, headers)


def _slowest(results: list[ChatResult]) -> dict[str, float]:
    """n parallel answers: each part's longest (the time the caller waited for it)."""
    return {
        part: max(r.timings.get(part, 0.0) for r in results)
        for part in {p for r in results for p in r.timings}
    }


def models(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    """The default model, then every model the cache has answered for the caller's tenant (for
    every tenant: the admin key's, or without API keys)."""
    tenant = reader(event, svc.settings) if svc.settings.api_keys else None
    names = [svc.settings.model] + [m for m in svc.cache.models(tenant) if m != svc.settings.model]
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "promptcache"} for m in names]
    return json_response(200, {"object": "list", "data": data})
