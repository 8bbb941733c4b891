"""What the HTTP faces (``api`` for ``/chat`` and the entries, ``openai_api`` for ``/v1``) stand
on: the response headers, JSON bodies and each face's error bodies, authentication and the rate
limit (``admit``, every route's preamble), and the validators of request fields.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from .._accounting import bypass_label
from .._errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    PromptCacheError,
    RateLimited,
    RequestError,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamNotConfigured,
    UpstreamRateLimited,
)
from .._types import Message, Tier
from ..routes import (
    ANTHROPIC,
    API_KEY_HEADER,
    BYPASS_HEADER,
    ENTRY_HEADER,
    NATIVE,
    OPENAI,
    RESPONSES,
    RESULT_HEADERS,
    RETRY_AFTER_HEADER,
    SIMILARITY_HEADER,
    TENANT_HEADER,
    TIER_HEADER,
    TIMING_HEADER,
    TIMING_PARTS,
)
from ..settings import Settings
from .ratelimit import RateLimiter

__all__ = [
    "BYPASS_HEADER",
    "ENTRY_HEADER",
    "RESULT_HEADERS",
    "SIMILARITY_HEADER",
    "TIER_HEADER",
    "RateLimiter",
    "admit",
    "admit_chat",
    "anthropic_error",
    "authenticate",
    "check_threshold",
    "content",
    "error_response",
    "face_status",
    "json_body",
    "json_response",
    "number",
    "openai_error",
    "openai_error_type",
    "parse_messages",
    "reader",
    "result_headers",
    "server_timing",
]

log = logging.getLogger("promptcache")

_ROLES = ("system", "user", "assistant")


def result_headers(
    tier: Tier,
    similarity: float | None,
    entry_id: str | None,
    timings: Mapping[str, float] | None = None,
    bypass_reason: str | None = None,
) -> dict[str, str]:
    """The headers naming what the cache did: the tier, a hit's similarity, the stored entry,
    a bypass's reason (its label: a request's, ``cache=skip`` or a backend failure's error code,
    never the failure's free text) and where the time went (``Server-Timing``: each part, 0 for
    one that did not run)."""
    headers = {TIER_HEADER: tier.value}
    if similarity is not None:
        headers[SIMILARITY_HEADER] = f"{similarity:.6f}"
    if entry_id:
        headers[ENTRY_HEADER] = entry_id
    if bypass_reason:
        headers[BYPASS_HEADER] = bypass_label(bypass_reason)
    headers[TIMING_HEADER] = server_timing(timings or {})
    return headers


def server_timing(timings: Mapping[str, float]) -> str:
    """``lookup;dur=0.41, embed;dur=3.2, verify;dur=0, model;dur=812.5`` (milliseconds)."""
    return ", ".join(f"{part};dur={round(timings.get(part, 0.0), 3):g}" for part in TIMING_PARTS)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(body, ensure_ascii=False, allow_nan=False),
        headers=headers,
    )


#: OpenAI's error ``type`` by status, added to the OpenAI face's error bodies (OpenAI clients read
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


def _native_error(exc: PromptCacheError) -> dict[str, Any]:
    return {"error": {"code": exc.code, "message": exc.message}}


def openai_error(exc: PromptCacheError) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"code", "message", "type", "param"}}``; ``param`` names
    the field at fault (``top_p``, ``messages[0].content``), null when none is."""
    param = exc.param if isinstance(exc, RequestError) else None
    kind = openai_error_type(face_status(exc, OPENAI))
    return {"error": {"code": exc.code, "message": exc.message, "type": kind, "param": param}}


#: Anthropic's error ``type`` by status (any other 4xx: ``invalid_request_error``; 5xx:
#: ``api_error``, or ``overloaded_error`` for an overloaded upstream).
_ANTHROPIC_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_type(exc: PromptCacheError) -> str:
    overloaded = isinstance(exc, UpstreamError) and not isinstance(exc, UpstreamNotConfigured)
    if "overloaded" in exc.code or (overloaded and exc.status == 503):
        return "overloaded_error"
    default = "invalid_request_error" if exc.status < 500 else "api_error"
    return _ANTHROPIC_ERROR_TYPES.get(exc.status, default)


def anthropic_error(exc: PromptCacheError) -> dict[str, Any]:
    """Anthropic's error body: ``{"type": "error", "error": {"type", "message"}}``."""
    return {"type": "error", "error": {"type": anthropic_error_type(exc), "message": exc.message}}


def responses_error(exc: PromptCacheError) -> dict[str, Any]:
    """OpenAI's error body as the Responses API sends it: ``{"error": {"message", "type",
    "param", "code"}}``, ``param`` naming the field at fault (an error's ``param``, if it has
    one); a 404 is an ``invalid_request_error`` there."""
    kind = "invalid_request_error" if exc.status == 404 else openai_error_type(exc.status)
    return {
        "error": {
            "message": exc.message,
            "type": kind,
            "param": exc.param if isinstance(exc, RequestError) else None,
            "code": exc.code,
        }
    }


#: Each face's error body (``routes.face_of`` names the face of a path).
ERROR_SHAPES: dict[str, Callable[[PromptCacheError], dict[str, Any]]] = {
    NATIVE: _native_error,
    OPENAI: openai_error,
    ANTHROPIC: anthropic_error,
    RESPONSES: responses_error,
}


def face_status(exc: PromptCacheError, face: str) -> int:
    """The status ``face`` answers ``exc`` with: its own, except that a field of the wrong type
    or value (``Unprocessable``) is a 400 everywhere but on the native face (which documents
    422): OpenAI and Anthropic answer 400 for it, and their SDKs raise ``BadRequestError``."""
    if isinstance(exc, Unprocessable) and face != NATIVE:
        return 400
    return exc.status


def error_response(exc: PromptCacheError, face: str = NATIVE) -> Response[str]:
    """``exc`` as ``face`` answers errors, with ``Retry-After`` on a 429 that says when."""
    retry = exc.retry_after if isinstance(exc, (RateLimited, UpstreamRateLimited)) else None
    headers = {RETRY_AFTER_HEADER: str(retry)} if retry is not None else None
    return json_response(face_status(exc, face), ERROR_SHAPES[face](exc), headers)


# ---------------------------------------------------------------- auth and limits
def admit(event: APIGatewayProxyEventV2, settings: Settings, limiter: RateLimiter) -> str:
    """Every route's preamble: the request's tenant (401/403 without a valid key), counted
    against its rate limit (429)."""
    tenant = authenticate(event, settings)
    limiter.check(tenant)
    return tenant


#: The header naming the tenant the admin key asks for on the chat routes.


def admit_chat(
    event: APIGatewayProxyEventV2, settings: Settings, limiter: RateLimiter
) -> tuple[str, bool]:
    """The chat routes' preamble: (tenant, whether the caller holds the admin key). A tenant's
    key chats as its tenant; the admin key as the configured tenant named by the
    ``X-Promptcache-Tenant`` header (and may then lower the threshold, ``check_threshold``)."""
    tenant = reader(event, settings)
    admin = tenant is None
    if tenant is None:
        asked = (event.headers.get(TENANT_HEADER.lower()) or "").strip()
        if asked not in set(settings.api_keys.values()):
            raise Unprocessable(
                f"the admin key chats for a tenant: send {TENANT_HEADER} with one of the "
                "configured tenants' names"
            )
        tenant = asked
    limiter.check(tenant)
    return tenant, admin


def check_threshold(
    requested: float | None, configured: float, *, admin: bool, param: str = "threshold"
) -> None:
    """A request's ``threshold`` may only raise the configured one, unless the admin key sent
    it: a lower one would let any caller fish for the nearest stored answer (422; 400 on the
    faces of other APIs). ``param``: where the request holds it."""
    if requested is not None and requested < configured and not admin:
        raise Unprocessable(
            f"'threshold' {requested:g} is below this cache's threshold {configured:g}: an "
            "override may only raise it (the admin key may lower it)",
            param=param,
        )


def authenticate(event: APIGatewayProxyEventV2, settings: Settings) -> str:
    """The tenant of the request's API key (``default`` when no keys are configured). The admin
    key is refused (403): it reads ``/stats`` and ``/v1/models`` (``reader``), chats for a
    tenant it names (``admit_chat``) and answers the admin routes."""
    tenant = reader(event, settings)
    if tenant is None:
        raise Forbidden(
            "the admin key reads /stats and /v1/models, chats for a tenant it names and "
            "answers /admin; send a tenant's key"
        )
    return tenant


def reader(event: APIGatewayProxyEventV2, settings: Settings) -> str | None:
    """Whose counters a ``/stats`` or ``/v1/models`` request may read: its key's tenant, or None
    for the admin key (every tenant's). ``default`` when no keys are configured.

    One canonical form: a single ``Authorization: Bearer <key>`` header, or a single
    ``x-api-key: <key>`` (Anthropic's clients), or both carrying the same key. Several of one
    (API Gateway joins repeated headers with commas, and so does the local server), or both with
    different keys, are a 400; a key with whitespace around or inside it a 401. Keys are kept as
    sha256 digests and compared as digests, in constant time; no key is ever logged."""
    if not settings.api_keys:
        return "default"
    token = _sent_key(event)
    if any(c.isspace() for c in token):
        raise Unauthorized("the API key must have no whitespace around or inside it")
    sent = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
    admin = bool(settings.admin_key) and hmac.compare_digest(sent, settings.admin_key)
    tenant = None
    for digest, name in settings.api_keys.items():  # no early exit: the time tells nothing
        if hmac.compare_digest(sent, digest):
            tenant = name
    if admin:
        return None
    if tenant is None:
        raise Forbidden("unknown API key")
    return tenant


def _sent_key(event: APIGatewayProxyEventV2) -> str:
    """The key the request sends, by ``Authorization: Bearer`` or ``x-api-key`` (both: the same
    key, else a 400)."""
    header = event.headers.get("authorization") or ""
    api_key = event.headers.get(API_KEY_HEADER.lower()) or ""
    for name, value in (("Authorization", header), (API_KEY_HEADER, api_key)):
        if "," in value:
            raise BadRequest(f"send one {name} header: this request has several")
    if not header:
        if not api_key:
            raise Unauthorized(_MISSING)
        return api_key
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(_MISSING)
    if api_key and api_key != token:
        raise BadRequest(
            f"send one API key: this request's Authorization and {API_KEY_HEADER} headers differ"
        )
    return token


_MISSING = f"missing API key: send 'Authorization: Bearer <key>' or '{API_KEY_HEADER}: <key>'"


# ---------------------------------------------------------------- body parsing
def json_body(
    event: APIGatewayProxyEventV2, settings: Settings, *, limit: int | None = None
) -> dict[str, Any]:
    """The request's JSON object, after content-type and size checks (``limit``: the largest
    body accepted, default PROMPTCACHE_MAX_BODY_BYTES)."""
    return sized_json_body(event, settings, limit=limit)[0]


def sized_json_body(
    event: APIGatewayProxyEventV2, settings: Settings, *, limit: int | None = None
) -> tuple[dict[str, Any], int]:
    """``json_body``, with the body's size in bytes (read once: a face compares it with the
    cache's own limit without decoding the body again)."""
    content_type = (event.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {content_type or 'nothing'!r}"
        )
    raw = event.body or ""
    try:
        data = base64.b64decode(raw) if event.is_base64_encoded else raw.encode("utf-8")
    except (ValueError, UnicodeEncodeError):  # binascii.Error is a ValueError
        raise BadRequest("the body is neither valid base64 nor UTF-8 text") from None
    most = settings.max_body_bytes if limit is None else limit
    if len(data) > most:
        raise PayloadTooLarge(
            f"body is {len(data)} bytes; the limit is {most}"
            + (" (PROMPTCACHE_MAX_BODY_BYTES)" if limit is None else "")
        )
    if not data.strip():
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        body = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    _check_strings(body)
    if not isinstance(body, dict):
        raise Unprocessable("the body must be a JSON object")
    return body, len(data)


#: The deepest nesting of arrays and objects a body may have (a chat request needs about 6).
MAX_JSON_DEPTH = 64
_TOO_DEEP = f"the body is nested too deeply: at most {MAX_JSON_DEPTH} levels of arrays and objects"


def _no_constant(name: str) -> Any:
    """``json.loads`` accepts NaN, Infinity and -Infinity, which JSON does not: refused."""
    raise BadRequest(f"the body is not valid JSON: {name} is not a JSON number")


def _encodable(text: str) -> bool:
    if text.isascii():  # most prompts: no copy made
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _where(path: list[str | int]) -> str:
    """A field's place for error messages: ``messages[0].content``, or ``the body``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return f"'{out}'" if out else "the body"


def _check_strings(body: Any) -> None:
    """Every string of the body (keys and values, at any depth) encodable as UTF-8: JSON escapes
    can spell lone surrogates (``"\\ud800"``), which no store, model or response can carry.
    Also bounds the nesting. Iterative, so depth costs no stack."""
    stack: list[tuple[Any, list[str | int]]] = [(body, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, (dict, list)) and len(path) >= MAX_JSON_DEPTH:
            raise BadRequest(_TOO_DEEP)
        if isinstance(value, str):
            if not _encodable(value):
                raise BadRequest(f"{_where(path)} contains an unpaired surrogate (not UTF-8)")
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _encodable(key):
                    raise BadRequest(
                        f"a field name in {_where(path)} contains an unpaired surrogate (not UTF-8)"
                    )
                stack.append((item, [*path, key]))
        elif isinstance(value, list):
            stack.extend((item, [*path, i]) for i, item in enumerate(value))


def number(
    body: dict[str, Any], name: str, lo: float, hi: float, *, param: str | None = None
) -> float | None:
    """``body[name]``, a number from ``lo`` to ``hi``, or None. ``param``: the field's place in
    the request for error bodies (``promptcache.ttl``), default ``name``."""
    value = body.get(name)
    if value is None:
        return None
    where = param or name
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unprocessable(f"'{name}' must be a number", param=where)
    # An int is compared exactly (float() of a 400-digit int overflows); a float must be finite.
    if isinstance(value, float) and not math.isfinite(value):
        raise Unprocessable(f"'{name}' must be a finite number", param=where)
    if not lo <= value <= hi:
        raise Unprocessable(
            f"'{name}' must be between {lo} and {hi}, got {_shown(value)}", param=where
        )
    return float(value)


def _shown(value: float) -> str:
    """A number for an error message: huge ints are not spelled out digit by digit."""
    text = str(value)
    return text if len(text) <= 32 else f"{text[:12]}... ({len(text)} digits)"


def content(value: Any, where: str, settings: Settings) -> str:
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
            Message(role, content(item.get("content"), f"messages[{i}].content", settings))
        )
    if messages[-1].role != "user":
        raise Unprocessable("the last message must have role 'user'")
    return tuple(messages)
