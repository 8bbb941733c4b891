"""The OpenAI-compatible face of the cache: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Parses OpenAI's request shape into a ``ChatRequest`` and shapes the answer as OpenAI's
``chat.completion`` object or as ``chat.completion.chunk`` server-sent events. The cache path is
the one ``POST /chat`` takes: ``PromptCache.chat`` (or ``chat_stream`` for ``stream: true``).

Policy (docs/api.md, "OpenAI-compatible API"):

- The system prompt and earlier turns are part of the cache namespace (``_keys.namespace``), so
  are the model, ``temperature`` and ``max_tokens``; only the last user turn is compared loosely.
- ``temperature > 0`` is cached like any other value, in its own namespace: a stored answer is one
  valid sample of what the caller asked for. Fresh samples: ``"promptcache": {"cache": "skip"}``.
- ``n > 1`` asks for n different samples, which one stored answer cannot be: the cache is
  bypassed (not read, not written) and the model is asked n times (at most ``MAX_N``).
- Fields that change the answer but that the cache neither forwards nor keys on (tools,
  response_format other than text, top_p, stop, penalties, logprobs...) are refused with 422
  unless they hold their default value: silently dropping them would return wrong answers.
  Fields that do not change the text (user, seed, metadata, store, service_tier...) and fields
  this version does not know are ignored.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from .._errors import PromptCacheError, Unprocessable
from .._stream import ChatStream
from .._types import CacheMode, ChatRequest, ChatResult, Tier, Usage
from ..core import PromptCache
from ..settings import Settings
from .observability import count, record
from .service import Service
from .wire import (
    admit_chat,
    check_threshold,
    json_body,
    json_response,
    number,
    openai_error,
    parse_messages,
    reader,
    result_headers,
)

log = logging.getLogger("promptcache")

#: The most samples one request may ask for with ``n`` (each is a model call).
MAX_N = 8

_ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
_TEXT_ROLES = ("system", "developer", "user", "assistant")
_CACHE_FIELDS = {"cache", "threshold", "ttl"}


def _unset(value: Any) -> bool:
    return value is None


def _is(*defaults: Any) -> Callable[[Any], bool]:
    return lambda value: value is None or any(value == d for d in defaults)


#: Fields that change the answer, accepted only at their default value: name -> (is default, why).
_REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tools": (_is([]), "tool calling is not supported"),
    "functions": (_is([]), "function calling is not supported"),
    "tool_choice": (_is("none", "auto"), "tool calling is not supported"),
    "function_call": (_is("none", "auto"), "function calling is not supported"),
    "response_format": (_is({"type": "text"}), "only text responses are supported"),
    "logprobs": (_is(False), "log probabilities are not stored"),
    "top_logprobs": (_is(0), "log probabilities are not stored"),
    "top_p": (_is(1), "it is neither forwarded nor part of the cache key"),
    "frequency_penalty": (_is(0), "it is neither forwarded nor part of the cache key"),
    "presence_penalty": (_is(0), "it is neither forwarded nor part of the cache key"),
    "stop": (_is("", []), "it is neither forwarded nor part of the cache key"),
    "logit_bias": (_is({}), "it is neither forwarded nor part of the cache key"),
    "reasoning_effort": (_unset, "it is neither forwarded nor part of the cache key"),
    "verbosity": (_unset, "it is neither forwarded nor part of the cache key"),
    "modalities": (_is(["text"]), "only text responses are supported"),
    "audio": (_unset, "only text responses are supported"),
    "prediction": (_unset, "predicted outputs are not supported"),
    "web_search_options": (_unset, "web search is not supported"),
}


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated ``/v1/chat/completions`` request."""

    chat: ChatRequest
    n: int = 1
    stream: bool = False
    include_usage: bool = False


# ---------------------------------------------------------------- parsing
def _text(content: Any, where: str) -> Any:
    """A message's text: a string as is, a list of text parts joined by newlines. Anything else is
    returned unchanged for ``parse_messages`` to reject with its own message."""
    if not isinstance(content, list):
        return content
    texts: list[str] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise Unprocessable(f"{where}[{j}] must be a content part object")
        kind = part.get("type")
        if kind != "text":
            raise Unprocessable(
                f"{where}[{j}] is a {kind!r} part; only text parts are supported (the cache "
                "compares text, it cannot tell images, audio or files apart)"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise Unprocessable(f"{where}[{j}].text must be a string")
        texts.append(text)
    if not texts:
        raise Unprocessable(f"{where} must not be an empty list")
    return "\n".join(texts)


def _messages(value: Any, settings: Settings) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return value  # type: ignore[no-any-return]  # parse_messages names the problem
    plain: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            plain.append(item)
            continue
        role = item.get("role")
        if role in ("tool", "function"):
            raise Unprocessable(f"messages[{i}] has role {role!r}; tool calling is not supported")
        if item.get("tool_calls") or item.get("function_call"):
            raise Unprocessable(f"messages[{i}] carries tool calls; tool calling is not supported")
        if role not in _TEXT_ROLES:
            raise Unprocessable(f"messages[{i}].role must be one of {', '.join(_TEXT_ROLES)}")
        content = _text(item.get("content"), f"messages[{i}].content")
        plain.append({"role": _ROLE_ALIASES.get(role, role), "content": content})
    return plain


def _int(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Unprocessable(f"'{name}' must be an integer between {lo} and {hi}")
    return value


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise Unprocessable(f"'{name}' must be true or false")
    return value


def _cache_options(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Unprocessable("'promptcache' must be an object with cache, threshold and/or ttl")
    unknown = sorted(set(value) - _CACHE_FIELDS)
    if unknown:
        raise Unprocessable(
            f"unknown field(s) in 'promptcache': {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(_CACHE_FIELDS))}"
        )
    return value


def parse_request(body: dict[str, Any], settings: Settings, tenant: str) -> CompletionRequest:
    """OpenAI's request shape -> a CompletionRequest. Raises RequestError (4xx) naming the field."""
    for name, (is_default, why) in _REFUSED.items():
        if name in body and not is_default(body[name]):
            raise Unprocessable(f"'{name}' is not supported by this cache: {why}")
    if "messages" not in body:
        raise Unprocessable("'messages' is required: a non-empty list of {role, content}")
    messages = parse_messages(_messages(body["messages"], settings), settings)

    model = body.get("model", settings.model)
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise Unprocessable("'model' must be a non-empty string of at most 200 characters")

    max_tokens = _int(body, "max_tokens", 1, 1_000_000)
    max_completion_tokens = _int(body, "max_completion_tokens", 1, 1_000_000)
    if None not in (max_tokens, max_completion_tokens) and max_tokens != max_completion_tokens:
        raise Unprocessable("'max_tokens' and 'max_completion_tokens' disagree; send one of them")
    n = _int(body, "n", 1, 128) or 1
    if n > MAX_N:
        raise Unprocessable(f"'n' is at most {MAX_N} here (each sample is a model call), got {n}")

    stream = _bool(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise Unprocessable("'stream_options' is only allowed with 'stream': true")
        if not isinstance(options, dict):
            raise Unprocessable("'stream_options' must be an object")
        include_usage = _bool(options, "include_usage")

    extra = _cache_options(body.get("promptcache"))
    try:
        mode = CacheMode(extra.get("cache", "use"))
    except ValueError:
        raise Unprocessable("'promptcache.cache' must be one of use, skip, refresh") from None
    ttl = number(extra, "ttl", 0, 10 * 365 * 86400)
    chat = ChatRequest(
        messages=messages,
        model=model.strip(),
        tenant=tenant,
        threshold=number(extra, "threshold", 0.0, 1.0),
        ttl=None if ttl is None else int(ttl),
        max_tokens=max_completion_tokens if max_tokens is None else max_tokens,
        temperature=number(body, "temperature", 0.0, 2.0),
        cache=mode,
    )
    return CompletionRequest(chat=chat, n=n, stream=stream, include_usage=include_usage)


# ---------------------------------------------------------------- shaping
def _usage(results: Sequence[ChatResult]) -> dict[str, int]:
    total = Usage(
        sum(r.usage.prompt_tokens for r in results),
        sum(r.usage.completion_tokens for r in results),
    )
    return total.as_dict()


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
                "message": {"role": "assistant", "content": r.response, "refusal": None},
                "logprobs": None,
                "finish_reason": r.finish_reason,
            }
            for i, r in enumerate(results)
        ],
        "usage": _usage(results),
        "system_fingerprint": None,
    }


def _event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"


def _error_event(exc: PromptCacheError) -> bytes:
    return _event(openai_error(exc))


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
        return _event(obj)

    try:
        for index, stream in enumerate(streams):
            yield chunk(index, {"role": "assistant", "content": ""}, None, stream.model)
            for delta in stream:
                yield chunk(index, {"content": delta}, None, stream.model)
            finish = stream.result.finish_reason if stream.result else "stop"
            yield chunk(index, {}, finish, stream.model)
        if include_usage:
            results = [s.result for s in streams if s.result is not None]
            yield _event(
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


# ---------------------------------------------------------------- a body sent while produced
@dataclass
class LiveBody:
    """Where a streamed completion leaves its body when the server can send it as it is produced
    (``promptcache serve``): an iterator of SSE byte chunks instead of a string in the result."""

    chunks: Iterator[bytes] | None = None

    def take(self, result: dict[str, Any]) -> Iterator[bytes] | None:
        """The live body, if the response that was built is the streamed 200 it belongs to."""
        chunks, self.chunks = self.chunks, None
        if chunks is not None and int(result.get("statusCode", 200)) != 200:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            return None
        return chunks


_LIVE: ContextVar[LiveBody | None] = ContextVar("promptcache_live_body", default=None)


@contextmanager
def live_body() -> Iterator[LiveBody]:
    """Within this block (one invocation, one thread), streamed completions are left live in the
    yielded slot instead of being buffered into the response body."""
    slot = LiveBody()
    token = _LIVE.set(slot)
    try:
        yield slot
    finally:
        _LIVE.reset(token)


# ---------------------------------------------------------------- the two endpoints
def _samples(cache: PromptCache, request: CompletionRequest) -> list[ChatResult]:
    """n > 1: n independent model answers, the cache neither read nor written."""
    fresh = replace(request.chat, cache=CacheMode.SKIP)
    with ThreadPoolExecutor(max_workers=request.n) as pool:
        return list(pool.map(cache.chat, [fresh] * request.n))


def chat_completions(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    tenant, admin = admit_chat(event, svc.settings, svc.limiter)
    request = parse_request(json_body(event, svc.settings), svc.settings, tenant)
    check_threshold(request.chat.threshold, svc.cache.threshold, admin=admin)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    if request.n > 1:
        results = _samples(svc.cache, request)
        for one in results:
            record(one)
        headers = result_headers(Tier.BYPASS, None, None, _slowest(results))
        if not request.stream:
            body = completion_object(results, completion_id=completion_id, created=created)
            return json_response(200, body, headers)
        streams = [ChatStream.replay(r) for r in results]
    elif request.stream:
        # primed: an early upstream failure raises here
        stream = svc.cache.chat_stream(request.chat)
        if stream.result is not None:
            record(stream.result)
        else:  # a live miss: its parts are in the counters once it ends
            count(f"tier_{stream.tier.value}")
        headers = result_headers(stream.tier, stream.similarity, stream.entry_id, stream.timings)
        streams = [stream]
    else:
        result = svc.cache.chat(request.chat)
        record(result)
        body = completion_object([result], completion_id=completion_id, created=created)
        headers = result_headers(result.tier, result.similarity, result.entry_id, result.timings)
        return json_response(200, body, headers)

    headers["Cache-Control"] = "no-cache"
    slot = _LIVE.get()
    events = sse_body(
        streams,
        completion_id=completion_id,
        created=created,
        include_usage=request.include_usage,
        errors_as_events=slot is not None,
    )
    if slot is not None:  # the server sends each chunk as it is produced
        slot.chunks = events
        text = ""
    else:  # Lambda behind API Gateway: the whole event stream in one body
        text = b"".join(events).decode("utf-8")
    return Response(status_code=200, content_type="text/event-stream", body=text, headers=headers)


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
