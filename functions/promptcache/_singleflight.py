"""Single-flight: concurrent callers with the same key share one execution.

Two ways to lead a flight: ``do(key, fn)`` runs ``fn`` in the caller; ``lead(key)`` hands the
caller a ``Lease`` to settle later (a streamed answer settles only when its stream ends). A leader
that *abandons* (a cancelled stream) produced nothing for anyone: its waiting followers do not
fail, they try again and one of them leads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("done", "result", "error", "abandoned")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.abandoned = False


class Lease(Generic[T]):
    """A leader's handle on its flight. The first of resolve/fail/abandon settles it; later calls
    are no-ops, so ``abandon()`` in a ``finally`` is a safe backstop."""

    __slots__ = ("_flight", "_key", "_call")

    def __init__(self, flight: SingleFlight[T], key: str, call: _Call[T]) -> None:
        self._flight = flight
        self._key = key
        self._call = call

    @property
    def settled(self) -> bool:
        return self._call.done.is_set()

    def resolve(self, result: T) -> None:
        self._settle(result=result)

    def fail(self, error: BaseException) -> None:
        self._settle(error=error)

    def abandon(self) -> None:
        self._settle(abandoned=True)

    def _settle(
        self,
        *,
        result: T | None = None,
        error: BaseException | None = None,
        abandoned: bool = False,
    ) -> None:
        with self._flight._lock:
            if self._call.done.is_set():
                return
            self._call.result, self._call.error, self._call.abandoned = result, error, abandoned
            if self._flight._calls.get(self._key) is self._call:
                del self._flight._calls[self._key]
            if error is None and not abandoned:
                self._flight._remember(self._key, result)
            self._call.done.set()


class SingleFlight(Generic[T]):
    """``linger``: a result stays available that many seconds after its flight ends, for callers
    that decided to call while the flight was still running but arrive just after it ended."""

    def __init__(
        self,
        linger: float = 0.0,
        reusable: Callable[[T], bool] = lambda result: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._reusable = reusable
        self._calls: dict[str, _Call[T]] = {}
        self._linger = linger
        self._clock = clock
        self._recent: dict[str, tuple[float, T | None]] = {}

    def _remember(self, key: str, result: T | None) -> None:  # called under self._lock
        if self._linger <= 0:
            return
        now = self._clock()
        for old in [k for k, (until, _) in self._recent.items() if until <= now]:
            del self._recent[old]
        self._recent[key] = (now + self._linger, result)

    def forget(self) -> None:
        """Drop lingering results (the data they came from is gone)."""
        with self._lock:
            self._recent.clear()

    def do(self, key: str, fn: Callable[[], T], *, reuse_recent: bool = True) -> tuple[T, bool]:
        """Run ``fn`` once for all concurrent callers of ``key``; returns (result, shared)."""
        lease, result = self.lead(key, reuse_recent=reuse_recent)
        if lease is None:
            return result, True  # type: ignore[return-value]
        try:
            value = fn()
        except BaseException as exc:
            lease.fail(exc)
            raise
        lease.resolve(value)
        return value, False

    def lead(self, key: str, *, reuse_recent: bool = True) -> tuple[Lease[T] | None, T | None]:
        """Become the leader of ``key`` -> (lease, None), or wait for the current leader ->
        (None, its result). Raises the leader's error; tries again if the leader abandons."""
        while True:
            with self._lock:
                recent = self._recent.get(key) if reuse_recent else None
                if (
                    recent is not None and recent[0] > self._clock() and self._reusable(recent[1])  # type: ignore[arg-type]
                ):
                    return None, recent[1]
                call = self._calls.get(key)
                if call is None:
                    call = self._calls[key] = _Call()
                    return Lease(self, key, call), None
            call.done.wait()
            if call.abandoned:
                continue
            if call.error is not None:
                raise call.error
            return None, call.result
