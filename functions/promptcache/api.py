"""The HTTP face of the core, shared by every handler: request parsing, auth, limits, and the one
error-to-HTTP map. Handlers only register routes and call ``app.resolve``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from ._errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PromptCacheError,
    RateLimited,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from ._protocols import RateWindows, Store
from ._types import CacheMode, ChatRequest, Message
from .core import PromptCache
from .observability import count
from .routes import ROUTES, route_path
from .settings import Settings

log = logging.getLogger("promptcache")

_ENTRY_ID = re.compile(r"^[0-9a-f]{32}$")


_ROLES = ("system", "user", "assistant")
_CHAT_FIELDS = {
    "prompt",
    "messages",
    "model",
    "threshold",
    "ttl",
    "max_tokens",
    "temperature",
    "cache",
}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(body, ensure_ascii=False, allow_nan=False),
        headers=headers,
    )


#: OpenAI's error ``type`` by status, added to error bodies on the /v1 routes (OpenAI clients read
#: ``error.message`` and ``error.type``; the body is otherwise the project's own).
_OPENAI_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def openai_error_type(status: int) -> str:
    default = "invalid_request_error" if status < 500 else "server_error"
    return _OPENAI_ERROR_TYPES.get(status, default)


def error_response(exc: PromptCacheError, *, openai: bool = False) -> Response[str]:
    error = {"code": exc.code, "message": exc.message}
    if openai:
        error["type"] = openai_error_type(exc.status)
    return json_response(exc.status, {"error": error})


def _is_openai(event: APIGatewayProxyEventV2) -> bool:
    return event.raw_path.startswith("/v1/")


@dataclass
class _Invocation:
    """What a resolver knows about the one request it is resolving."""

    event: Any = None
    lambda_context: Any = None
    context: dict[str, Any] = field(default_factory=dict)
    processed_stack_frames: list[str] = field(default_factory=list)


class RequestScopedResolver(APIGatewayHttpResolver):
    """``APIGatewayHttpResolver`` whose per-request state belongs to the request.

    Powertools keeps the request being resolved in shared places: ``resolve`` assigns the event
    and the Lambda context to *class* attributes of ``BaseRouter`` (shared by every resolver and
    every thread), and keeps the matched route and its path arguments in the instance's
    ``context`` dict. That is sound where one event at a time reaches a process, which is all
    Lambda promises and all Powertools promises; ``promptcache serve`` resolves many at once on
    threads, and concurrent requests then read each other's body, path arguments and headers.

    Here those four attributes (``current_event``, ``lambda_context``, ``context``,
    ``processed_stack_frames``) are properties over one ``_Invocation`` per ``resolve`` call, held
    in a context variable (each thread has its own), as Powertools' own ``HttpResolverLocal``
    does for ASGI servers. What is relied on: that Powertools reads and writes them through
    ``self`` (it does, except for the class assignment in ``resolve``, which the properties
    shadow); tests/unit/test_request_scope.py resolves concurrent requests to catch a change.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._idle = _Invocation()  # route registration and anything outside resolve()
        self._now: ContextVar[_Invocation | None] = ContextVar(
            f"promptcache_resolver_{id(self)}", default=None
        )
        super().__init__(**kwargs)

    @property
    def _invocation(self) -> _Invocation:
        return self._now.get() or self._idle

    @property  # type: ignore[override]
    def current_event(self) -> APIGatewayProxyEventV2:
        return self._invocation.event  # type: ignore[no-any-return]

    @current_event.setter
    def current_event(self, value: APIGatewayProxyEventV2) -> None:
        self._invocation.event = value

    @property
    def lambda_context(self) -> LambdaContext:
        return self._invocation.lambda_context  # type: ignore[no-any-return]

    @lambda_context.setter
    def lambda_context(self, value: LambdaContext) -> None:
        self._invocation.lambda_context = value

    @property
    def context(self) -> dict[str, Any]:
        return self._invocation.context

    @context.setter
    def context(self, value: dict[str, Any]) -> None:
        self._invocation.context = value

    @property
    def processed_stack_frames(self) -> list[str]:
        return self._invocation.processed_stack_frames

    @processed_stack_frames.setter
    def processed_stack_frames(self, value: list[str]) -> None:
        self._invocation.processed_stack_frames = value

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        invocation = _Invocation(lambda_context=context)
        invocation.event = self._to_proxy_event(dict(event))
        token = self._now.set(invocation)
        try:
            return super().resolve(event, context)
        finally:
            self._now.reset(token)


def make_app(settings: Settings) -> APIGatewayHttpResolver:
    """A resolver with CORS and the error map; routes are added by the handler modules."""
    app = RequestScopedResolver(
        cors=CORSConfig(
            allow_origin=settings.cors_origins,
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=[
                "X-Promptcache-Tier",
                "X-Promptcache-Similarity",
                "X-Promptcache-Entry",
            ],
            max_age=600,
        )
    )

    @app.exception_handler(PromptCacheError)  # type: ignore[untyped-decorator]
    def _known(exc: PromptCacheError) -> Response[str]:
        if exc.status >= 500:
            log.warning("request failed: %s: %s", exc.code, exc.message)
        return error_response(exc, openai=_is_openai(app.current_event))

    @app.exception_handler(NotFoundError)  # type: ignore[untyped-decorator]
    def _unknown_route(exc: NotFoundError) -> Response[str]:
        return _no_route(app.current_event)

    @app.not_found
    def _not_found(exc: Exception) -> Response[str]:
        return _no_route(app.current_event)

    return app


def _no_route(event: APIGatewayProxyEventV2) -> Response[str]:
    path = event.raw_path
    methods = sorted(m for (m, p) in ROUTES if p == route_path(path))
    if methods:
        err: PromptCacheError = MethodNotAllowed(
            f"{event.request_context.http.method} is not allowed on {path}; "
            f"use {', '.join(methods)}"
        )
        resp = error_response(err, openai=_is_openai(event))
        resp.headers["Allow"] = ", ".join(methods)
        return resp
    known = ", ".join(f"{m} {p}" for (m, p) in ROUTES)
    not_found = NotFound(f"no route {path}; routes are: {known}")
    return error_response(not_found, openai=_is_openai(event))


# ---------------------------------------------------------------- auth and limits
class RateLimiter:
    """At most ``per_minute`` requests per tenant, counted in the store: every process sharing it
    (Lambda containers, local servers) draws on one budget.

    A sliding one-minute window, estimated from two fixed ones (this minute's count plus the
    previous minute's, weighted by how much of it still lies within the last 60 s): one store round
    trip, no burst of twice the limit at a minute's turn. Fails open: a store that cannot count
    lets the request through (the cache itself may still answer it)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self._clock = clock  # wall clock: shared by every process counting in the store

    def check(self, tenant: str, store: Store) -> None:
        if self.per_minute <= 0 or not isinstance(store, RateWindows):
            return
        now = self._clock()
        minute, into = divmod(now, 60.0)
        try:
            current, previous = store.count_window(
                f"rate:{tenant}:{int(minute)}", f"rate:{tenant}:{int(minute) - 1}", ttl=120.0
            )
        except Exception as exc:
            log.warning("rate limit not counted (the request goes through): %s", exc)
            return
        if current + previous * (1.0 - into / 60.0) > self.per_minute:
            raise RateLimited(
                f"more than {self.per_minute} requests per minute for tenant {tenant!r} "
                "(PROMPTCACHE_RATE_LIMIT_PER_MINUTE); slow down"
            )


def authenticate(event: APIGatewayProxyEventV2, settings: Settings) -> str:
    """The tenant of the request's API key (``default`` when no keys are configured)."""
    if not settings.api_keys:
        return "default"
    header = event.headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    tenant = settings.api_keys.get(token.strip())
    if tenant is None:
        raise Forbidden("unknown API key")
    return tenant


# ---------------------------------------------------------------- body parsing
def json_body(event: APIGatewayProxyEventV2, settings: Settings) -> dict[str, Any]:
    """The request's JSON object, after content-type and size checks."""
    content_type = (event.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {content_type or 'nothing'!r}"
        )
    raw = event.body or ""
    data = base64.b64decode(raw) if event.is_base64_encoded else raw.encode("utf-8")
    if len(data) > settings.max_body_bytes:
        raise PayloadTooLarge(
            f"body is {len(data)} bytes; the limit is {settings.max_body_bytes} "
            "(PROMPTCACHE_MAX_BODY_BYTES)"
        )
    if not data.strip():
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Unprocessable("the body must be a JSON object")
    return body


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Unprocessable(f"'{name}' must be a number")
    if not lo <= value <= hi:
        raise Unprocessable(f"'{name}' must be between {lo} and {hi}, got {value}")
    return float(value)


def _content(value: Any, where: str, settings: Settings) -> str:
    if not isinstance(value, str):
        raise Unprocessable(f"{where} must be a string")
    if not value.strip():
        raise Unprocessable(f"{where} must not be empty")
    if len(value) > settings.max_prompt_chars:
        raise PayloadTooLarge(
            f"{where} has {len(value)} characters; the limit is {settings.max_prompt_chars} "
            "(PROMPTCACHE_MAX_PROMPT_CHARS)"
        )
    return value


def parse_messages(value: Any, settings: Settings) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise Unprocessable("'messages' must be a non-empty list of {role, content} objects")
    if len(value) > settings.max_messages:
        raise PayloadTooLarge(
            f"{len(value)} messages; the limit is {settings.max_messages} "
            "(PROMPTCACHE_MAX_MESSAGES)"
        )
    messages = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise Unprocessable(f"messages[{i}] must be an object with 'role' and 'content'")
        role = item.get("role")
        if role not in _ROLES:
            raise Unprocessable(f"messages[{i}].role must be one of {', '.join(_ROLES)}")
        messages.append(
            Message(role, _content(item.get("content"), f"messages[{i}].content", settings))
        )
    if messages[-1].role != "user":
        raise Unprocessable("the last message must have role 'user'")
    return tuple(messages)


def parse_chat(body: dict[str, Any], settings: Settings, tenant: str) -> ChatRequest:
    unknown = sorted(set(body) - _CHAT_FIELDS)
    if unknown:
        raise Unprocessable(f"unknown field(s): {', '.join(unknown)}")
    has_prompt, has_messages = "prompt" in body, "messages" in body
    if has_prompt == has_messages:
        raise Unprocessable("send exactly one of 'prompt' (a string) or 'messages' (a list)")
    if has_prompt:
        messages: tuple[Message, ...] = (
            Message("user", _content(body["prompt"], "'prompt'", settings)),
        )
    else:
        messages = parse_messages(body["messages"], settings)
    model = body.get("model", settings.model)
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise Unprocessable("'model' must be a non-empty string of at most 200 characters")
    cache = body.get("cache", "use")
    try:
        mode = CacheMode(cache)
    except ValueError:
        raise Unprocessable("'cache' must be one of use, skip, refresh") from None
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= 1_000_000
    ):
        raise Unprocessable("'max_tokens' must be an integer between 1 and 1000000")
    ttl = _number(body, "ttl", 0, 10 * 365 * 86400)
    return ChatRequest(
        messages=messages,
        model=model.strip(),
        tenant=tenant,
        threshold=_number(body, "threshold", 0.0, 1.0),
        ttl=None if ttl is None else ttl,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0),
        cache=mode,
    )


# ---------------------------------------------------------------- the three endpoints
def chat(
    event: APIGatewayProxyEventV2, cache: PromptCache, settings: Settings, limiter: RateLimiter
) -> Response[str]:
    tenant = authenticate(event, settings)
    limiter.check(tenant, cache.store)
    request = parse_chat(json_body(event, settings), settings, tenant)
    result = cache.chat(request)
    count(f"tier_{result.tier.value}")
    headers = {"X-Promptcache-Tier": result.tier.value}
    if result.similarity is not None:
        headers["X-Promptcache-Similarity"] = f"{result.similarity:.6f}"
    if result.entry_id:
        headers["X-Promptcache-Entry"] = result.entry_id
    return json_response(200, result.as_dict(), headers)


def _entry_id(value: str) -> str:
    if not _ENTRY_ID.match(value):
        raise BadRequest(
            f"{value!r} is not an entry id: ids are 32 hex characters, as sent in the "
            "X-Promptcache-Entry header and the 'entry_id' field of an answer"
        )
    return value


def _no_entry(entry_id: str) -> NotFound:
    return NotFound(f"no entry {entry_id} in this cache (removed, expired, or never stored)")


def entry(
    event: APIGatewayProxyEventV2,
    entry_id: str,
    cache: PromptCache,
    settings: Settings,
    limiter: RateLimiter,
) -> Response[str]:
    """GET /entries/{id}: a stored answer and the prompt it was stored for, e.g. to see what a
    hit matched."""
    tenant = authenticate(event, settings)
    limiter.check(tenant, cache.store)
    found = cache.entry(tenant, _entry_id(entry_id))
    if found is None:
        raise _no_entry(entry_id)
    return json_response(
        200,
        {
            "id": found.id,
            "prompt": found.prompt,
            "response": found.response,
            "model": found.model,
            "created_at": found.created_at,
            "expires_at": found.expires_at,
            "usage": found.usage.as_dict(),
        },
    )


def forget(
    event: APIGatewayProxyEventV2,
    entry_id: str,
    cache: PromptCache,
    settings: Settings,
    limiter: RateLimiter,
) -> Response[str]:
    """DELETE /entries/{id}: remove a stored answer, e.g. one a client found wrong."""
    tenant = authenticate(event, settings)
    limiter.check(tenant, cache.store)
    removed = cache.forget(tenant, _entry_id(entry_id))
    if removed is None:
        raise _no_entry(entry_id)
    return json_response(
        200, {"deleted": entry_id, "prompt": removed.prompt, "model": removed.model}
    )


def stats(event: APIGatewayProxyEventV2, cache: PromptCache, settings: Settings) -> Response[str]:
    authenticate(event, settings)
    return json_response(200, cache.report())


def health(cache: PromptCache) -> Response[str]:
    ok, checks = cache.health()
    body = {
        "status": "ok" if ok and all(c.ok for c in checks) else ("degraded" if ok else "down"),
        "dependencies": {
            c.name: {
                "ok": c.ok,
                "latency_ms": round(c.latency_ms, 3),
                "detail": c.detail,
                "required": c.required,
            }
            for c in checks
        },
    }
    return json_response(200 if ok else 503, body)
