"""The per-tenant rate limit, counted in a store's rate windows (shared by every process)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from .._boundary import GuardedRateWindows
from .._errors import RateLimited, StoreError
from .._protocols import RateWindows

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
        # None: nothing to count in, no limit. Wrapped once: any failure is a StoreError.
        self._windows = None if windows is None else GuardedRateWindows(windows)
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
        except StoreError as exc:
            log.warning("rate limit not counted (the request goes through): %s", exc.message)
            return
        if current + previous * (1.0 - into / 60.0) > self.per_minute:
            raise RateLimited(
                f"more than {self.per_minute} requests per minute for tenant {tenant!r} "
                "(PROMPTCACHE_RATE_LIMIT_PER_MINUTE); slow down",
                retry_after=retry_after(current, previous, into, self.per_minute),
            )


def retry_after(current: int, previous: int, into: float, per_minute: int) -> int:
    """Whole seconds (at least 1) until one more request fits the sliding window, if no other
    request comes: ``current`` and ``previous`` are this and the last minute's counts, ``into``
    the seconds elapsed of this minute. The estimate ``current + previous * (1 - into / 60)``
    must leave room for one more request."""
    room = per_minute - 1 - current  # what the previous minute's weighted share may still be
    if room >= 0:
        # within this minute, once the previous minute's share has shrunk to the room left
        at = 60.0 * (1.0 - room / previous) if previous else 0.0
        if at <= 60.0:
            return max(1, math.ceil(max(0.0, at - into) - 1e-9))
    # not before the next minute, where this minute's count is the one fading out
    at = 60.0 * (1.0 - (per_minute - 1) / current) if current else 0.0
    return max(1, math.ceil(60.0 - into + max(0.0, at) - 1e-9))
