"""Compaction of the vector logs: only the live records, under a new generation.

Compaction writes the live records (no tombstones, no expired or deleted entries) under a new
generation, segment by segment and expiring, then switches with one Lua script that checks nobody
else switched, copies the records appended meanwhile, makes the new log permanent and deletes the
old one; readers see the new generation in their next sync and reload (``SyncResult.reset``). A
compactor that loses the switch drops its staging log and starts over.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from ..._errors import StoreError
from ..._types import LogRecord
from ._codec import encode_records, record_dtype
from ._keys import namespace_id
from ._log import MAX_REAPPENDS, SEGMENT_STRIDE, VectorLog
from ._rest import text
from ._scripts import SWITCH_LUA

#: Seconds an unfinished compaction's new log may live before Redis drops it.
STAGING_TTL_MS = 3_600_000
#: Largest APPEND a compaction sends in one request (Upstash refuses requests above 10 MB).
MAX_WRITE_CHARS = 4 * 1024 * 1024


class Compaction(VectorLog):
    """The compaction of UpstashStore (a base of it)."""

    def compact(self) -> int:
        """Rewrite every namespace's log with only its live records (no tombstones, no expired
        or deleted entries) under a new generation; drop expired ids from the count. Returns the
        number of log records dropped."""
        dropped = sum(
            self.compact_namespace_id(text(n))
            for n in self._rest.command("SMEMBERS", self._keys.namespaces)
        )
        self._rest.command("ZREMRANGEBYSCORE", self._keys.ids, "-inf", repr(self._clock()))
        return dropped

    def compact_namespace(self, namespace: str) -> int:
        return self.compact_namespace_id(namespace_id(namespace))

    def compact_namespace_id(self, nsid: str) -> int:
        for _ in range(MAX_REAPPENDS):
            epoch, gen = self._current_generation(nsid)
            generation = f"{epoch}.{gen}"
            records, end = self._read_log(nsid, generation, 0, None)
            if not records:
                return 0
            live = self._live_records(records)
            if len(live) == len(records):
                return 0  # nothing to drop: no rewrite, readers keep their offsets
            dim = next((int(r.vector.size) for r in live if r.vector is not None), 0)
            new_gen = uuid.uuid4().hex
            self._write_log(self._keys.log(nsid, f"{epoch}.{new_gen}"), live, dim)
            with self._lock:
                record_chars = self._record_chars[nsid]
            switched = self._rest.command(
                "EVAL",
                SWITCH_LUA,
                6,
                self._keys.epoch,
                self._keys.gen(nsid),
                self._keys.log(nsid, generation),
                self._keys.log(nsid, f"{epoch}.{new_gen}"),
                self._keys.segments(nsid, generation),
                self._keys.segments(nsid, f"{epoch}.{new_gen}"),
                epoch,
                gen,
                *divmod(end, SEGMENT_STRIDE),
                new_gen,
                self._segment_chars(record_chars),
                record_chars,
            )
            if switched == 1:
                self._remember(nsid, f"{epoch}.{new_gen}", epoch)
                return len(records) - len(live)
        raise StoreError(f"compaction of namespace {nsid} kept losing the race to other writers")

    def _live_records(self, records: Sequence[LogRecord]) -> list[LogRecord]:
        last: dict[str, LogRecord] = {}
        for record in records:
            last.pop(record.entry_id, None)  # keep the latest position
            last[record.entry_id] = record
        now = self._clock()
        candidates = [
            r
            for r in last.values()
            if r.vector is not None and (r.expires_at is None or r.expires_at > now)
        ]
        alive: list[LogRecord] = []
        for start in range(0, len(candidates), 1000):
            batch = candidates[start : start + 1000]
            exists = self._rest.pipeline([["EXISTS", self._keys.entry(r.entry_id)] for r in batch])
            alive += [r for r, e in zip(batch, exists, strict=True) if e]
        return alive

    def _write_log(self, key: str, records: Sequence[LogRecord], dim: int) -> None:
        """Write a new generation's log (``key``: its segment 0), segment by segment; every key
        expires unless the compaction's switch makes it permanent."""
        if not records:
            return
        size = record_dtype(dim).itemsize
        per_segment = self._segment_chars(size * 4 // 3) // (size * 4 // 3)
        per_request = max(1, (min(self._chunk, MAX_WRITE_CHARS) * 3 // 4) // size)
        counter = self._keys.segments_of(key)
        for first in range(0, len(records), per_segment):
            segment = first // per_segment
            segment_key = self._keys.segment(key, segment)
            stop = min(first + per_segment, len(records))
            for start in range(first, stop, per_request):
                piece = encode_records(records[start : min(start + per_request, stop)], dim)
                commands: list[list[str | int]] = [
                    ["APPEND", segment_key, piece.decode("ascii")],
                    ["PEXPIRE", segment_key, STAGING_TTL_MS],
                ]
                if segment > 0:
                    commands.append(["SET", counter, segment, "PX", STAGING_TTL_MS])
                self._rest.multi_exec(commands)
