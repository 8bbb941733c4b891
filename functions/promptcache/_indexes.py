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

``reindex`` moves a cache from the first kind to the second: every live entry's vector, read
from its namespace's log in the store, is added to the server-side index (``promptcache
reindex``), so the entries stored before the switch are found again.

Bounds of the process index (``Bounds``; settings PROMPTCACHE_MAX_NAMESPACES and
PROMPTCACHE_MAX_ENTRIES_PER_NAMESPACE):

- ``namespaces``: how many namespaces' indexes one process keeps. Past it, the least recently
  used namespace's index is dropped from memory (its entries stay in the store) and reloaded
  from the store's log when next used.
- ``entries``: how many entries with a vector a namespace keeps. Past it, the least recently hit
  entries (a hit or being stored counts as use) are deleted from the store, here and so in every
  process sharing it. Recency is what this process has seen: two processes may pick different
  victims, never more than their overflow. Entries without a vector (prompts past the semantic
  tier's length) are bounded by their TTL only.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._boundary import GuardedIndex, GuardedStore
from ._errors import StoreError
from ._protocols import Index, Store
from ._settings_table import MAX_ENTRIES_PER_NAMESPACE, MAX_NAMESPACES
from ._types import Cursor, Entry, LogRecord, SyncResult, Vector
from .index import VectorIndex

log = logging.getLogger("promptcache")

#: Rows an index starts with (it doubles as it fills): a namespace of a few entries stays small.
_FIRST_ROWS = 64
#: Entries read from the store at a time while reindexing.
_PAGE = 500


@dataclass(frozen=True)
class Bounds:
    """The most namespaces one process indexes, and the most entries with a vector that one
    namespace keeps (see the module's docstring)."""

    namespaces: int = MAX_NAMESPACES
    entries: int = MAX_ENTRIES_PER_NAMESPACE


DEFAULT_BOUNDS = Bounds()


class Indexes:
    """What the core asks of the semantic tier's index (both kinds below)."""

    #: The server-side index, None for the process's own (``/health`` probes it).
    index: GuardedIndex | None = None

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

    def hit(self, namespace: str, entry_id: str) -> None:
        """``entry_id`` answered a request (the process index's recency; a no-op elsewhere)."""

    def clear(self) -> None:
        """Forget every namespace (the store was cleared)."""
        raise NotImplementedError


def indexes_for(
    store: GuardedStore,
    index: Index | None,
    dim: Callable[[], int],
    bounds: Bounds = DEFAULT_BOUNDS,
    evicted: Callable[[], None] = lambda: None,
) -> Indexes:
    """The process's own indexes (``index`` None) within ``bounds``, calling ``evicted`` after
    entries were evicted past a bound; or the server-side ``index`` (whose size is the server's
    to bound: TTL and its own limits)."""
    if index is None:
        return ProcessIndexes(store, dim, bounds, evicted)
    return ServerIndexes(store, GuardedIndex(index))


@dataclass
class _Namespace:
    index: VectorIndex
    cursor: Cursor | None = None  # None: never loaded
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards index, cursor, recency
    recency: OrderedDict[str, None] = field(default_factory=OrderedDict)  # least recent first

    def note(self, records: Sequence[LogRecord]) -> None:
        for record in records:
            if record.vector is None:
                self.recency.pop(record.entry_id, None)
            else:
                self.recency[record.entry_id] = None
                self.recency.move_to_end(record.entry_id)

    def overflow(self, bound: int) -> list[str]:
        """The least recently used entries past ``bound``, taken out of the index."""
        victims = []
        while len(self.recency) > bound:
            entry_id, _ = self.recency.popitem(last=False)
            self.index.remove(entry_id)
            victims.append(entry_id)
        if victims:
            self.index.compact_if_sparse()
        return victims


class ProcessIndexes(Indexes):
    """The namespaces' indexes of one process. ``dim`` is read when a namespace is first seen."""

    def __init__(
        self,
        store: GuardedStore,
        dim: Callable[[], int],
        bounds: Bounds = DEFAULT_BOUNDS,
        evicted: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._dim = dim
        self.bounds = bounds
        self._evicted = evicted
        self._namespaces: OrderedDict[str, _Namespace] = OrderedDict()  # least recent first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many namespaces' indexes this process holds."""
        with self._lock:
            return len(self._namespaces)

    def sync(self, namespace: str, key: str | None) -> SyncResult:
        """One store round trip: exact lookup + incremental index sync. Raises StoreError.

        The round trip runs outside the namespace lock (concurrent requests do not queue behind
        each other's network calls); its records are applied only if no other request moved the
        cursor meanwhile, otherwise the next request reads them again from the newer cursor.
        An exact hit counts as a use of its entry; entries past the bound are evicted.
        """
        state = self._state(namespace)
        cursor = state.cursor
        result = self._store.sync(namespace, key, cursor)
        fresh = None
        if result.reset:  # build the new index before taking the lock
            fresh = VectorIndex(self._dim(), capacity=max(_FIRST_ROWS, len(result.records)))
            fresh.apply_log(result.records)
        with state.lock:
            if state.cursor == cursor:
                if fresh is not None:
                    state.index = fresh
                    state.recency = OrderedDict()
                else:
                    state.index.apply_log(result.records)
                state.note(result.records)
                state.cursor = result.cursor
            if result.exact is not None and result.exact.id in state.recency:
                state.recency.move_to_end(result.exact.id)
            victims = state.overflow(self.bounds.entries)
        self._evict(namespace, victims)
        return result

    def search(
        self, namespace: str, vector: Vector, *, k: int, min_score: float, now: float
    ) -> list[tuple[str, float]]:
        return self._state(namespace).index.search(vector, k=k, min_score=min_score, now=now)

    def hit(self, namespace: str, entry_id: str) -> None:
        """``entry_id`` answered a request: the last of its namespace to be evicted."""
        state = self._known(namespace)
        if state is not None:
            with state.lock:
                if entry_id in state.recency:
                    state.recency.move_to_end(entry_id)

    def put(self, entry: Entry, vector: Vector | None) -> None:
        self._store.put(entry, vector)  # the vector reaches the index through the store's log

    def delete(self, entry: Entry) -> bool:
        return self._store.delete(entry.id)  # its tombstone reaches the index through the log

    def remove(self, namespace: str, entry_id: str) -> None:
        """Drop an entry from this process's index (gone from the store, or expired)."""
        state = self._known(namespace)
        if state is not None:
            with state.lock:
                state.index.remove(entry_id)
                state.recency.pop(entry_id, None)

    def clear(self) -> None:
        """The next request of each namespace reloads it from the store."""
        with self._lock:
            self._namespaces.clear()

    def _known(self, namespace: str) -> _Namespace | None:
        with self._lock:
            return self._namespaces.get(namespace)

    def _state(self, namespace: str) -> _Namespace:
        """The namespace's state, now the most recently used; the least recently used one past
        the bound is dropped (a request still holding it finishes with it)."""
        with self._lock:
            state = self._namespaces.get(namespace)
            if state is None:
                index = VectorIndex(self._dim(), capacity=_FIRST_ROWS)
                state = self._namespaces[namespace] = _Namespace(index)
                while len(self._namespaces) > self.bounds.namespaces:
                    self._namespaces.popitem(last=False)
            else:
                self._namespaces.move_to_end(namespace)
            return state

    def _evict(self, namespace: str, victims: list[str]) -> None:
        for entry_id in victims:
            try:
                self._store.delete(entry_id)
            except StoreError as exc:  # it stays in the store (until its TTL), unindexed here
                log.warning("evicting %s from %s failed: %s", entry_id, namespace, exc)
        if victims:
            self._evicted()


class ServerIndexes(Indexes):
    """A server-side index shared by every process; the store keeps everything else.

    ``put`` indexes the vector first, then stores the entry without it: a vector whose entry
    never got stored is found by a search, missed by the store and removed by the core (the same
    path as an expired entry), while the opposite order would leave an answer no search finds.
    """

    def __init__(self, store: GuardedStore, index: GuardedIndex) -> None:
        self._store = store
        self.index: GuardedIndex = index
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


@dataclass(frozen=True)
class Reindexed:
    """What ``reindex`` did: namespaces with live entries, vectors added, live entries without
    a vector in the log (prompts past the semantic tier's length, or stored through a server
    index already, which keeps the vector there)."""

    namespaces: int
    entries: int
    without_vector: int


def reindex(store: Store, index: Index, now: float) -> Reindexed:
    """Add every live entry's vector from the store's vector logs to ``index`` (``add_many``,
    one namespace at a time). Idempotent: an entry already there is replaced by the same vector.
    Raises StoreError (the index first: an unreachable one fails before anything is read)."""
    guarded_store, guarded_index = GuardedStore(store), GuardedIndex(index)
    guarded_index.ping()
    live: dict[str, dict[str, float | None]] = {}  # namespace -> entry id -> expiry
    offset = 0
    while True:
        page = guarded_store.entries(offset, _PAGE)
        if not page:  # a short page need not be the last (Upstash skips a vanished entry)
            break
        for entry in page:
            if not entry.expired(now):
                live.setdefault(entry.namespace, {})[entry.id] = entry.expires_at
        offset += _PAGE
    added = 0
    for namespace, expiries in live.items():
        vectors: dict[str, Vector | None] = {}
        for record in guarded_store.sync(namespace, None, None).records:
            vectors[record.entry_id] = record.vector  # the last record wins; None: a tombstone
        items = [
            (entry_id, vector, expiries[entry_id])
            for entry_id, vector in vectors.items()
            if vector is not None and entry_id in expiries
        ]
        if items:
            guarded_index.add_many(namespace, items)
            added += len(items)
    total = sum(len(expiries) for expiries in live.values())
    return Reindexed(len(live), added, total - added)
