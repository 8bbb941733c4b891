"""The service handle: what every route needs, built once per process by the composition root
(``runtime.service()``) and passed whole, so a route is one line and a face reads its cache, its
settings and its rate limiter from one frozen value."""

from __future__ import annotations

from dataclasses import dataclass

from ..core import PromptCache
from ..settings import Settings
from .ratelimit import RateLimiter


@dataclass(frozen=True)
class Service:
    """The cache, the parsed settings and the per-tenant rate limiter of one process."""

    cache: PromptCache
    settings: Settings
    limiter: RateLimiter
