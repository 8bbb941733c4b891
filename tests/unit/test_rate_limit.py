"""The per-tenant rate limit: a sliding minute estimated from two windows counted in the store."""

from __future__ import annotations

import logging

import pytest

from promptcache._errors import RateLimited
from promptcache.adapters.memory import MemoryStore
from promptcache.http.ratelimit import RateLimiter


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def admitted(limiter: RateLimiter, tenant: str, n: int) -> list[bool]:
    out = []
    for _ in range(n):
        try:
            limiter.check(tenant)
            out.append(True)
        except RateLimited:
            out.append(False)
    return out


def test_sliding_minute_across_window_turns() -> None:
    clock = Clock(60 * 100 + 30)
    store = MemoryStore(clock=clock)
    limiter = RateLimiter(5, store, clock=clock)
    assert admitted(limiter, "acme", 6) == [True] * 5 + [False]  # 6 counted
    assert admitted(limiter, "other", 5) == [True] * 5  # tenants apart
    clock.now = 60 * 101  # the minute turned: the last one still weighs fully
    assert admitted(limiter, "acme", 1) == [False]  # 1 + 6 x 1.0 > 5 (counted too)
    clock.now = 60 * 101 + 45  # a quarter of minute 100 still lies within the last 60 s
    assert admitted(limiter, "acme", 3) == [True, True, False]  # 6 x 0.25 + 2, 3 ok; + 4 not
    clock.now = 60 * 103  # two minutes on: nothing of minute 101 counts
    assert admitted(limiter, "acme", 5) == [True] * 5


def test_the_429_names_the_tenant_and_the_setting() -> None:
    clock = Clock(60 * 300)
    store = MemoryStore(clock=clock)
    limiter = RateLimiter(1, store, clock=clock)
    limiter.check("acme")
    with pytest.raises(RateLimited, match="1 requests per minute for tenant 'acme'") as caught:
        limiter.check("acme")
    assert "PROMPTCACHE_RATE_LIMIT_PER_MINUTE" in caught.value.message


def test_processes_sharing_a_store_share_the_budget() -> None:
    clock = Clock(60 * 200 + 10)
    store = MemoryStore(clock=clock)
    one, two = RateLimiter(4, store, clock=clock), RateLimiter(4, store, clock=clock)
    assert admitted(one, "acme", 2) + admitted(two, "acme", 3) == [True] * 4 + [False]


def test_zero_means_no_limit_and_no_store_call() -> None:
    class Untouchable(MemoryStore):
        def count_window(self, current: str, previous: str, ttl: float) -> tuple[int, int]:
            raise AssertionError("counted although the limit is off")

    assert admitted(RateLimiter(0, Untouchable()), "acme", 50) == [True] * 50


def test_a_store_that_cannot_count_lets_requests_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Down(MemoryStore):
        def count_window(self, current: str, previous: str, ttl: float) -> tuple[int, int]:
            raise OSError("connection refused")

    with caplog.at_level(logging.WARNING, logger="promptcache"):
        assert admitted(RateLimiter(1, Down()), "acme", 3) == [True] * 3
    assert "rate limit not counted" in caplog.text and "connection refused" in caplog.text


def test_without_rate_windows_there_is_no_limit() -> None:
    assert admitted(RateLimiter(1, None), "acme", 5) == [True] * 5
