"""The HTTP contract: every route of the product, the route a request path falls under, the API
face that answers it (and so the dialect of its errors), every header name the product reads or
writes, and the one CORS list.

Pure standard library: the infrastructure (API Gateway routes and CORS, the streaming function's
URL), the local server (which handler module serves a path) and the HTTP wing all read it;
importing it costs nothing.
"""

from __future__ import annotations

import re

#: Every route of the product: (method, path) -> the handler module serving it. The local server
#: and the infrastructure both read this table.
ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/chat"): "chat",
    ("GET", "/stats"): "stats",
    ("GET", "/metrics"): "stats",
    ("GET", "/dashboard"): "stats",
    ("GET", "/dashboard.js"): "stats",
    ("GET", "/dashboard.css"): "stats",
    ("GET", "/health"): "health",
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/messages"): "chat",
    ("POST", "/v1/messages/count_tokens"): "chat",
    ("GET", "/v1/models"): "chat",
    ("POST", "/v1/responses"): "chat",
    ("GET", "/v1/responses/{id}"): "chat",
    ("GET", "/entries/{id}"): "chat",
    ("DELETE", "/entries/{id}"): "chat",
    ("GET", "/admin/entries"): "chat",
    ("POST", "/admin/flush"): "chat",
    ("POST", "/admin/forget"): "chat",
}


def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$")


_TEMPLATES = {path: _template(path) for _, path in ROUTES}


def route_path(path: str) -> str | None:
    """The ROUTES path (``/entries/{id}`` for ``/entries/ab12...``) a request path falls under."""
    return next((route for route, pattern in _TEMPLATES.items() if pattern.match(path)), None)


#: The API faces: each answers its routes, and its errors, in its own dialect.
NATIVE, OPENAI, RESPONSES, ANTHROPIC = "native", "openai", "responses", "anthropic"
#: The routes of a face other than the native one (``/chat``, the entries, stats, admin...).
FACES: dict[str, str] = {
    "/v1/chat/completions": OPENAI,
    "/v1/models": OPENAI,
    "/v1/messages": ANTHROPIC,
    "/v1/messages/count_tokens": ANTHROPIC,
    "/v1/responses": RESPONSES,
    "/v1/responses/{id}": RESPONSES,
}
#: Where a path under no route is answered (its 404 or 405): the face of its prefix.
FACE_PREFIXES: tuple[tuple[str, str], ...] = (("/v1/messages/", ANTHROPIC), ("/v1/", OPENAI))


def face_of(path: str) -> str:
    """The face whose dialect answers a request for ``path`` (errors included)."""
    route = route_path(path)
    if route is not None:
        return FACES.get(route, NATIVE)
    return next((face for prefix, face in FACE_PREFIXES if path.startswith(prefix)), NATIVE)


#: The cache's decision, on every chat answer (and exposed to browsers by CORS).
TIER_HEADER = "X-Promptcache-Tier"
SIMILARITY_HEADER = "X-Promptcache-Similarity"
ENTRY_HEADER = "X-Promptcache-Entry"
#: Why an answer was not stored (a bypass): one of ``_types.BYPASS_REASONS``, ``cache=skip``, or
#: a backend failure's error code.
BYPASS_HEADER = "X-Promptcache-Bypass"
#: Where the answer's time went: lookup, embed, verify, model (milliseconds, W3C Server Timing).
TIMING_HEADER = "Server-Timing"
TIMING_PARTS = ("lookup", "embed", "verify", "model")
RESULT_HEADERS = (TIER_HEADER, SIMILARITY_HEADER, ENTRY_HEADER, BYPASS_HEADER, TIMING_HEADER)
#: How long to wait before retrying a 429 (the rate limit's or the model's).
RETRY_AFTER_HEADER = "Retry-After"
#: The admin key chats for the tenant this header names.
TENANT_HEADER = "X-Promptcache-Tenant"
#: What clients authenticate with: ``Authorization: Bearer KEY`` or ``x-api-key: KEY`` (curl and
#: older Anthropic clients), on every route; ``anthropic-version`` is accepted, never required.
AUTHORIZATION_HEADER = "Authorization"
API_KEY_HEADER = "X-Api-Key"
ANTHROPIC_VERSION_HEADER = "Anthropic-Version"

#: CORS, the one list: the request headers a browser may send and the answer headers its script
#: may read, on the local server and every deployed entry point alike.
CORS_ALLOW_HEADERS = (
    AUTHORIZATION_HEADER,
    "Content-Type",
    TENANT_HEADER,
    API_KEY_HEADER,
    ANTHROPIC_VERSION_HEADER,
)
#: On every answer: API Gateway's id of the request (the SDKs show it on errors; the access log
#: and the function's log carry the same id).
REQUEST_ID_HEADER = "X-Request-Id"
CORS_EXPOSE_HEADERS = (*RESULT_HEADERS, RETRY_AFTER_HEADER, REQUEST_ID_HEADER)
