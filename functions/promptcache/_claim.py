"""The claim step: which request asks the model for a prompt that missed.

One model call per distinct prompt, even under concurrency, for plain and streamed misses alike:

- in this process, single-flight on the exact key (``_singleflight``): the first request leads,
  identical ones arriving meanwhile wait for its answer;
- across processes sharing the store (Lambda containers, several servers), a fill lock per
  prompt (``Locks``): the leader that takes it asks the model; a leader that finds it taken
  waits, bounded, for the holder's entry, then asks the model itself. Lock trouble never blocks
  an answer (it is logged, and the model is asked).

``Claims.claim`` answers either a ``Filled`` (someone else answered: share it) or a ``Lead``
(answer it, settle the lead, end it). Both chat paths use it; a policy change is made here.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from ._boundary import GuardedLocks
from ._errors import BackendError
from ._protocols import Locks, Store
from ._query import Query
from ._singleflight import Lease, SingleFlight
from ._types import CacheMode, Completion, Entry, Usage

log = logging.getLogger("promptcache")

#: The reason given when another process answered the same prompt meanwhile.
FROM_PEER = "answered by an identical request in another process"

#: How long a shared answer stays available after its flight ended, for a request whose lookup
#: ran while the flight was running but that reaches it just after it ended.
LINGER_SECONDS = 5.0


def lock_ttl(upstream_timeout: float) -> float:
    """How long a fill lock lives: past the model's timeout, then it expires by itself (a holder
    that died frees it)."""
    return upstream_timeout + 5.0


@dataclass(frozen=True, slots=True)
class Filled:
    """How a miss was answered: the model's completion, the entry now stored for it (None: not
    stored) and, if not, why."""

    completion: Completion
    entry: Entry | None = None
    reason: str | None = None


class Lead:
    """The duty to answer a query: ``resolve`` it with the answer, then ``end`` it (which frees
    the fill lock). Used as a context manager, an exception settles it: a closed stream
    (GeneratorExit) abandons it, and the waiting requests try again; any other exception fails
    it, and they get that exception. ``Lead()`` leads nothing (a bypass): every call is a no-op.
    """

    __slots__ = ("_lease", "_release")

    def __init__(
        self, lease: Lease[Filled] | None = None, release: Callable[[], None] | None = None
    ) -> None:
        self._lease = lease
        self._release = release

    def resolve(self, filled: Filled) -> None:
        if self._lease is not None:
            self._lease.resolve(filled)

    def end(self) -> None:
        """Idempotent. An unsettled lead is abandoned (nothing was produced for anyone)."""
        if self._lease is not None:
            self._lease.abandon()  # a no-op once settled
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Lead:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and self._lease is not None:
            if isinstance(exc, GeneratorExit):
                self._lease.abandon()
            else:
                self._lease.fail(exc)
        self.end()


class Claims:
    """Who answers each missed prompt, in this process and across the processes sharing ``locks``.

    ``lock_ttl`` and ``wait``: how long a fill lock lives and how long another process's
    identical miss is waited for.
    """

    def __init__(
        self,
        *,
        locks: GuardedLocks,
        clock: Callable[[], float],
        lock_ttl: float,
        wait: float,
    ) -> None:
        self.locks = locks
        self.lock_ttl = lock_ttl
        self.wait = wait
        self._clock = clock
        self._flight: SingleFlight[Filled] = SingleFlight(
            linger=LINGER_SECONDS,
            reusable=lambda f: f.entry is not None and not f.entry.expired(self._clock()),
        )

    def claim(self, query: Query, peek: Callable[[Query], Entry | None]) -> Lead | Filled:
        """Lead the answer to ``query``, or the answer someone else gave meanwhile. Raises the
        exception of an identical request's failed answer (they share it). ``peek`` reads the
        query's live stored entry (raises StoreError): what a request that waited for another
        process's fill lock looks for. ``cache=refresh``
        neither reuses a recent answer nor takes the fill lock: it is asked to replace it."""
        use = query.mode is CacheMode.USE
        lease, shared = self._flight.lead(query.key, reuse_recent=use)
        if lease is None:
            assert shared is not None
            return shared
        if not use:
            return Lead(lease)
        try:
            peer, release = self._lock_or_wait(query, peek)
        except BaseException:
            lease.abandon()
            raise
        if peer is not None:
            filled = Filled(Completion(peer.response, peer.model, Usage()), peer, FROM_PEER)
            lease.resolve(filled)
            return filled
        return Lead(lease, release)

    def forget(self) -> None:
        """Drop the recent shared answers (the entries they name may be gone)."""
        self._flight.forget()

    def _lock_or_wait(
        self, query: Query, peek: Callable[[Query], Entry | None]
    ) -> tuple[Entry | None, Callable[[], None] | None]:
        """(the entry another process stored meanwhile, or None; the release of the fill lock
        this process now holds, or None)."""
        if self.locks.inner is None:
            return None, None
        name, token = f"fill:{query.key}", uuid.uuid4().hex
        release = functools.partial(self._unlock, name, token)
        deadline = time.monotonic() + self.wait
        pause, waited, locked = 0.02, False, False
        while True:
            try:
                locked = self.locks.try_lock(name, token, self.lock_ttl)
                if locked and not waited:
                    return None, release  # the usual miss: the lookup just found nothing
                # waited, then got the lock: the holder may have stored the answer and left
                exact = peek(query)
                if exact is not None and not exact.expired(self._clock()):
                    if locked:
                        release()
                    return exact, None
                if locked:
                    return None, release
            except BackendError as exc:
                log.warning("fill lock unavailable, asking the model: %s", exc)
                return None, release if locked else None
            if time.monotonic() >= deadline:
                return None, None
            time.sleep(pause)
            pause, waited = min(pause * 2, 0.5), True

    def _unlock(self, name: str, token: str) -> None:
        try:
            self.locks.unlock(name, token)
        except BackendError as exc:  # it expires by itself
            log.warning("releasing the fill lock failed: %s", exc)


def locks_of(store: Store) -> Locks | None:
    """The store's own fill locks, when it has them."""
    return store if isinstance(store, Locks) else None
