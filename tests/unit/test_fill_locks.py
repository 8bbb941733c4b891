"""The stores' fill locks: what cross-process single-flight stands on."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptcache.adapters.memory import MemoryStore
from promptcache.adapters.sqlite import SQLiteStore


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    clock = Clock()
    if request.param == "memory":
        one = MemoryStore(clock=clock)
        return one, one, clock
    # two connections to one file: two processes sharing the store
    path = tmp_path / "cache.sqlite3"
    return SQLiteStore(path, clock=clock), SQLiteStore(path, clock=clock), clock


def test_one_holder_at_a_time_until_release_or_expiry(stores) -> None:  # type: ignore[no-untyped-def]
    a, b, clock = stores
    assert a.try_lock("fill:k", "ta", 10)
    assert not b.try_lock("fill:k", "tb", 10)
    assert b.try_lock("fill:other", "tb", 10)  # locks are per name
    b.unlock("fill:k", "tb")  # not its lock: nothing happens
    assert not b.try_lock("fill:k", "tb", 10)
    a.unlock("fill:k", "ta")
    assert b.try_lock("fill:k", "tb", 10)
    clock.now += 11  # the holder died: the lock expires by itself
    assert a.try_lock("fill:k", "ta", 10)
    b.unlock("fill:k", "tb")  # a late release of an expired lock frees nothing
    assert not b.try_lock("fill:k", "tc", 10)
