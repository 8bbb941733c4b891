"""The vector logs as one process sees them: segments, generations, reading and re-appending.

Segments: Upstash caps one value at 100 MB on its Free and Pay-as-you-go plans, so a log is split
into segment keys of at most ``segment_bytes`` of base64 text each (rounded down to whole
records; 32 MiB by default). A writer appends with one Lua script that appends to the last
segment if the record fits, else to the next one and advances ``seg:N:GEN``, all atomically, so a
segment is complete before the counter moves past it. A reader reads the counter before the log
in the same pipeline: when a segment ends and the counter said a later one exists, it goes on
there. A cursor's offset is ``segment * 2**40 + character offset`` in that segment.

Generations: a writer appends to the log of the generation it last saw and reads the current
generation in the same transaction; when they differ (a compaction or a clear happened in
between) it appends the record again to the current log and deletes the stale keys it recreated.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..._errors import StoreError
from ..._types import LogRecord
from ._codec import decode_records
from ._keys import KeyLayout
from ._rest import UpstashREST, text
from ._scripts import APPEND_LUA

#: Default largest log segment, in stored (base64) characters: well under Upstash's 100 MB value
#: cap on its Free and Pay-as-you-go plans.
DEFAULT_SEGMENT_BYTES = 32 * 1024 * 1024
#: A cursor's offset is ``segment * SEGMENT_STRIDE + character offset in that segment``.
SEGMENT_STRIDE = 2**40
#: How often a writer re-appends a record when generations keep changing under it.
MAX_REAPPENDS = 8


class VectorLog:
    """The base of UpstashStore that holds what this process knows of each namespace's log (the
    generation last seen, the record size) and the round trips that read and append to it."""

    def __init__(
        self,
        rest: UpstashREST,
        keys: KeyLayout,
        *,
        clock: Callable[[], float],
        chunk_bytes: int,
        segment_bytes: int,
    ) -> None:
        self._rest = rest
        self._keys = keys
        self._clock = clock
        self._chunk = chunk_bytes - chunk_bytes % 4  # whole base64 quanta
        self._segment = segment_bytes
        self._lock = threading.Lock()
        self._generations: dict[str, str] = {}  # namespace id -> generation last seen
        self._record_chars: dict[str, int] = {}  # namespace id -> record size in the log
        self._epoch: str | None = None

    def _segment_chars(self, record_chars: int) -> int:
        """The most characters a segment holds: whole records, at least one."""
        return max(1, self._segment // record_chars) * record_chars

    def _read_length(self, nsid: str) -> int:
        chars = self._record_chars.get(nsid)
        if chars is None or chars > self._chunk:
            return max(self._chunk, chars or 0)
        return self._chunk - self._chunk % chars

    def _read_log(
        self, nsid: str, generation: str, position: int, first: tuple[bytes, int, int] | None
    ) -> tuple[list[LogRecord], int]:
        """Read records from ``position`` (segment * SEGMENT_STRIDE + offset) to the end of the
        log, one chunk per round trip. ``first``: a chunk already read at ``position``, the
        length that was asked for and the last segment, as read before that chunk.

        The last segment is read before any of the log: writers move it on only once a segment
        is full, so every segment before it is complete and a reader that reaches its end can
        go on to the next one without missing a record."""
        segment, offset = divmod(position, SEGMENT_STRIDE)
        last: int | None = None
        records: list[LogRecord] = []
        while True:
            key = self._keys.log(nsid, generation, segment)
            if first is None:
                with self._lock:
                    length = self._read_length(nsid)
                read: list[str | int] = ["GETRANGE", key, offset, offset + length - 1]
                if last is None:
                    counter, data = self._rest.pipeline(
                        [["GET", self._keys.segments(nsid, generation)], read]
                    )
                    last = int(text(counter))
                else:
                    data = self._rest.command(*read)
                data = bytes(data or b"")
            else:
                data, length, last = first
                first = None
            parsed, used, chars = decode_records(data)
            if chars is not None:
                with self._lock:
                    self._record_chars[nsid] = chars
            records += parsed
            offset += used
            if len(data) < length:  # reached the end of the segment
                if used != len(data):
                    raise StoreError(f"corrupt vector log {key}: it ends inside a record")
                if segment >= last:
                    return records, segment * SEGMENT_STRIDE + offset
                segment, offset = segment + 1, 0

    def _current_generation(self, nsid: str) -> tuple[str, str]:
        """The epoch and the namespace's gen, as stored now (one pipeline)."""
        epoch, gen = self._rest.pipeline([["GET", self._keys.epoch], ["GET", self._keys.gen(nsid)]])
        return text(epoch), text(gen)

    def _writer_generation(self, nsid: str) -> str:
        with self._lock:
            known = self._generations.get(nsid)
        if known is not None:
            return known
        epoch, gen = self._current_generation(nsid)
        generation = f"{epoch}.{gen}"
        self._remember(nsid, generation, epoch)
        return generation

    def _append_command(self, nsid: str, generation: str, record: bytes) -> list[str | int]:
        """The EVAL that appends ``record`` to ``generation``'s log, in its last segment if it
        fits, else in a new one; it answers the segment it wrote to."""
        return [
            "EVAL",
            APPEND_LUA,
            2,
            self._keys.segments(nsid, generation),
            self._keys.log(nsid, generation),
            record.decode("ascii"),
            self._segment_chars(len(record)),
            len(record),
        ]

    def _settle(
        self, nsid: str, appended_to: str, record: bytes, segment: Any, epoch: Any, gen: Any
    ) -> None:
        current = f"{text(epoch)}.{text(gen)}"
        self._remember(nsid, current, text(epoch))
        if current != appended_to:
            self._reappend(nsid, record, stale=(appended_to, int(segment)))

    def _reappend(self, nsid: str, record: bytes, stale: tuple[str, int] | None = None) -> None:
        """Append ``record`` to the current generation's log, checking it in the same
        transaction; delete the stale keys (segment, counter) an append may have recreated."""
        for _ in range(MAX_REAPPENDS):
            with self._lock:
                target = self._generations[nsid]
            commands: list[list[str | int]] = [
                self._append_command(nsid, target, record),
                ["GET", self._keys.epoch],
                ["GET", self._keys.gen(nsid)],
            ]
            if stale is not None:
                commands += [
                    ["DEL", self._keys.log(nsid, stale[0], stale[1])],
                    ["DEL", self._keys.segments(nsid, stale[0])],
                ]
            results = self._rest.multi_exec(commands)
            current = f"{text(results[1])}.{text(results[2])}"
            self._remember(nsid, current, text(results[1]))
            if current == target:
                return
            stale = (target, int(results[0]))
        raise StoreError(f"vector log of namespace {nsid}: the generation kept changing")

    def _remember(self, nsid: str, generation: str, epoch: str) -> None:
        with self._lock:
            self._generations[nsid] = generation
            self._epoch = epoch

    def _forget(self) -> None:
        """Drop every generation seen (after a clear)."""
        with self._lock:
            self._generations.clear()
            self._epoch = None
