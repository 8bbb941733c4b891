"""The backends as the core sees them: every failure is the backend's own BackendError.

PromptCache wraps each injected backend once, here, so that fail-open holds by construction and
not by the habit of each call site: whatever a backend method raises (an adapter's StoreError,
or a bug's KeyError, or a driver's OSError) leaves the wrapper as that backend's error

    Store, Locks, RateWindows,
    Documents, Index          -> StoreError    Embedder -> EmbedderError
    Stats                     -> StatsError    LLM      -> UpstreamError

with the original chained (``raise ... from exc``). The core then catches only BackendError:
StoreError and EmbedderError bypass the cache, StatsError is logged, UpstreamError is the HTTP
error it maps to (502/504/...). BaseExceptions that are not Exceptions (KeyboardInterrupt, a
closed generator's GeneratorExit) pass through untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Generator, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ._errors import (
    BackendError,
    EmbedderError,
    RequestError,
    StatsError,
    StoreError,
    UpstreamError,
    UpstreamNotConfigured,
)
from ._protocols import (
    LLM,
    Documents,
    Embedder,
    Index,
    Locks,
    ProbedLLM,
    RateWindows,
    Stats,
    Store,
    StreamingLLM,
)
from ._types import ChatRequest, Completion, Cursor, Entry, SyncResult, Vector


@contextlib.contextmanager
def failures_as(
    error: type[BackendError], what: str, *, passing: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Inside: ``error`` (and ``passing``) pass as they are; any other Exception becomes
    ``error``, chained."""
    try:
        yield
    except (error, *passing):
        raise
    except Exception as exc:
        raise error(f"{what} failed: {type(exc).__name__}: {exc}") from exc


class GuardedStore:
    """A Store whose every failure is a StoreError."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def sync(self, namespace: str, exact_key: str | None, cursor: Cursor | None) -> SyncResult:
        with failures_as(StoreError, "store sync"):
            return self.inner.sync(namespace, exact_key, cursor)

    def get(self, entry_id: str) -> Entry | None:
        with failures_as(StoreError, "store get"):
            return self.inner.get(entry_id)

    def put(self, entry: Entry, vector: Vector | None) -> None:
        with failures_as(StoreError, "store put"):
            self.inner.put(entry, vector)

    def delete(self, entry_id: str) -> bool:
        with failures_as(StoreError, "store delete"):
            return self.inner.delete(entry_id)

    def entries(self, offset: int, limit: int) -> list[Entry]:
        with failures_as(StoreError, "store entries"):
            return self.inner.entries(offset, limit)

    def count(self) -> int:
        with failures_as(StoreError, "store count"):
            return self.inner.count()

    def clear(self) -> int:
        with failures_as(StoreError, "store clear"):
            return self.inner.clear()

    def ping(self) -> None:
        with failures_as(StoreError, "store ping"):
            self.inner.ping()


class GuardedIndex:
    """An Index whose every failure is a StoreError (the index is part of the store's tier)."""

    def __init__(self, inner: Index) -> None:
        self.inner = inner

    def add(self, namespace: str, entry_id: str, vector: Vector, expires_at: float | None) -> None:
        with failures_as(StoreError, "index add"):
            self.inner.add(namespace, entry_id, vector, expires_at)

    def add_many(self, namespace: str, items: Sequence[tuple[str, Vector, float | None]]) -> None:
        with failures_as(StoreError, "index add"):
            self.inner.add_many(namespace, items)

    def remove(self, namespace: str, entry_id: str) -> None:
        with failures_as(StoreError, "index remove"):
            self.inner.remove(namespace, entry_id)

    def search(
        self, namespace: str, vector: Vector, *, k: int, min_score: float, now: float
    ) -> list[tuple[str, float]]:
        with failures_as(StoreError, "index search"):
            return self.inner.search(namespace, vector, k=k, min_score=min_score, now=now)

    def clear(self) -> None:
        with failures_as(StoreError, "index clear"):
            self.inner.clear()

    def ping(self) -> None:
        with failures_as(StoreError, "index ping"):
            self.inner.ping()


class GuardedLocks:
    """Locks whose every failure is a StoreError (the locks live in the store). ``inner`` None:
    there are none (a store without locks): each process answers its own misses."""

    def __init__(self, inner: Locks | None) -> None:
        self.inner = inner

    def try_lock(self, name: str, token: str, ttl: float) -> bool:
        with failures_as(StoreError, "fill lock"):
            return self.inner is not None and bool(self.inner.try_lock(name, token, ttl))

    def unlock(self, name: str, token: str) -> None:
        with failures_as(StoreError, "fill lock release"):
            if self.inner is not None:
                self.inner.unlock(name, token)


class GuardedRateWindows:
    """Rate windows whose every failure is a StoreError (the windows live in the store)."""

    def __init__(self, inner: RateWindows) -> None:
        self.inner = inner

    def count_window(self, current: str, previous: str, ttl: float) -> tuple[int, int]:
        with failures_as(StoreError, "rate window"):
            now, before = self.inner.count_window(current, previous, ttl)
            return int(now), int(before)


class GuardedDocuments:
    """Kept documents whose every failure is a StoreError (they live in the store). ``inner``
    None: the store keeps none, and keeping one is a StoreError saying so."""

    def __init__(self, inner: Documents | None) -> None:
        self.inner = inner

    def _documents(self) -> Documents:
        if self.inner is None:
            raise StoreError("this store keeps no documents (it does not implement Documents)")
        return self.inner

    def put_document(self, name: str, document: Mapping[str, Any], ttl: float | None) -> None:
        with failures_as(StoreError, "document put"):
            self._documents().put_document(name, document, ttl)

    def get_document(self, name: str) -> dict[str, Any] | None:
        with failures_as(StoreError, "document get"):
            found = self._documents().get_document(name)
            return None if found is None else dict(found)


class GuardedEmbedder:
    """An Embedder whose every failure is an EmbedderError, including an answer that is not one
    float32 vector of ``dim`` per text (the index would choke on it later, outside any guard)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner

    @property
    def id(self) -> str:
        return self.inner.id

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def default_threshold(self) -> float:
        return self.inner.default_threshold

    @property
    def max_input_chars(self) -> int:
        return self.inner.max_input_chars

    def embed(self, texts: Sequence[str]) -> Vector:
        with failures_as(EmbedderError, "embedder"):
            vectors = np.asarray(self.inner.embed(texts), dtype=np.float32)
            if vectors.shape != (len(texts), self.inner.dim):
                raise EmbedderError(
                    f"embedder answered shape {vectors.shape} for {len(texts)} texts of "
                    f"dimension {self.inner.dim}"
                )
            return vectors


class GuardedStats:
    """Stats whose every failure is a StatsError."""

    def __init__(self, inner: Stats) -> None:
        self.inner = inner

    def add(self, counters: Mapping[str, float]) -> None:
        with failures_as(StatsError, "stats add"):
            self.inner.add(counters)

    def read(self) -> dict[str, float]:
        with failures_as(StatsError, "stats read"):
            return dict(self.inner.read())

    def reset(self) -> None:
        with failures_as(StatsError, "stats reset"):
            self.inner.reset()

    def drop(self, names: Collection[str]) -> None:
        with failures_as(StatsError, "stats drop"):
            self.inner.drop(names)


class GuardedLLM:
    """The model as the core sees it: every failure an UpstreamError, and it always streams (a
    model that cannot answers in one delta). ``inner`` None: no model is configured, and every
    call raises UpstreamNotConfigured; ``hint`` (from the composition root) says how to
    configure one."""

    def __init__(self, inner: LLM | None, hint: str = "") -> None:
        self.inner = inner
        self.hint = hint

    @property
    def missing(self) -> str:
        """Why a miss cannot be answered when no model is configured."""
        why = "no LLM upstream is configured, so a cache miss cannot be answered"
        return f"{why}: {self.hint}" if self.hint else why

    def generate(self, request: ChatRequest) -> Completion:
        llm = self._llm()
        with failures_as(UpstreamError, "the model", passing=(RequestError,)):
            return llm.generate(request)

    def stream(self, request: ChatRequest) -> Generator[str, None, object]:
        """The model's text deltas; returns what the model's iterator returned (a Completion, by
        the StreamingLLM contract). Closing it closes the model's stream."""
        llm = self._llm()
        if not isinstance(llm, StreamingLLM):
            completion = self.generate(request)
            yield completion.text
            return completion
        upstream: Iterator[str] | None = None
        try:
            with failures_as(UpstreamError, "the model's stream", passing=(RequestError,)):
                upstream = llm.stream(request)
                while True:
                    try:
                        delta = next(upstream)
                    except StopIteration as stop:
                        return stop.value
                    yield delta
        finally:
            close = getattr(upstream, "close", None)
            if close is not None:
                with failures_as(UpstreamError, "closing the model's stream"):
                    close()

    @property
    def probed(self) -> bool:
        """Whether the model has a free probe (``ProbedLLM``: a models list, not a generation)."""
        return isinstance(self.inner, ProbedLLM)

    def ping(self) -> None:
        """The model's free probe; UpstreamError when it fails."""
        llm = self._llm()
        with failures_as(UpstreamError, "the model's probe"):
            if isinstance(llm, ProbedLLM):
                llm.ping()

    def _llm(self) -> LLM:
        if self.inner is None:
            raise UpstreamNotConfigured(self.missing)
        return self.inner
