"""The small protocols the core depends on. Backends implement them; the core never names one."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ._types import ChatRequest, Completion, Cursor, Entry, SyncResult, Vector


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors (n x dim).

    ``max_input_chars``: the longest text it reads whole (a longer one is truncated by the model,
    so two long prompts sharing a preamble would look identical: the cache matches those by the
    exact tier only).
    """

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def default_threshold(self) -> float: ...

    @property
    def max_input_chars(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class Verifier(Protocol):
    """Judges candidates of one query: the probability (0..1) that each candidate prompt asks
    what the query asks, in order, from one call. Raises VerifierError (or anything: the core
    treats every failure as a rejection) when it cannot judge."""

    @property
    def id(self) -> str: ...

    def scores(self, query: str, candidates: Sequence[str]) -> Sequence[float]: ...


@runtime_checkable
class Store(Protocol):
    """Entries, exact keys and the per-namespace append-only vector log.

    ``sync`` is one round trip: the exact-key lookup pipelined with the log records appended since
    ``cursor`` (all records when ``cursor`` is None or of an older generation). ``put`` writes the
    entry, its exact key, its vector and its TTL together (atomically where the backend can).
    """

    def sync(self, namespace: str, exact_key: str | None, cursor: Cursor | None) -> SyncResult: ...

    def get(self, entry_id: str) -> Entry | None: ...

    def put(self, entry: Entry, vector: npt.NDArray[np.float32] | None) -> None: ...

    def delete(self, entry_id: str) -> bool: ...

    def entries(self, offset: int, limit: int) -> list[Entry]:
        """Up to ``limit`` live entries from position ``offset`` of every namespace's, newest
        first (by creation; Upstash by expiry, the same order when TTLs are equal); an empty
        list past the end. Positions shift as entries come and go: a page boundary may repeat
        or skip one, and a page may hold fewer than ``limit`` before the end (an entry gone
        between reading the order and the entries)."""
        ...

    def count(self) -> int: ...

    def clear(self) -> int: ...

    def ping(self) -> None: ...


@runtime_checkable
class Index(Protocol):
    """A vector index that serves every process: the nearest entries of a namespace.

    The core's contract for the semantic tier, served server-side (Redis's query engine, Upstash
    Vector) instead of by each process's own copy of the store's vector log. It holds, per
    namespace, entry ids with a unit vector and an expiry; entries themselves, exact keys, stats
    and locks stay in the Store.

    - ``add``: insert or replace ``entry_id`` (``expires_at``: epoch seconds, None = never).
    - ``add_many``: ``add`` each (entry id, vector, expires_at) of ``items``, in a few round
      trips (a reindex's batches; a write nobody waits on).
    - ``remove``: forget ``entry_id`` (absent: nothing happens).
    - ``search``: up to ``k`` entries of ``namespace`` with cosine similarity >= ``min_score``
      and not expired at ``now`` (``expires_at`` None or > ``now``), as (entry id, cosine),
      best first. Another namespace's entries are never returned.
    - ``clear``: forget every namespace.
    """

    def add(
        self, namespace: str, entry_id: str, vector: Vector, expires_at: float | None
    ) -> None: ...

    def add_many(
        self, namespace: str, items: Sequence[tuple[str, Vector, float | None]]
    ) -> None: ...

    def remove(self, namespace: str, entry_id: str) -> None: ...

    def search(
        self, namespace: str, vector: Vector, *, k: int, min_score: float, now: float
    ) -> list[tuple[str, float]]: ...

    def clear(self) -> None: ...

    def ping(self) -> None: ...


@runtime_checkable
class Locks(Protocol):
    """Named locks that expire by themselves, shared by every process using the same backend.

    The cache takes one per prompt being answered, so that one process asks the model (the
    cross-process half of single-flight). The stores implement it too, next to their entries.
    """

    def try_lock(self, name: str, token: str, ttl: float) -> bool:
        """Take the lock ``name`` for ``ttl`` seconds unless someone else holds it."""
        ...

    def unlock(self, name: str, token: str) -> None:
        """Release ``name`` if ``token`` still holds it (an expired lock may be someone else's)."""
        ...


@runtime_checkable
class RateWindows(Protocol):
    """Counters of fixed time windows, shared by every process using the same backend (the rate
    limit's). The stores implement it too, next to their entries."""

    def count_window(self, current: str, previous: str, ttl: float) -> tuple[int, int]:
        """Add one to the counter ``current`` (created at 0, gone ``ttl`` seconds after its first
        hit) and return its new value with the value of ``previous`` (0 when absent)."""
        ...


@runtime_checkable
class Documents(Protocol):
    """JSON documents kept under a name for a while, shared by every process using the same
    backend (the Responses face keeps each response it returns, and the conversation it ended, so
    that a follow-up may name it). The stores implement it too, next to their entries; ``clear``
    forgets the documents with the entries."""

    def put_document(self, name: str, document: Mapping[str, Any], ttl: float | None) -> None:
        """Keep ``document`` (JSON-encodable) under ``name`` for ``ttl`` seconds (None: until
        cleared), replacing what the name held."""
        ...

    def get_document(self, name: str) -> dict[str, Any] | None:
        """The document kept under ``name``, or None (never kept, expired or cleared)."""
        ...


@runtime_checkable
class LLM(Protocol):
    """Generates an answer. Raises UpstreamError (or a subclass) on failure."""

    @property
    def name(self) -> str: ...

    def generate(self, request: ChatRequest) -> Completion: ...


@runtime_checkable
class StreamingLLM(LLM, Protocol):
    """An LLM that can also stream: ``stream`` yields the answer's text deltas as they arrive.

    The iterator may *return* (``StopIteration.value``) a ``Completion`` carrying the model name,
    usage and finish reason; its ``text`` is ignored (the deltas are the text). An iterator that
    stops without a complete answer must raise UpstreamError instead of returning, so that a
    broken stream is never stored. Closing the iterator early must release the connection.
    """

    def stream(self, request: ChatRequest) -> Iterator[str]: ...


@runtime_checkable
class ProbedLLM(LLM, Protocol):
    """An LLM with a free health probe (a models list, never a generation): ``ping`` raises
    UpstreamError when the upstream does not answer it."""

    def ping(self) -> None: ...


@runtime_checkable
class RoutingLLM(LLM, Protocol):
    """An LLM that hands each request to one of several upstreams by its model: ``pick`` names
    the one a request for ``model`` reaches (for what depends on it: ``ChoicesLLM.takes_n``)."""

    def pick(self, model: str) -> LLM: ...


@runtime_checkable
class TokenCounter(LLM, Protocol):
    """An LLM whose provider counts a request's input tokens for free, without generating
    (Claude's ``count_tokens``). Raises UpstreamError as ``generate`` does."""

    def count_tokens(self, request: ChatRequest) -> int: ...


def upstream_for(llm: LLM | None, model: str) -> LLM | None:
    """The upstream a request for ``model`` reaches (the one a router picks)."""
    return llm.pick(model) if isinstance(llm, RoutingLLM) else llm


def token_counter(llm: LLM | None, model: str) -> TokenCounter | None:
    """The upstream a request for ``model`` reaches, if it counts tokens."""
    upstream = upstream_for(llm, model)
    return upstream if isinstance(upstream, TokenCounter) else None


def takes_n(llm: LLM | None, model: str) -> bool:
    """Whether the upstream a request for ``model`` reaches answers n choices in one call."""
    upstream = upstream_for(llm, model)
    return isinstance(upstream, ChoicesLLM) and bool(upstream.takes_n)


@runtime_checkable
class ChoicesLLM(LLM, Protocol):
    """An LLM that answers several choices in one call: ``takes_n`` is true, and ``generate``
    of a request whose ``forward`` holds ``n`` returns the first choice with the others in
    ``Completion.alternatives``. Without it, ``n > 1`` is fanned out as n calls."""

    @property
    def takes_n(self) -> bool: ...


@runtime_checkable
class Stats(Protocol):
    """Counters that lose no update under concurrency. ``drop`` forgets the named counters (the
    accounting drops stale time buckets with it; a backend whose counters have several writers
    drops what this writer wrote)."""

    def add(self, counters: Mapping[str, float]) -> None: ...

    def drop(self, names: Collection[str]) -> None: ...

    def read(self) -> dict[str, float]: ...

    def reset(self) -> None: ...
