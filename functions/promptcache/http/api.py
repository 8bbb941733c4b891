"""The project's own HTTP face: ``POST /chat``, ``GET``/``DELETE /entries/{id}``, ``GET /stats`` and
``GET /health``, each parsing its request, asking the core and shaping the answer. Shared pieces
(auth, the rate limit, validators, headers) are in ``wire``; the resolver in ``resolver``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from .._errors import BadRequest, Forbidden, NotFound, RequestError, Unprocessable
from .._timeline import HOUR, HOURS_KEPT
from .._types import CacheMode, ChatRequest, Message
from ..routes import ENTRY_HEADER
from ..settings import Settings
from .dashboard import HEADERS, asset
from .prometheus import CONTENT_TYPE as PROMETHEUS_TYPE
from .prometheus import render
from .service import Service
from .wire import (
    admit,
    admit_chat,
    check_threshold,
    content,
    json_body,
    json_response,
    number,
    parse_messages,
    reader,
)

_ENTRY_ID = re.compile(r"^[0-9a-f]{32}$")
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


def parse_chat(body: dict[str, Any], settings: Settings, tenant: str) -> ChatRequest:
    unknown = sorted(set(body) - _CHAT_FIELDS)
    if unknown:
        raise Unprocessable(f"unknown field(s): {', '.join(unknown)}")
    has_prompt, has_messages = "prompt" in body, "messages" in body
    if has_prompt == has_messages:
        raise Unprocessable("send exactly one of 'prompt' (a string) or 'messages' (a list)")
    if has_prompt:
        messages: tuple[Message, ...] = (
            Message("user", content(body["prompt"], "'prompt'", settings)),
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
    ttl = number(body, "ttl", 0, 10 * 365 * 86400)
    return ChatRequest(
        messages=messages,
        model=model.strip(),
        tenant=tenant,
        threshold=number(body, "threshold", 0.0, 1.0),
        ttl=None if ttl is None else ttl,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=number(body, "temperature", 0.0, 2.0),
        cache=mode,
    )


# ---------------------------------------------------------------- the three endpoints
def chat(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    tenant, admin = admit_chat(event, svc.settings, svc.limiter)
    request = parse_chat(json_body(event, svc.settings), svc.settings, tenant)
    check_threshold(request.threshold, svc.cache.threshold, admin=admin)
    result, headers = svc.answer(request)
    return json_response(200, result.as_dict(), headers)


def _entry_id(value: str) -> str:
    if not _ENTRY_ID.match(value):
        raise BadRequest(
            f"{value!r} is not an entry id: ids are 32 hex characters, as sent in the "
            f"{ENTRY_HEADER} header and the 'entry_id' field of an answer"
        )
    return value


def _no_entry(entry_id: str) -> NotFound:
    return NotFound(f"no entry {entry_id} in this cache (removed, expired, or never stored)")


def entry(event: APIGatewayProxyEventV2, entry_id: str, svc: Service) -> Response[str]:
    """GET /entries/{id}: a stored answer and the prompt it was stored for, e.g. to see what a
    hit matched."""
    tenant = admit(event, svc.settings, svc.limiter)
    found = svc.cache.entry(tenant, _entry_id(entry_id))
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


def forget(event: APIGatewayProxyEventV2, entry_id: str, svc: Service) -> Response[str]:
    """DELETE /entries/{id}: remove a stored answer, e.g. one a client found wrong."""
    tenant = admit(event, svc.settings, svc.limiter)
    removed = svc.cache.forget(tenant, _entry_id(entry_id))
    if removed is None:
        raise _no_entry(entry_id)
    return json_response(
        200, {"deleted": entry_id, "prompt": removed.prompt, "model": removed.model}
    )


def since_param(event: APIGatewayProxyEventV2, now: float) -> float | None:
    """``?since=``: Unix seconds or an ISO 8601 time (with its offset, else UTC), at most
    HOURS_KEPT hours back (older buckets are gone); None when absent."""
    raw = (event.query_string_parameters or {}).get("since")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise BadRequest(
                f"'since' must be Unix seconds or an ISO 8601 time, got {raw[:64]!r}"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        value = parsed.timestamp()
    oldest = now - HOURS_KEPT * HOUR
    if not math.isfinite(value) or not oldest <= value <= now + 60:
        raise BadRequest(
            f"'since' must be within the last {HOURS_KEPT // 24} days (the hourly buckets kept), "
            f"and not in the future; got {raw[:64]!r}"
        )
    return value


def stats(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    """GET /stats: a tenant's key reads its own tenant's report; the admin key the overall one
    with every tenant's (``?tenant=NAME``: that tenant's). Without API keys: the overall one.
    ``?since=`` starts the bucketed series (default: the last hour)."""
    caller = reader(event, svc.settings)
    since = since_param(event, svc.cache.clock())
    if not svc.settings.api_keys:
        return json_response(200, svc.cache.report(since=since))
    tenants = set(svc.settings.api_keys.values())
    asked = (event.query_string_parameters or {}).get("tenant")
    if caller is not None:
        if asked is not None and asked != caller:
            raise Forbidden("a tenant's key reads its own tenant's stats only")
        body = svc.cache.tenant_report(caller, tenants, since)
    elif asked is None:
        return json_response(200, svc.cache.report(tenants, since))
    else:
        body = svc.cache.tenant_report(asked, tenants, since)
    if body is None:
        raise NotFound(f"no tenant {asked!r} in this cache's keys or counters")
    return json_response(200, body)


def metrics(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    """GET /metrics: the counters in Prometheus' text format, every tenant's. With API keys
    configured only the admin key reads it (a tenant's key would see the others')."""
    if reader(event, svc.settings) is not None and svc.settings.api_keys:
        raise Forbidden("/metrics shows every tenant: it needs the admin key")
    return Response(
        status_code=200,
        content_type=PROMETHEUS_TYPE,
        body=render(*svc.cache.counters()),
    )


def dashboard(path: str) -> Response[str]:
    """GET /dashboard and its script and stylesheet: static, open to every caller (the page
    holds no data; it reads /stats with the key the user pastes in)."""
    text, content_type = asset(path)
    return Response(status_code=200, content_type=content_type, body=text, headers=dict(HEADERS))


def _trusted(event: APIGatewayProxyEventV2, settings: Settings) -> bool:
    """Whether the caller may see health details (they name internal endpoints): always when no
    API keys are configured, else only with the admin key (a tenant's key sees the status)."""
    if not settings.api_keys:
        return True
    try:
        return reader(event, settings) is None  # None: the admin key
    except RequestError:
        return False


def health(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    """Open to every caller (load balancers, uptime checks); each dependency's detail and whether
    it is required only for the admin key when API keys are configured."""
    ok, checks = svc.cache.health()
    details = _trusted(event, svc.settings)
    dependencies: dict[str, dict[str, Any]] = {}
    for c in checks:
        shown: dict[str, Any] = {"ok": c.ok, "latency_ms": round(c.latency_ms, 3)}
        if details:
            shown.update(detail=c.detail, required=c.required)
        dependencies[c.name] = shown
    status = "ok" if ok and all(c.ok for c in checks) else ("degraded" if ok else "down")
    return json_response(200 if ok else 503, {"status": status, "dependencies": dependencies})
