"""SQLite store and stats: the persistent local default (one file holds entries, vectors, stats).

Vectors live in an append-only log table per database; a reader's cursor is the last sequence
number it has read, so a sync reads only new rows. ``compact()`` drops dead rows and starts a new
generation, which every reader detects and reloads from.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._errors import StatsError, StoreError
from .._types import Cursor, Entry, LogRecord, SyncResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    data TEXT NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS exact_keys (
    namespace TEXT NOT NULL,
    exact_key TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    PRIMARY KEY (namespace, exact_key)
);
CREATE TABLE IF NOT EXISTS vector_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    vector BLOB,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS vector_log_ns ON vector_log (namespace, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS locks (
    name TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    name TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (name TEXT PRIMARY KEY, data TEXT NOT NULL, expires_at REAL);
"""


class SQLiteStore:
    """Store (and Stats, see ``SQLiteStats``) on one SQLite file. Thread-safe: a connection per
    thread, WAL journal, writes in immediate transactions, one writer thread at a time per
    process; across processes, SQLite's busy timeout (``timeout``) waits for the file lock."""

    def __init__(
        self, path: str | Path, *, timeout: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self._timeout = timeout
        self._clock = clock
        self._local = threading.local()
        self._writer = threading.Lock()
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn().executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create SQLite store {self.path}: {exc}") from exc
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', ?)",
                (uuid.uuid4().hex,),
            )

    # ---------------------------------------------------------------- connection handling
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    str(self.path),
                    timeout=self._timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. The threads of this process write one at a time (a lock that
        queues them in order), so SQLite's busy handler only arbitrates between processes: left
        to it, 32 threads polling for the file lock starve some of them past the timeout."""
        db = self._conn()
        if not self._writer.acquire(timeout=self._timeout):
            raise StoreError(f"SQLite store {self.path}: no write turn within {self._timeout:g} s")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc
        finally:
            self._writer.release()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        try:
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    # ---------------------------------------------------------------- Store protocol
    def sync(self, namespace: str, exact_key: str | None, cursor: Cursor | None) -> SyncResult:
        now = self._clock()
        with self._read() as db:
            generation = db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0]
            exact = None
            if exact_key is not None:
                row = db.execute(
                    "SELECT e.data FROM exact_keys k JOIN entries e ON e.id = k.entry_id "
                    "WHERE k.namespace = ? AND k.exact_key = ? "
                    "AND (e.expires_at IS NULL OR e.expires_at > ?)",
                    (namespace, exact_key, now),
                ).fetchone()
                exact = Entry.from_json(json.loads(row[0])) if row else None
            reset = cursor is None or cursor.generation != generation
            since = 0 if reset or cursor is None else cursor.offset
            rows = db.execute(
                "SELECT seq, entry_id, vector, expires_at FROM vector_log "
                "WHERE namespace = ? AND seq > ? ORDER BY seq",
                (namespace, since),
            ).fetchall()
        records = tuple(
            LogRecord(
                entry_id,
                None if blob is None else np.frombuffer(blob, dtype=np.float32),
                expires_at,
            )
            for _, entry_id, blob, expires_at in rows
        )
        offset = rows[-1][0] if rows else since
        return SyncResult(exact, records, Cursor(generation, offset), reset)

    def get(self, entry_id: str) -> Entry | None:
        with self._read() as db:
            row = db.execute(
                "SELECT data FROM entries WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)",
                (entry_id, self._clock()),
            ).fetchone()
        return Entry.from_json(json.loads(row[0])) if row else None

    def entries(self, offset: int, limit: int) -> list[Entry]:
        with self._read() as db:
            rows = db.execute(
                "SELECT data FROM entries WHERE expires_at IS NULL OR expires_at > ? "
                "ORDER BY json_extract(data, '$.created_at') DESC, id DESC LIMIT ? OFFSET ?",
                (self._clock(), limit, offset),
            ).fetchall()
        return [Entry.from_json(json.loads(row[0])) for row in rows]

    def put(self, entry: Entry, vector: npt.NDArray[np.float32] | None) -> None:
        data = json.dumps(entry.to_json(), ensure_ascii=False)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO entries (id, namespace, data, expires_at) VALUES (?,?,?,?)",
                (entry.id, entry.namespace, data, entry.expires_at),
            )
            db.execute(
                "INSERT OR REPLACE INTO exact_keys (namespace, exact_key, entry_id) VALUES (?,?,?)",
                (entry.namespace, entry.exact_key, entry.id),
            )
            if vector is not None:
                blob = np.asarray(vector, dtype=np.float32).tobytes()
                db.execute(
                    "INSERT INTO vector_log (namespace, entry_id, vector, expires_at) "
                    "VALUES (?,?,?,?)",
                    (entry.namespace, entry.id, blob, entry.expires_at),
                )

    def delete(self, entry_id: str) -> bool:
        with self._tx() as db:
            row = db.execute("SELECT namespace FROM entries WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
            db.execute("DELETE FROM exact_keys WHERE entry_id = ?", (entry_id,))
            db.execute(
                "INSERT INTO vector_log (namespace, entry_id, vector) VALUES (?,?,NULL)",
                (row[0], entry_id),
            )
            return True

    def count(self) -> int:
        with self._read() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM entries WHERE expires_at IS NULL OR expires_at > ?",
                (self._clock(),),
            ).fetchone()
        return int(row[0])

    def clear(self) -> int:
        with self._tx() as db:
            n = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            db.execute("DELETE FROM entries")
            db.execute("DELETE FROM exact_keys")
            db.execute("DELETE FROM vector_log")
            db.execute("DELETE FROM locks")
            db.execute("DELETE FROM documents")
            db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (uuid.uuid4().hex,))
        return int(n)

    def compact(self) -> int:
        """Remove expired entries and dead log rows; readers reload under the new generation."""
        now = self._clock()
        with self._tx() as db:
            expired = db.execute(
                "DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            ).rowcount
            db.execute(
                "DELETE FROM documents WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            )
            db.execute("DELETE FROM exact_keys WHERE entry_id NOT IN (SELECT id FROM entries)")
            db.execute(
                "DELETE FROM vector_log WHERE vector IS NULL "
                "OR entry_id NOT IN (SELECT id FROM entries) "
                "OR seq NOT IN (SELECT MAX(seq) FROM vector_log GROUP BY entry_id)"
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (uuid.uuid4().hex,))
        return int(expired)

    def ping(self) -> None:
        with self._read() as db:
            db.execute("SELECT 1").fetchone()

    def try_lock(self, name: str, token: str, ttl: float) -> bool:
        now = self._clock()
        with self._tx() as db:
            db.execute(
                "INSERT INTO locks (name, token, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET token = excluded.token, "
                "expires_at = excluded.expires_at "
                "WHERE locks.expires_at <= ? OR locks.token = excluded.token",
                (name, token, now + ttl, now),
            )
            row = db.execute("SELECT token FROM locks WHERE name = ?", (name,)).fetchone()
        return bool(row and row[0] == token)

    def unlock(self, name: str, token: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM locks WHERE name = ? AND token = ?", (name, token))

    def count_window(self, current: str, previous: str, ttl: float) -> tuple[int, int]:
        now = self._clock()
        with self._tx() as db:
            db.execute("DELETE FROM windows WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT INTO windows (name, count, expires_at) VALUES (?, 1, ?) "
                "ON CONFLICT(name) DO UPDATE SET count = count + 1",
                (current, now + ttl),
            )
            rows = dict(
                db.execute(
                    "SELECT name, count FROM windows WHERE name IN (?, ?)", (current, previous)
                ).fetchall()
            )
        return int(rows[current]), int(rows.get(previous, 0))

    def put_document(self, name: str, document: Mapping[str, Any], ttl: float | None) -> None:
        """One upsert; expired documents are dropped by ``compact``."""
        data = json.dumps(document, ensure_ascii=False)
        until = None if ttl is None else self._clock() + ttl
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO documents (name, data, expires_at) VALUES (?, ?, ?)",
                (name, data, until),
            )

    def get_document(self, name: str) -> dict[str, Any] | None:
        with self._read() as db:
            row = db.execute(
                "SELECT data FROM documents WHERE name = ? "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (name, self._clock()),
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class SQLiteStats:
    """Exact counters in the store's SQLite file: one atomic upsert per request."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def add(self, counters: Mapping[str, float]) -> None:
        try:
            with self._store._tx() as db:
                db.executemany(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    list(counters.items()),
                )
        except StoreError as exc:
            raise StatsError(str(exc)) from exc

    def read(self) -> dict[str, float]:
        try:
            with self._store._read() as db:
                return {n: float(v) for n, v in db.execute("SELECT name, value FROM counters")}
        except StoreError as exc:
            raise StatsError(str(exc)) from exc

    def reset(self) -> None:
        try:
            with self._store._tx() as db:
                db.execute("DELETE FROM counters")
        except StoreError as exc:
            raise StatsError(str(exc)) from exc

    def drop(self, names: Collection[str]) -> None:
        try:
            with self._store._tx() as db:
                db.executemany("DELETE FROM counters WHERE name = ?", [(n,) for n in names])
        except StoreError as exc:
            raise StatsError(str(exc)) from exc
