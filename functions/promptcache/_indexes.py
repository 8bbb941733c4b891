"""Index sync: each namespace's in-process vector index, kept in step with the store's vector log.

A namespace's state is its index and its cursor in the log. Every request's ``sync`` is the one
store round trip of the chat path (the exact-key lookup pipelined with the log records appended
since the cursor); its records are applied to the index, or, when the log started over (a new
generation, or the first load), replace it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ._boundary import GuardedStore
from ._types import Cursor, SyncResult, Vector
from .index import VectorIndex


@dataclass
class _Namespace:
    index: VectorIndex
    cursor: Cursor | None = None  # None: never loaded
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards index and cursor


class Indexes:
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
        """The ``k`` nearest live entries at or above ``min_score``: (entry id, similarity)."""
        return self._state(namespace).index.search(vector, k=k, min_score=min_score, now=now)

    def remove(self, namespace: str, entry_id: str) -> None:
        """Drop an entry from this process's index (gone from the store, or expired)."""
        with self._lock:
            state = self._namespaces.get(namespace)
        if state is not None:
            with state.lock:
                state.index.remove(entry_id)

    def clear(self) -> None:
        """Forget every namespace: the next request of each reloads it from the store."""
        with self._lock:
            self._namespaces.clear()

    def _state(self, namespace: str) -> _Namespace:
        with self._lock:
            state = self._namespaces.get(namespace)
            if state is None:
                state = self._namespaces[namespace] = _Namespace(VectorIndex(self._dim()))
            return state
