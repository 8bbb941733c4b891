"""The semantic tier's index, one of two kinds behind the same methods (``indexes_for``):

- ``ProcessIndexes`` (``PROMPTCACHE_INDEX=process``, the default): each namespace's in-process
  vector index (``index.py``), kept in step with the store's vector log. A namespace's state is
  its index and its cursor in the log. Every request's ``sync`` is the one store round trip of
  the chat path (the exact-key lookup pipelined with the log records appended since the cursor);
  its records are applied to the index, or, when the log started over (a new generation, or the
  first load), replace it.
- ``ServerIndexes`` (``redis``, ``upstash-vector``): an ``Index`` that serves every process
  (``_protocols.Index``). Vectors go to it, not to the store's log, so a cold process loads
  nothing: ``sync`` is the exact-key lookup (plus the log's few tombstones, read from a cursor).

Either way the entries, exact keys, stats and locks stay in the store, and search answers the
same question: the ``k`` nearest live entries of a namespace at or above ``min_score``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ._boundary import GuardedIndex, GuardedStore
from ._protocols import Index
from ._types import Cursor, Entry, SyncResult, Vector
from .index import VectorIndex


class Indexes:
    """What the core asks of the semantic tier's index (both kinds below)."""

    def sync(self, namespace: str, key: str | None) -> SyncResult:
        """One store round trip: the exact-key lookup (+ the index's sync). Raises StoreError."""
        raise NotImplementedError

    def search(
        self, namespace: str, vector: Vector, *, k: int, min_score: float, now: float
    ) -> list[tuple[str, float]]:
        """The ``k`` nearest live entries at or above ``min_score``: (entry id, similarity)."""
        raise NotImplementedError

    def put(self, entry: Entry, vector: Vector | None) -> None:
        """Store ``entry`` and index its vector (None: the exact tier only). Raises StoreError."""
        raise NotImplementedError

    def delete(self, entry: Entry) -> bool:
        """Delete ``entry`` from the store and the index. Raises StoreError."""
        raise NotImplementedError

    def remove(self, namespace: str, entry_id: str) -> None:
        """Drop an entry from the index (gone from the store, or expired)."""
        raise NotImplementedError

    def clear(self) -> None:
        """Forget every namespace (the store was cleared)."""
        raise NotImplementedError


def indexes_for(store: GuardedStore, index: Index | None, dim: Callable[[], int]) -> Indexes:
    """The process's own indexes (``index`` None), or the server-side ``index``."""
    if index is None:
        return ProcessIndexes(store, dim)
    return ServerIndexes(store, GuardedIndex(index))


@dataclass
class _Namespace:
    index: VectorIndex
    cursor: Cursor | None = None  # None: never loaded
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards index and cursor


class ProcessIndexes(Indexes):
    """The namespaces' indexes of one process. ``dim`` is read when a namespace is first seen."""

    def __init__(self, store: GuardedStore, dim: Callable[[], int]) -> None:
        self._store = store
        self._dim = dim
        self._namespaces: dict[str, _Namespace] = {}
        self._lock = threading.Lock()

    def sync(self, namespace: str, key: str | None) -> SyncResult:
        """One store round trip: exact lookup + incremental index sync. Raises StoreError.

        The round trip runs outside the namespace lock (concurrent requests do not queue behind
        each other's network calls); its records are applied only if no other request moved the
        cursor meanwhile, otherwise the next request reads them again from the newer cursor.
        """
        state = self._state(namespace)
        cursor = state.cursor
        result = self._store.sync(namespace, key, cursor)
        fresh = None
        if result.reset:  # build the new index before taking the lock
            fresh = VectorIndex(self._dim(), capacity=max(1024, len(result.records)))
            fresh.apply_log(result.records)
        with state.lock:
            if state.cursor == cursor:
                if fresh is not None:
                    state.index = fresh
                else:
                    state.index.apply_log(result.records)
                state.cursor = result.cursor
        return result

    def search(
        self, namespace: str, vector: Vector, *, k: int, min_score: float, now: float
    ) -> list[tuple[str, float]]:
        return self._state(namespace).index.search(vector, k=k, min_score=min_score, now=now)

    def put(self, entry: Entry, vector: Vector | None) -> None:
        self._store.put(entry, vector)  # the vector reaches the index through the store's log

    def delete(self, entry: Entry) -> bool:
        return self._store.delete(entry.id)  # its tombstone reaches the index through the log

    def remove(self, namespace: str, entry_id: str) -> None:
        with self._lock:
            state = self._namespaces.get(namespace)
        if state is not None:
            with state.lock:
                state.index.remove(entry_id)

    def clear(self) -> None:
        """The next request of each namespace reloads it from the store."""
        with self._lock:
            self._namespaces.clear()

    def _state(self, namespace: str) -> _Namespace:
        with self._lock:
            state = self._namespaces.get(namespace)
            if state is None:
                state = self._namespaces[namespace] = _Namespace(VectorIndex(self._dim()))
            return state


class ServerIndexes(Indexes):
    """A server-side index shared by every process; the store keeps everything else.

    ``put`` indexes the vector first, then stores the entry without it: a vector whose entry
    never got stored is found by a search, missed by the store and removed by the core (the same
    path as an expired entry), while the opposite order would leave an answer no search finds.
    """

    def __init__(self, store: GuardedStore, index: GuardedIndex) -> None:
        self._store = store
        self.index = index
        self._cursors: dict[str, Cursor] = {}
        self._lock = threading.Lock()

    def sync(self, namespace: str, key: str | None) -> SyncResult:
        with self._lock:
            cursor = self._cursors.get(namespace)
        result = self._store.sync(namespace, key, cursor)
        with self._lock:
            if self._cursors.get(namespace) == cursor:
                self._cursors[namespace] = result.cursor
        return result

    def search(
        self, namespace: str, vector: Vector, *, k: int, min_score: float, now: float
    ) -> list[tuple[str, float]]:
        return self.index.search(namespace, vector, k=k, min_score=min_score, now=now)

    def put(self, entry: Entry, vector: Vector | None) -> None:
        if vector is not None:
            self.index.add(entry.namespace, entry.id, vector, entry.expires_at)
        self._store.put(entry, None)

    def delete(self, entry: Entry) -> bool:
        removed = self._store.delete(entry.id)
        self.index.remove(entry.namespace, entry.id)
        return removed

    def remove(self, namespace: str, entry_id: str) -> None:
        self.index.remove(namespace, entry_id)

    def clear(self) -> None:
        self.index.clear()
        with self._lock:
            self._cursors.clear()
