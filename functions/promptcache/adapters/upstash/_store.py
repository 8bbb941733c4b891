"""UpstashStore: the Store protocol on Upstash Redis over its REST API.

Round trips: ``sync`` is one /pipeline (GET of the exact key, which holds the entry itself, GET
epoch, GET gen, GET of the last segment, GETRANGE of the log from the reader's offset) unless the
reader's generation is stale or a backlog exceeds one chunk or segment; ``get`` is one GET;
``put`` is one /multi-exec (both SETs with PX, ZADD, SADD, the log append, and GETs of the
generation to check the append went to the current log). A kept document is one SET (with PX)
to write and one GET to read.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from ..._errors import ConfigError, StoreError
from ..._types import Cursor, Entry, LogRecord, SyncResult
from . import _keys
from ._codec import encode_records, entry_id_bytes
from ._compaction import Compaction
from ._keys import DEFAULT_PREFIX, KeyLayout
from ._log import DEFAULT_SEGMENT_BYTES, SEGMENT_STRIDE
from ._rest import UpstashREST, text
from ._scripts import COUNT_WINDOW_LUA, DELETE_LUA, UNLOCK_LUA

#: Default bytes of stored log read per request (``PROMPTCACHE_UPSTASH_CHUNK_BYTES``).
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
MIN_CHUNK_BYTES = 4096


class UpstashStore(Compaction):
    """The Store protocol on Upstash Redis. Keys: ``_keys``; records: ``_codec``; logs, segments
    and generations: ``_log``; compaction: ``_compaction``."""

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        token: str,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        prefix: str = DEFAULT_PREFIX,
        base64_responses: bool = True,
        clock: Callable[[], float] = time.time,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if chunk_bytes < MIN_CHUNK_BYTES:
            raise ConfigError(f"the Upstash chunk size must be >= {MIN_CHUNK_BYTES} bytes")
        if not 0 < segment_bytes < SEGMENT_STRIDE:
            raise ConfigError(f"the Upstash log segment size must be 1-{SEGMENT_STRIDE - 1} bytes")
        super().__init__(
            UpstashREST(client, url, token, base64_responses=base64_responses),
            KeyLayout(prefix),
            clock=clock,
            chunk_bytes=chunk_bytes,
            segment_bytes=segment_bytes,
        )

    @staticmethod
    def namespace_id(namespace: str) -> str:
        """The short id of a namespace in its keys (``N`` in the key layout)."""
        return _keys.namespace_id(namespace)

    # ------------------------------------------------------------------ Store protocol
    def sync(self, namespace: str, exact_key: str | None, cursor: Cursor | None) -> SyncResult:
        nsid = self.namespace_id(namespace)
        with self._lock:
            guess = cursor.generation if cursor else self._generations.get(nsid)
            if guess is None:
                guess = f"{self._epoch or '0'}.0"
            length = self._read_length(nsid)
        position = cursor.offset if cursor is not None and cursor.generation == guess else 0
        segment, offset = divmod(position, SEGMENT_STRIDE)
        commands: list[list[str | int]] = []
        if exact_key is not None:
            commands.append(["GET", self._keys.exact(nsid, exact_key)])
        commands += [
            ["GET", self._keys.epoch],
            ["GET", self._keys.gen(nsid)],
            ["GET", self._keys.segments(nsid, guess)],  # before the GETRANGE: see _read_log
            ["GETRANGE", self._keys.log(nsid, guess, segment), offset, offset + length - 1],
        ]
        results = self._rest.pipeline(commands)
        exact = self._live_entry(results[0]) if exact_key is not None else None
        epoch, gen, last, data = results[-4:]
        generation = f"{text(epoch)}.{text(gen)}"
        self._remember(nsid, generation, text(epoch))
        if generation != guess:  # compacted or cleared since: what was read is stale
            records, end = self._read_log(nsid, generation, 0, None)
            return SyncResult(exact, tuple(records), Cursor(generation, end), True)
        first = (bytes(data or b""), length, int(text(last)))
        records, end = self._read_log(nsid, generation, position, first)
        reset = cursor is None or cursor.generation != generation
        return SyncResult(exact, tuple(records), Cursor(generation, end), reset)

    def get(self, entry_id: str) -> Entry | None:
        return self._live_entry(self._rest.command("GET", self._keys.entry(entry_id)))

    def put(self, entry: Entry, vector: npt.NDArray[np.float32] | None) -> None:
        nsid = self.namespace_id(entry.namespace)
        generation = self._writer_generation(nsid) if vector is not None else ""
        commands = self.put_commands(entry, vector, generation)
        results = self._rest.multi_exec(commands)
        if vector is not None:
            record = str(commands[-3][5]).encode("ascii")
            self._settle(nsid, generation, record, results[-3], results[-2], results[-1])

    def put_commands(
        self, entry: Entry, vector: npt.NDArray[np.float32] | None, generation: str
    ) -> list[list[str | int]]:
        """The one transaction that stores an entry: both SETs with their TTL, the count's ZADD,
        the namespace's SADD and, with a vector, the append to ``generation``'s log (one EVAL
        that picks the segment) followed by the GETs that tell whether ``generation`` is still
        the current one."""
        nsid = self.namespace_id(entry.namespace)
        entry_id_bytes(entry.id)
        dim = 0 if vector is None else int(np.asarray(vector).size)
        value = self._wrap(entry, dim)
        ttl: list[str | int] = []
        if entry.expires_at is not None:
            ttl = ["PX", max(1, math.ceil((entry.expires_at - self._clock()) * 1000))]
        score = "+inf" if entry.expires_at is None else repr(float(entry.expires_at))
        commands: list[list[str | int]] = [
            ["SET", self._keys.entry(entry.id), value, *ttl],
            ["SET", self._keys.exact(nsid, entry.exact_key), value, *ttl],
            ["ZADD", self._keys.ids, score, entry.id],
            ["SADD", self._keys.namespaces, nsid],
        ]
        if vector is not None:
            record = encode_records([LogRecord(entry.id, vector, entry.expires_at)], dim)
            commands += [
                self._append_command(nsid, generation, record),
                ["GET", self._keys.epoch],
                ["GET", self._keys.gen(nsid)],
            ]
        return commands

    def delete(self, entry_id: str) -> bool:
        raw = self._rest.command("GET", self._keys.entry(entry_id))
        if raw is None:
            return False
        entry, dim = self._unwrap(raw)
        nsid = self.namespace_id(entry.namespace)
        record = encode_records([LogRecord(entry.id, None)], dim) if dim else b""
        generation = self._writer_generation(nsid)
        removed, current = self._rest.command(
            "EVAL",
            DELETE_LUA,
            7,
            self._keys.entry(entry_id),
            self._keys.exact(nsid, entry.exact_key),
            self._keys.ids,
            self._keys.log(nsid, generation),
            self._keys.epoch,
            self._keys.gen(nsid),
            self._keys.segments(nsid, generation),
            bytes(raw).decode("utf-8"),
            entry_id,
            record.decode("ascii"),
            generation,
            self._segment_chars(max(1, len(record))),
            max(1, len(record)),
        )
        current = text(current)
        self._remember(nsid, current, current.split(".", 1)[0])
        if record and current != generation:
            self._reappend(nsid, record)
        return bool(removed)

    def entries(self, offset: int, limit: int) -> list[Entry]:
        """The ids' sorted set by expiry, latest first (entries without a TTL first), then one
        MGET of the entries."""
        if limit <= 0:
            return []
        ids = self._rest.command(
            "ZREVRANGEBYSCORE", self._keys.ids, "+inf", f"({self._clock()!r}",
            "LIMIT", offset, limit,
        )  # fmt: skip
        if not ids:
            return []
        names = (i.decode() if isinstance(i, bytes) else str(i) for i in ids)
        raws = self._rest.command("MGET", *(self._keys.entry(name) for name in names))
        found = (self._live_entry(raw) for raw in raws)
        return [entry for entry in found if entry is not None]

    def count(self) -> int:
        return int(self._rest.command("ZCOUNT", self._keys.ids, f"({self._clock()!r}", "+inf"))

    def clear(self) -> int:
        """Delete every entry and vector log and start a new epoch (every reader reloads).

        Not meant to run while other processes write: an entry stored meanwhile may survive
        partly (it is then dropped by the next compaction or its TTL)."""
        self._rest.command("SET", self._keys.epoch, uuid.uuid4().hex)
        keep = {key.encode() for key in self._keys.kept_by_clear}
        entry_prefix = self._keys.entry("").encode()
        entries: set[bytes] = set()
        cursor = b"0"
        while True:
            cursor, keys = self._rest.command(
                "SCAN", cursor.decode(), "MATCH", self._keys.pattern, "COUNT", 1000
            )
            doomed = [k for k in keys if k not in keep]
            entries.update(k for k in doomed if k.startswith(entry_prefix))
            if doomed:
                self._rest.command("UNLINK", *(k.decode("utf-8") for k in doomed))
            if cursor == b"0":
                break
        self._forget()
        return len(entries)

    def ping(self) -> None:
        answer = self._rest.command("PING")
        if answer != b"PONG":
            raise StoreError(f"Upstash PING answered {answer!r}")

    # ------------------------------------------------------------------ fill locks
    def try_lock(self, name: str, token: str, ttl: float) -> bool:
        """``SET NX PX``: one round trip; the lock expires by itself if its holder dies."""
        answer = self._rest.command(
            "SET", self._keys.lock(name), token, "NX", "PX", max(1, int(ttl * 1000))
        )
        return answer is not None

    def unlock(self, name: str, token: str) -> None:
        """Delete the lock only if ``token`` still holds it (one EVAL)."""
        self._rest.command("EVAL", UNLOCK_LUA, 1, self._keys.lock(name), token)

    def count_window(self, current: str, previous: str, ttl: float) -> tuple[int, int]:
        """``INCR`` (expiring after ``ttl`` from the first hit) and ``GET``: one atomic EVAL."""
        answer = self._rest.command(
            "EVAL",
            COUNT_WINDOW_LUA,
            2,
            self._keys.window(current),
            self._keys.window(previous),
            max(1, int(ttl * 1000)),
        )
        if not isinstance(answer, list) or len(answer) != 2:
            raise StoreError(f"Upstash answered a window count with {answer!r}")
        return int(answer[0]), int(answer[1])

    # ------------------------------------------------------------------ kept documents
    def put_document(self, name: str, document: Mapping[str, Any], ttl: float | None) -> None:
        """One ``SET`` (``PX``: the TTL; the key expires by itself)."""
        value = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        expiry: list[str | int] = [] if ttl is None else ["PX", max(1, math.ceil(ttl * 1000))]
        self._rest.command("SET", self._keys.document(name), value, *expiry)

    def get_document(self, name: str) -> dict[str, Any] | None:
        """One ``GET``."""
        raw = self._rest.command("GET", self._keys.document(name))
        if raw is None:
            return None
        try:
            document = json.loads(bytes(raw))
        except (ValueError, TypeError) as exc:
            raise StoreError(f"corrupt document in Upstash: {exc}") from exc
        if not isinstance(document, dict):
            raise StoreError("corrupt document in Upstash: not a JSON object")
        return document

    # ------------------------------------------------------------------ entries as stored
    @staticmethod
    def _wrap(entry: Entry, dim: int) -> str:
        return json.dumps(
            {"v": 1, "dim": dim, "entry": entry.to_json()},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @staticmethod
    def _unwrap(raw: Any) -> tuple[Entry, int]:
        try:
            data = json.loads(bytes(raw))
            return Entry.from_json(data["entry"]), int(data["dim"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"corrupt entry in Upstash: {exc}") from exc

    def _live_entry(self, raw: Any) -> Entry | None:
        if raw is None:
            return None
        entry, _ = self._unwrap(raw)
        return None if entry.expired(self._clock()) else entry
