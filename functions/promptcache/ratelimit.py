"""The per-tenant rate limit, counted in a store's rate windows (shared by every process)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ._errors import RateLimited
from ._protocols import RateWindows

log = logging.getLogger("promptcache")


class RateLimiter:
    """At most ``per_minute`` requests per tenant, counted in the store: every process sharing it
    (Lambda containers, local servers) draws on one budget.

    A sliding one-minute window, estimated from two fixed ones (this minute's count plus the
    previous minute's, weighted by how much of it still lies within the last 60 s): one store round
    trip, no burst of twice the limit at a minute's turn. Fails open: a store that cannot count
    lets the request through (the cache itself may still answer it)."""

    def __init__(
        self,
        per_minute: int,
        windows: RateWindows | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_minute = per_minute
        self._windows = windows  # None: nothing to count in, no limit
        self._clock = clock  # wall clock: shared by every process counting in the store

    def check(self, tenant: str) -> None:
        if self.per_minute <= 0 or self._windows is None:
            return
        now = self._clock()
        minute, into = divmod(now, 60.0)
        try:
            current, previous = self._windows.count_window(
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
