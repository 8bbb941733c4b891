"""In-memory store and stats: for tests and throwaway runs. Thread-safe, not persistent."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from .._types import Cursor, Entry, LogRecord, SyncResult


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._exact: dict[tuple[str, str], str] = {}
        self._logs: dict[str, list[LogRecord]] = defaultdict(list)
        self._generation = uuid.uuid4().hex
        self._locks: dict[str, tuple[str, float]] = {}
        self._windows: dict[str, tuple[int, float]] = {}  # rate-limit counters: count, until
        self._documents: dict[str, tuple[str, float | None]] = {}  # name -> JSON text, until

    def sync(self, namespace: str, exact_key: str | None, cursor: Cursor | None) -> SyncResult:
        with self._lock:
            exact = None
            if exact_key is not None:
                entry_id = self._exact.get((namespace, exact_key))
                entry = self._entries.get(entry_id) if entry_id else None
                if entry is not None and not entry.expired(self._clock()):
                    exact = entry
            log = self._logs[namespace]
            reset = cursor is None or cursor.generation != self._generation
            start = 0 if reset or cursor is None else cursor.offset
            records = tuple(log[start:])
            return SyncResult(exact, records, Cursor(self._generation, len(log)), reset)

    def get(self, entry_id: str) -> Entry | None:
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None or entry.expired(self._clock()):
                return None
            return entry

    def put(self, entry: Entry, vector: npt.NDArray[np.float32] | None) -> None:
        with self._lock:
            self._entries[entry.id] = entry
            self._exact[(entry.namespace, entry.exact_key)] = entry.id
            if vector is not None:
                vec = np.asarray(vector, dtype=np.float32).copy()
                self._logs[entry.namespace].append(LogRecord(entry.id, vec, entry.expires_at))

    def delete(self, entry_id: str) -> bool:
        with self._lock:
            entry = self._entries.pop(entry_id, None)
            if entry is None:
                return False
            if self._exact.get((entry.namespace, entry.exact_key)) == entry_id:
                del self._exact[(entry.namespace, entry.exact_key)]
            self._logs[entry.namespace].append(LogRecord(entry_id, None))
            return True

    def entries(self, offset: int, limit: int) -> list[Entry]:
        now = self._clock()
        with self._lock:
            live = [e for e in self._entries.values() if not e.expired(now)]
        live.sort(key=lambda e: (e.created_at, e.id), reverse=True)
        return live[offset : offset + limit]

    def count(self) -> int:
        now = self._clock()
        with self._lock:
            return sum(1 for e in self._entries.values() if not e.expired(now))

    def clear(self) -> int:
        with self._lock:
            n = len(self._entries)
            self._entries.clear()
            self._exact.clear()
            self._logs.clear()
            self._documents.clear()
            self._generation = uuid.uuid4().hex
            return n

    def ping(self) -> None:
        return None

    def try_lock(self, name: str, token: str, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            held = self._locks.get(name)
            if held is not None and held[1] > now and held[0] != token:
                return False
            self._locks[name] = (token, now + ttl)
            return True

    def unlock(self, name: str, token: str) -> None:
        with self._lock:
            if self._locks.get(name, ("", 0.0))[0] == token:
                del self._locks[name]

    def count_window(self, current: str, previous: str, ttl: float) -> tuple[int, int]:
        now = self._clock()
        with self._lock:
            for name in [n for n, (_, until) in self._windows.items() if until <= now]:
                del self._windows[name]
            count, until = self._windows.get(current, (0, now + ttl))
            self._windows[current] = (count + 1, until)
            return count + 1, self._windows.get(previous, (0, 0.0))[0]

    def put_document(self, name: str, document: Mapping[str, Any], ttl: float | None) -> None:
        text = json.dumps(document, ensure_ascii=False)  # a copy, and JSON as the others keep it
        until = None if ttl is None else self._clock() + ttl
        with self._lock:
            self._documents[name] = (text, until)

    def get_document(self, name: str) -> dict[str, Any] | None:
        now = self._clock()
        with self._lock:
            kept = self._documents.get(name)
            if kept is not None and kept[1] is not None and kept[1] <= now:
                del self._documents[name]
                kept = None
        return None if kept is None else dict(json.loads(kept[0]))


class MemoryStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, float] = defaultdict(float)

    def add(self, counters: Mapping[str, float]) -> None:
        with self._lock:
            for name, value in counters.items():
                self._counters[name] += value

    def read(self) -> dict[str, float]:
        with self._lock:
            return dict(self._counters)

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()

    def drop(self, names: Collection[str]) -> None:
        with self._lock:
            for name in names:
                self._counters.pop(name, None)
