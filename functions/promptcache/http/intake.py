"""What every face reads the same way, whatever its dialect: the body up to what the platform
carries, the cache's own ``promptcache`` options, the cache's size limits, and the end user.

- ``MAX_FORWARD_BYTES``: the largest body a face forwards (what a Lambda function takes in:
  6 MB); past it, 413 in the face's shape. A body over PROMPTCACHE_MAX_BODY_BYTES but under it is
  forwarded and answered uncached (bypass ``oversize``).
- ``cache_fields``: ``"promptcache": {"cache", "threshold", "ttl", "semantic"}`` in the body,
  the same object on every face (a wrong one is ``Unprocessable`` naming ``promptcache.X``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from .._errors import Unprocessable
from .._keys import END_USER
from .._types import CacheMode, Message
from ..settings import Settings
from .wire import number, sized_json_body

MAX_FORWARD_BYTES = 6 * 1024 * 1024
_CACHE_FIELDS = ("cache", "threshold", "ttl", "semantic")


def read_body(event: APIGatewayProxyEventV2, settings: Settings) -> tuple[dict[str, Any], bool]:
    """The JSON body (413 past ``MAX_FORWARD_BYTES``), and whether it is over the cache's own
    limit (PROMPTCACHE_MAX_BODY_BYTES): forwarded, not stored."""
    body, size = sized_json_body(event, settings, limit=MAX_FORWARD_BYTES)
    return body, size > settings.max_body_bytes


@dataclass(frozen=True, slots=True)
class CacheFields:
    """The request's own ``promptcache`` options. ``semantic`` is what the request allows (it can
    only narrow what the operator allows: ``semantic_for``)."""

    mode: CacheMode = CacheMode.USE
    threshold: float | None = None
    ttl: int | None = None
    semantic: bool = True

    def semantic_for(self, settings: Settings) -> bool:
        return settings.semantic_tools and self.semantic


def cache_fields(value: Any) -> CacheFields:
    """``body["promptcache"]`` read; raises Unprocessable naming the field."""
    if value is None:
        return CacheFields()
    if not isinstance(value, dict):
        raise Unprocessable(
            "'promptcache' must be an object with cache, threshold, ttl and/or semantic",
            param="promptcache",
        )
    unknown = sorted(set(value) - set(_CACHE_FIELDS))
    if unknown:
        raise Unprocessable(
            f"unknown field(s) in 'promptcache': {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(_CACHE_FIELDS))}",
            param=f"promptcache.{unknown[0]}",
        )
    try:
        mode = CacheMode(value.get("cache", "use"))
    except ValueError:
        raise Unprocessable(
            "'promptcache.cache' must be one of use, skip, refresh", param="promptcache.cache"
        ) from None
    semantic = value.get("semantic", True)
    if not isinstance(semantic, bool):
        raise Unprocessable(
            "'promptcache.semantic' must be true or false", param="promptcache.semantic"
        )
    ttl = number(value, "ttl", 0, 10 * 365 * 86400, param="promptcache.ttl")
    return CacheFields(
        mode=mode,
        threshold=number(value, "threshold", 0.0, 1.0, param="promptcache.threshold"),
        ttl=None if ttl is None else int(ttl),
        semantic=semantic,
    )


def oversize(messages: tuple[Message, ...], settings: Settings) -> bool:
    """Over the cache's limits (PROMPTCACHE_MAX_MESSAGES, PROMPTCACHE_MAX_PROMPT_CHARS): such a
    request is forwarded and answered uncached."""
    return len(messages) > settings.max_messages or any(
        len(m.content) > settings.max_prompt_chars for m in messages
    )


def end_user(forward: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The end user's identifiers among the forwarded fields, where the operator keys on them
    (PROMPTCACHE_KEY_USER): ``ChatRequest.end_user``."""
    return {k: forward[k] for k in END_USER if k in forward} if settings.key_user else {}
