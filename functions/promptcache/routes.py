"""Every route of the product, the route a request path falls under, and the headers that say what
the cache did.

Pure standard library: the infrastructure (API Gateway routes), the local server (which handler
module serves a path) and the handlers all read this table; importing it costs nothing.
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
    ("GET", "/v1/models"): "chat",
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
