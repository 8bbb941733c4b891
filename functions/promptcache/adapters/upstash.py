"""Upstash Redis over its REST API: the deployed store, and exact counters for the stats.

Key layout (``p`` = the key prefix, ``pc:`` by default; ``N`` = the first 32 hex digits of the
SHA-256 of a namespace, so any namespace string makes a short, unambiguous key)::

    p e:ID            the entry as JSON, PX = its TTL                   get()
    p x:N:EXACT_KEY   the same JSON, PX = its TTL                       exact lookup in sync()
    p ids             ZSET entry id -> expires_at (+inf: never)         count()
    p nss             SET of the namespace ids N                        compact()
    p epoch           random; changes on clear()                        } a namespace's generation
    p gen:N           random; changes when N's log is compacted         } is "EPOCH.GEN"
    p log:N:GEN       segment 0 of the namespace's APPEND-only log      sync()
    p log:N:GEN:S     segment S >= 1 of that log                        sync()
    p seg:N:GEN       the log's last segment S (absent: 0)              sync()
    p stats           HASH of exact counters (HINCRBYFLOAT)             UpstashStats

Round trips: ``sync`` is one /pipeline (GET of the exact key, which holds the entry itself, GET
epoch, GET gen, GET of the last segment, GETRANGE of the log from the reader's offset) unless the
reader's generation is stale or a backlog exceeds one chunk or segment; ``get`` is one GET;
``put`` is one /multi-exec (both SETs with PX, ZADD, SADD, the log append, and GETs of the
generation to check the append went to the current log).

Segments: Upstash caps one value at 100 MB on its Free and Pay-as-you-go plans, so a log is split
into segment keys of at most ``segment_bytes`` of base64 text each (rounded down to whole
records; 32 MiB by default). A writer appends with one Lua script that appends to the last
segment if the record fits, else to the next one and advances ``seg:N:GEN``, all atomically, so a
segment is complete before the counter moves past it. A reader reads the counter before the log
in the same pipeline: when a segment ends and the counter said a later one exists, it goes on
there. A cursor's offset is ``segment * 2**40 + character offset`` in that segment. The scripts
name segment keys they derive from the one passed in KEYS, so they rely on Upstash's default
global script lock (no ``allow-key-locking`` flag).

The vector log is a sequence of fixed-size records (one size per namespace, as the dimension is)::

    0   u8       version (1)
    1   u8       kind: 1 = vector, 0 = tombstone
    2   u16      dim
    4   f64      expires_at (NaN: never)
    12  32 bytes entry id (UTF-8, NUL-padded)
    44  f32[dim] the unit vector (zeros in a tombstone)
    ..  0-2 zero bytes, so the size is a multiple of 3

JSON cannot carry raw bytes into Redis, so each record is APPENDed base64-encoded; as its size is a
multiple of 3, the log is one valid base64 stream and any record boundary is a valid place to
start reading. APPEND is atomic, so records of concurrent writers never interleave. Every byte
offset a reader keeps is a record boundary.

Generations: a writer appends to the log of the generation it last saw and reads the current
generation in the same transaction; when they differ (a compaction or a clear happened in
between) it appends the record again to the current log and deletes the stale keys it recreated.
Compaction writes the live records under a new generation, then switches with one Lua script
that checks nobody else switched, copies the records appended meanwhile and deletes the old log;
readers see the new generation in their next sync and reload (``SyncResult.reset``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import struct
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from .._errors import ConfigError, StatsError, StoreError
from .._types import Cursor, Entry, LogRecord, SyncResult

#: Default bytes of stored log read per request (``PROMPTCACHE_UPSTASH_CHUNK_BYTES``).
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
MIN_CHUNK_BYTES = 4096

_VERSION = 1
_HEADER = struct.Struct("<BBHd32s")  # version, kind, dim, expires_at, entry id
_ID_BYTES = 32
#: base64 characters that always cover a whole header (45 bytes)
_HEADER_CHARS = 60
#: How often a writer re-appends a record when generations keep changing under it.
_MAX_REAPPENDS = 8
#: Seconds an unfinished compaction's new log may live before Redis drops it.
_STAGING_TTL_MS = 3_600_000
#: Largest APPEND a compaction sends in one request (Upstash refuses requests above 10 MB).
_MAX_WRITE_CHARS = 4 * 1024 * 1024
#: Default largest log segment, in stored (base64) characters: well under Upstash's 100 MB value
#: cap on its Free and Pay-as-you-go plans.
DEFAULT_SEGMENT_BYTES = 32 * 1024 * 1024
#: A cursor's offset is ``segment * SEGMENT_STRIDE + character offset in that segment``.
SEGMENT_STRIDE = 2**40

# append(counter, base, text, cap, rec): appends whole records of `rec` characters from `text` to
# the log whose segment 0 is `base`, never letting a segment pass `cap` characters (a multiple of
# `rec`); a full segment moves the counter on. Returns the last segment written to.
_APPEND_FUNCTION = """
local function segment_key(base, s)
  if s == 0 then return base end
  return base .. ':' .. s
end
local function append(counter, base, text, cap, rec)
  local s = tonumber(redis.call('GET', counter) or '0')
  local pos = 1
  while pos <= #text do
    local key = segment_key(base, s)
    local room = math.floor((cap - redis.call('STRLEN', key)) / rec) * rec
    if room <= 0 then
      s = s + 1
      redis.call('SET', counter, s)
    else
      local piece = string.sub(text, pos, pos + room - 1)
      redis.call('APPEND', key, piece)
      pos = pos + #piece
    end
  end
  return s
end
"""

# KEYS: segment counter, log (segment 0).  ARGV: records, segment cap, record size (characters).
_APPEND_LUA = (
    _APPEND_FUNCTION
    + "return append(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))\n"
)

# KEYS: entry, exact, ids, log, epoch, gen, segment counter.
# ARGV: entry JSON, id, tombstone record, generation, segment cap, record size.
# Deletes the entry, its exact key only while that still holds this entry (a newer answer for the
# same prompt keeps its key), and appends the tombstone if `log` is the current generation's.
_DELETE_LUA = (
    _APPEND_FUNCTION
    + """
local removed = redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[2])
local current = (redis.call('GET', KEYS[5]) or '0') .. '.' .. (redis.call('GET', KEYS[6]) or '0')
if ARGV[3] ~= '' and current == ARGV[4] then
  append(KEYS[7], KEYS[4], ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[6]))
end
return {removed, current}
"""
)

# KEYS: epoch, gen, old log, new log, old segment counter, new segment counter.
# ARGV: expected epoch, expected gen, segment and offset read up to, new gen, segment cap,
# record size.  The compaction switch, only if nobody switched since the compactor read the old
# log: carries over what was appended to the old log meanwhile, makes the new log permanent,
# switches and deletes the old log.
_SWITCH_LUA = (
    _APPEND_FUNCTION
    + """
local function drop(base, counter)
  for s = 0, tonumber(redis.call('GET', counter) or '0') do
    redis.call('DEL', segment_key(base, s))
  end
  redis.call('DEL', counter)
end
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] or (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2]
then
  drop(KEYS[4], KEYS[6])
  return 0
end
local first, cap, rec = tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7])
for s = first, tonumber(redis.call('GET', KEYS[5]) or '0') do
  local from = 0
  if s == first then from = tonumber(ARGV[4]) end
  local tail = redis.call('GETRANGE', segment_key(KEYS[3], s), from, -1)
  if #tail > 0 then append(KEYS[6], KEYS[4], tail, cap, rec) end
end
for s = 0, tonumber(redis.call('GET', KEYS[6]) or '0') do
  redis.call('PERSIST', segment_key(KEYS[4], s))
end
redis.call('PERSIST', KEYS[6])
redis.call('SET', KEYS[2], ARGV[5])
drop(KEYS[3], KEYS[5])
return 1
"""
)


# ---------------------------------------------------------------------------- REST client
class UpstashREST:
    """The Upstash REST protocol on an injected ``httpx.Client``: ``POST /`` (one command),
    ``/pipeline`` and ``/multi-exec``. Every string result comes back as ``bytes``.

    With ``base64_responses`` (the default) requests carry ``Upstash-Encoding: base64`` and every
    string result is decoded from base64, so no byte is ever replaced on the way back.
    """

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        token: str,
        *,
        base64_responses: bool = True,
        error: type[StoreError] | type[StatsError] = StoreError,
    ) -> None:
        if not url:
            raise ConfigError("the Upstash REST URL is empty (UPSTASH_REDIS_REST_URL)")
        if not token:
            raise ConfigError(
                "the Upstash REST token is empty (UPSTASH_REDIS_REST_TOKEN or "
                "UPSTASH_REDIS_REST_TOKEN_SSM_PARAMETER)"
            )
        self._client = client
        self._url = url.rstrip("/")
        self._base64 = base64_responses
        self._error = error
        self._headers = {"Authorization": f"Bearer {token}"}
        if base64_responses:
            self._headers["Upstash-Encoding"] = "base64"

    def command(self, *args: str | int) -> Any:
        data = self._post("", list(args))
        if not isinstance(data, dict) or "result" not in data:
            raise self._error(f"Upstash: unexpected answer {str(data)[:200]}")
        return self._decode(data["result"])

    def pipeline(self, commands: Sequence[Sequence[str | int]]) -> list[Any]:
        """Several commands in one round trip (not atomic)."""
        return self._batch("/pipeline", commands)

    def multi_exec(self, commands: Sequence[Sequence[str | int]]) -> list[Any]:
        """Several commands in one atomic transaction (one round trip)."""
        return self._batch("/multi-exec", commands)

    def _batch(self, path: str, commands: Sequence[Sequence[str | int]]) -> list[Any]:
        data = self._post(path, [list(c) for c in commands])
        if not isinstance(data, list) or len(data) != len(commands):
            raise self._error(f"Upstash {path}: unexpected answer {str(data)[:200]}")
        results = []
        for command, item in zip(commands, data, strict=True):
            if not isinstance(item, dict):
                raise self._error(f"Upstash {path}: unexpected item {str(item)[:200]}")
            if "error" in item:
                raise self._error(f"Upstash {path}: {command[0]} failed: {item['error']}")
            if "result" not in item:
                raise self._error(f"Upstash {path}: unexpected item {str(item)[:200]}")
            results.append(self._decode(item["result"]))
        return results

    def _post(self, path: str, body: Any) -> Any:
        where = f"Upstash {path or '/'}"
        try:
            response = self._client.post(self._url + path, json=body, headers=self._headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._error(f"{where}: {type(exc).__name__}: {exc}") from exc
        except (TypeError, ValueError) as exc:  # a value that cannot be encoded as JSON/UTF-8
            raise self._error(f"{where}: cannot encode the request: {exc}") from exc
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            if response.status_code == 401:
                raise self._error(f"{where}: the token was rejected (401)") from exc
            raise self._error(
                f"{where}: HTTP {response.status_code}: {_error_text(response)}"
            ) from exc
        try:
            data = response.json()
        except ValueError as exc:
            raise self._error(f"{where}: the answer is not JSON: {response.text[:200]!r}") from exc
        if isinstance(data, dict) and "error" in data:
            raise self._error(f"{where}: {data['error']}")
        return data

    def _decode(self, value: Any) -> Any:
        if isinstance(value, str):
            if not self._base64:
                return value.encode("utf-8")
            if value == "OK":  # the one string Upstash leaves unencoded
                return b"OK"
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise self._error(f"Upstash: a result is not base64: {value[:60]!r}") from exc
        if isinstance(value, list):
            return [self._decode(v) for v in value]
        return value


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return str(data)[:200]


# ---------------------------------------------------------------------------- log records
def record_dtype(dim: int) -> np.dtype[Any]:
    """The numpy layout of one log record of a ``dim``-dimensional namespace."""
    size = _HEADER.size + 4 * dim
    return np.dtype(
        {
            "names": ["ver", "kind", "dim", "exp", "id", "vec"],
            "formats": ["u1", "u1", "<u2", "<f8", f"S{_ID_BYTES}", ("<f4", (dim,))],
            "offsets": [0, 1, 2, 4, 12, _HEADER.size],
            "itemsize": size + (-size) % 3,
        }
    )


def _id_bytes(entry_id: str) -> bytes:
    raw = entry_id.encode("utf-8")
    if not raw or len(raw) > _ID_BYTES or b"\x00" in raw:
        raise StoreError(f"entry id {entry_id!r} must be 1-{_ID_BYTES} UTF-8 bytes without NUL")
    return raw


def encode_records(records: Sequence[LogRecord], dim: int) -> bytes:
    """Records as stored in the log (base64 text). A tombstone has ``vector=None``."""
    if not 0 < dim <= 0xFFFF:
        raise StoreError(f"a vector log holds 1-65535 dimensions, not {dim}")
    arr = np.zeros(len(records), dtype=record_dtype(dim))
    arr["ver"] = _VERSION
    arr["dim"] = dim
    arr["id"] = [_id_bytes(r.entry_id) for r in records]
    arr["exp"] = [math.nan if r.expires_at is None else r.expires_at for r in records]
    kinds = np.array([r.vector is not None for r in records], dtype=bool)
    arr["kind"] = kinds
    if kinds.any():
        vectors = [
            np.asarray(r.vector, dtype=np.float32).reshape(-1)
            for r in records
            if r.vector is not None
        ]
        wrong = next((v.shape[0] for v in vectors if v.shape[0] != dim), None)
        if wrong is not None:
            raise StoreError(f"a vector has {wrong} dimensions, the log holds {dim}")
        arr["vec"][kinds] = np.stack(vectors)
    return base64.b64encode(arr.tobytes())


def decode_records(text: bytes) -> tuple[list[LogRecord], int, int | None]:
    """Parse whole records from base64 log text read at a record boundary.

    Returns the records, how many characters they used (a trailing partial record is left for the
    next read) and the size of one record in characters (None when ``text`` is too short to tell).
    """
    if len(text) < _HEADER_CHARS:
        return [], 0, None
    try:
        version, kind, dim, _, _ = _HEADER.unpack_from(base64.b64decode(text[:_HEADER_CHARS]))
    except (binascii.Error, ValueError, struct.error) as exc:
        raise StoreError(f"corrupt vector log: {exc}") from exc
    if version != _VERSION or kind not in (0, 1) or dim == 0:
        raise StoreError(f"corrupt vector log: header version={version} kind={kind} dim={dim}")
    dtype = record_dtype(dim)
    chars = dtype.itemsize * 4 // 3
    n = len(text) // chars
    if n == 0:
        return [], 0, chars
    try:
        raw = base64.b64decode(text[: n * chars], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StoreError(f"corrupt vector log: {exc}") from exc
    arr = np.frombuffer(raw, dtype=dtype)
    kinds = arr["kind"]
    if (arr["ver"] != _VERSION).any() or (arr["dim"] != dim).any() or (kinds > 1).any():
        raise StoreError("corrupt vector log: a record header does not match the namespace's")
    vectors = arr["vec"]
    records = [
        LogRecord(
            raw_id.decode("utf-8", errors="replace"),
            vectors[i] if is_vector else None,
            None if exp != exp else exp,  # NaN: never expires
        )
        for i, (raw_id, is_vector, exp) in enumerate(
            zip(arr["id"].tolist(), kinds.tolist(), arr["exp"].tolist(), strict=True)
        )
    ]
    return records, n * chars, chars


# ---------------------------------------------------------------------------- the store
def _text(value: Any, default: str = "0") -> str:
    return default if value is None else bytes(value).decode("utf-8", errors="replace")


class UpstashStore:
    """The Store protocol on Upstash Redis (see the module docstring for keys and formats)."""

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        token: str,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        prefix: str = "pc:",
        base64_responses: bool = True,
        clock: Callable[[], float] = time.time,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if chunk_bytes < MIN_CHUNK_BYTES:
            raise ConfigError(f"the Upstash chunk size must be >= {MIN_CHUNK_BYTES} bytes")
        if not 0 < segment_bytes < SEGMENT_STRIDE:
            raise ConfigError(f"the Upstash log segment size must be 1-{SEGMENT_STRIDE - 1} bytes")
        self._segment = segment_bytes
        self._rest = UpstashREST(client, url, token, base64_responses=base64_responses)
        self._chunk = chunk_bytes - chunk_bytes % 4  # whole base64 quanta
        self._prefix = prefix
        self._clock = clock
        self._lock = threading.Lock()
        self._generations: dict[str, str] = {}  # namespace id -> generation last seen
        self._record_chars: dict[str, int] = {}  # namespace id -> record size in the log
        self._epoch: str | None = None

    # ------------------------------------------------------------------ keys
    @staticmethod
    def namespace_id(namespace: str) -> str:
        return hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:32]

    def _entry_key(self, entry_id: str) -> str:
        return f"{self._prefix}e:{entry_id}"

    def _exact_key(self, nsid: str, exact_key: str) -> str:
        return f"{self._prefix}x:{nsid}:{exact_key}"

    def _gen_key(self, nsid: str) -> str:
        return f"{self._prefix}gen:{nsid}"

    def _log_key(self, nsid: str, generation: str, segment: int = 0) -> str:
        base = f"{self._prefix}log:{nsid}:{generation}"
        return base if segment == 0 else f"{base}:{segment}"

    def _segments_key(self, nsid: str, generation: str) -> str:
        return f"{self._prefix}seg:{nsid}:{generation}"

    def _segment_chars(self, record_chars: int) -> int:
        """The most characters a segment holds: whole records, at least one."""
        return max(1, self._segment // record_chars) * record_chars

    @property
    def _epoch_key(self) -> str:
        return f"{self._prefix}epoch"

    @property
    def _ids_key(self) -> str:
        return f"{self._prefix}ids"

    @property
    def _namespaces_key(self) -> str:
        return f"{self._prefix}nss"

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
            commands.append(["GET", self._exact_key(nsid, exact_key)])
        commands += [
            ["GET", self._epoch_key],
            ["GET", self._gen_key(nsid)],
            ["GET", self._segments_key(nsid, guess)],  # before the GETRANGE: see _read_log
            ["GETRANGE", self._log_key(nsid, guess, segment), offset, offset + length - 1],
        ]
        results = self._rest.pipeline(commands)
        exact = self._live_entry(results[0]) if exact_key is not None else None
        epoch, gen, last, data = results[-4:]
        generation = f"{_text(epoch)}.{_text(gen)}"
        self._remember(nsid, generation, _text(epoch))
        if generation != guess:  # compacted or cleared since: what was read is stale
            records, end = self._read_log(nsid, generation, 0, None)
            return SyncResult(exact, tuple(records), Cursor(generation, end), True)
        first = (bytes(data or b""), length, int(_text(last)))
        records, end = self._read_log(nsid, generation, position, first)
        reset = cursor is None or cursor.generation != generation
        return SyncResult(exact, tuple(records), Cursor(generation, end), reset)

    def get(self, entry_id: str) -> Entry | None:
        return self._live_entry(self._rest.command("GET", self._entry_key(entry_id)))

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
        _id_bytes(entry.id)
        dim = 0 if vector is None else int(np.asarray(vector).size)
        value = self._wrap(entry, dim)
        ttl: list[str | int] = []
        if entry.expires_at is not None:
            ttl = ["PX", max(1, math.ceil((entry.expires_at - self._clock()) * 1000))]
        score = "+inf" if entry.expires_at is None else repr(float(entry.expires_at))
        commands: list[list[str | int]] = [
            ["SET", self._entry_key(entry.id), value, *ttl],
            ["SET", self._exact_key(nsid, entry.exact_key), value, *ttl],
            ["ZADD", self._ids_key, score, entry.id],
            ["SADD", self._namespaces_key, nsid],
        ]
        if vector is not None:
            record = encode_records([LogRecord(entry.id, vector, entry.expires_at)], dim)
            commands += [
                self._append_command(nsid, generation, record),
                ["GET", self._epoch_key],
                ["GET", self._gen_key(nsid)],
            ]
        return commands

    def delete(self, entry_id: str) -> bool:
        raw = self._rest.command("GET", self._entry_key(entry_id))
        if raw is None:
            return False
        entry, dim = self._unwrap(raw)
        nsid = self.namespace_id(entry.namespace)
        record = encode_records([LogRecord(entry.id, None)], dim) if dim else b""
        generation = self._writer_generation(nsid)
        removed, current = self._rest.command(
            "EVAL",
            _DELETE_LUA,
            7,
            self._entry_key(entry_id),
            self._exact_key(nsid, entry.exact_key),
            self._ids_key,
            self._log_key(nsid, generation),
            self._epoch_key,
            self._gen_key(nsid),
            self._segments_key(nsid, generation),
            bytes(raw).decode("utf-8"),
            entry_id,
            record.decode("ascii"),
            generation,
            self._segment_chars(max(1, len(record))),
            max(1, len(record)),
        )
        current = _text(current)
        self._remember(nsid, current, current.split(".", 1)[0])
        if record and current != generation:
            self._reappend(nsid, record)
        return bool(removed)

    def count(self) -> int:
        return int(self._rest.command("ZCOUNT", self._ids_key, f"({self._clock()!r}", "+inf"))

    def clear(self) -> int:
        """Delete every entry and vector log and start a new epoch (every reader reloads).

        Not meant to run while other processes write: an entry stored meanwhile may survive
        partly (it is then dropped by the next compaction or its TTL)."""
        self._rest.command("SET", self._epoch_key, uuid.uuid4().hex)
        keep = {self._epoch_key.encode(), f"{self._prefix}stats".encode()}
        entry_prefix = self._entry_key("").encode()
        entries: set[bytes] = set()
        cursor = b"0"
        pattern = _glob_escape(self._prefix) + "*"
        while True:
            cursor, keys = self._rest.command(
                "SCAN", cursor.decode(), "MATCH", pattern, "COUNT", 1000
            )
            doomed = [k for k in keys if k not in keep]
            entries.update(k for k in doomed if k.startswith(entry_prefix))
            if doomed:
                self._rest.command("UNLINK", *(k.decode("utf-8") for k in doomed))
            if cursor == b"0":
                break
        with self._lock:
            self._generations.clear()
            self._epoch = None
        return len(entries)

    def ping(self) -> None:
        answer = self._rest.command("PING")
        if answer != b"PONG":
            raise StoreError(f"Upstash PING answered {answer!r}")

    # ------------------------------------------------------------------ fill locks
    def try_lock(self, name: str, token: str, ttl: float) -> bool:
        """``SET NX PX``: one round trip; the lock expires by itself if its holder dies."""
        answer = self._rest.command(
            "SET", f"{self._prefix}lock:{name}", token, "NX", "PX", max(1, int(ttl * 1000))
        )
        return answer is not None

    def unlock(self, name: str, token: str) -> None:
        """Delete the lock only if ``token`` still holds it (one EVAL)."""
        self._rest.command("EVAL", _UNLOCK_LUA, 1, f"{self._prefix}lock:{name}", token)

    def count_window(self, current: str, previous: str, ttl: float) -> tuple[int, int]:
        """``INCR`` (expiring after ``ttl`` from the first hit) and ``GET``: one atomic EVAL."""
        answer = self._rest.command(
            "EVAL",
            _COUNT_WINDOW_LUA,
            2,
            f"{self._prefix}window:{current}",
            f"{self._prefix}window:{previous}",
            max(1, int(ttl * 1000)),
        )
        if not isinstance(answer, list) or len(answer) != 2:
            raise StoreError(f"Upstash answered a window count with {answer!r}")
        return int(answer[0]), int(answer[1])

    # ------------------------------------------------------------------ compaction
    def compact(self) -> int:
        """Rewrite every namespace's log with only its live records (no tombstones, no expired
        or deleted entries) under a new generation; drop expired ids from the count. Returns the
        number of log records dropped."""
        dropped = sum(
            self.compact_namespace_id(_text(n))
            for n in self._rest.command("SMEMBERS", self._namespaces_key)
        )
        self._rest.command("ZREMRANGEBYSCORE", self._ids_key, "-inf", repr(self._clock()))
        return dropped

    def compact_namespace(self, namespace: str) -> int:
        return self.compact_namespace_id(self.namespace_id(namespace))

    def compact_namespace_id(self, nsid: str) -> int:
        for _ in range(_MAX_REAPPENDS):
            epoch, gen = (
                _text(v)
                for v in self._rest.pipeline(
                    [["GET", self._epoch_key], ["GET", self._gen_key(nsid)]]
                )
            )
            generation = f"{epoch}.{gen}"
            records, end = self._read_log(nsid, generation, 0, None)
            if not records:
                return 0
            live = self._live_records(records)
            if len(live) == len(records):
                return 0  # nothing to drop: no rewrite, readers keep their offsets
            dim = next((int(r.vector.size) for r in live if r.vector is not None), 0)
            new_gen = uuid.uuid4().hex
            self._write_log(self._log_key(nsid, f"{epoch}.{new_gen}"), live, dim)
            with self._lock:
                record_chars = self._record_chars[nsid]
            switched = self._rest.command(
                "EVAL",
                _SWITCH_LUA,
                6,
                self._epoch_key,
                self._gen_key(nsid),
                self._log_key(nsid, generation),
                self._log_key(nsid, f"{epoch}.{new_gen}"),
                self._segments_key(nsid, generation),
                self._segments_key(nsid, f"{epoch}.{new_gen}"),
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
            exists = self._rest.pipeline([["EXISTS", self._entry_key(r.entry_id)] for r in batch])
            alive += [r for r, e in zip(batch, exists, strict=True) if e]
        return alive

    def _write_log(self, key: str, records: Sequence[LogRecord], dim: int) -> None:
        """Write a new generation's log (``key``: its segment 0), segment by segment; every key
        expires unless the compaction's switch makes it permanent."""
        if not records:
            return
        size = record_dtype(dim).itemsize
        per_segment = self._segment_chars(size * 4 // 3) // (size * 4 // 3)
        per_request = max(1, (min(self._chunk, _MAX_WRITE_CHARS) * 3 // 4) // size)
        counter = f"{self._prefix}seg:{key.removeprefix(self._prefix + 'log:')}"
        for first in range(0, len(records), per_segment):
            segment = first // per_segment
            segment_key = key if segment == 0 else f"{key}:{segment}"
            stop = min(first + per_segment, len(records))
            for start in range(first, stop, per_request):
                text = encode_records(records[start : min(start + per_request, stop)], dim)
                commands: list[list[str | int]] = [
                    ["APPEND", segment_key, text.decode("ascii")],
                    ["PEXPIRE", segment_key, _STAGING_TTL_MS],
                ]
                if segment > 0:
                    commands.append(["SET", counter, segment, "PX", _STAGING_TTL_MS])
                self._rest.multi_exec(commands)

    # ------------------------------------------------------------------ internals
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
            key = self._log_key(nsid, generation, segment)
            if first is None:
                with self._lock:
                    length = self._read_length(nsid)
                read: list[str | int] = ["GETRANGE", key, offset, offset + length - 1]
                if last is None:
                    counter, data = self._rest.pipeline(
                        [["GET", self._segments_key(nsid, generation)], read]
                    )
                    last = int(_text(counter))
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

    def _writer_generation(self, nsid: str) -> str:
        with self._lock:
            known = self._generations.get(nsid)
        if known is not None:
            return known
        epoch, gen = self._rest.pipeline([["GET", self._epoch_key], ["GET", self._gen_key(nsid)]])
        generation = f"{_text(epoch)}.{_text(gen)}"
        self._remember(nsid, generation, _text(epoch))
        return generation

    def _append_command(self, nsid: str, generation: str, record: bytes) -> list[str | int]:
        """The EVAL that appends ``record`` to ``generation``'s log, in its last segment if it
        fits, else in a new one; it answers the segment it wrote to."""
        return [
            "EVAL",
            _APPEND_LUA,
            2,
            self._segments_key(nsid, generation),
            self._log_key(nsid, generation),
            record.decode("ascii"),
            self._segment_chars(len(record)),
            len(record),
        ]

    def _settle(
        self, nsid: str, appended_to: str, record: bytes, segment: Any, epoch: Any, gen: Any
    ) -> None:
        current = f"{_text(epoch)}.{_text(gen)}"
        self._remember(nsid, current, _text(epoch))
        if current != appended_to:
            self._reappend(nsid, record, stale=(appended_to, int(segment)))

    def _reappend(self, nsid: str, record: bytes, stale: tuple[str, int] | None = None) -> None:
        """Append ``record`` to the current generation's log, checking it in the same
        transaction; delete the stale keys (segment, counter) an append may have recreated."""
        for _ in range(_MAX_REAPPENDS):
            with self._lock:
                target = self._generations[nsid]
            commands: list[list[str | int]] = [
                self._append_command(nsid, target, record),
                ["GET", self._epoch_key],
                ["GET", self._gen_key(nsid)],
            ]
            if stale is not None:
                commands += [
                    ["DEL", self._log_key(nsid, stale[0], stale[1])],
                    ["DEL", self._segments_key(nsid, stale[0])],
                ]
            results = self._rest.multi_exec(commands)
            current = f"{_text(results[1])}.{_text(results[2])}"
            self._remember(nsid, current, _text(results[1]))
            if current == target:
                return
            stale = (target, int(results[0]))
        raise StoreError(f"vector log of namespace {nsid}: the generation kept changing")

    def _remember(self, nsid: str, generation: str, epoch: str) -> None:
        with self._lock:
            self._generations[nsid] = generation
            self._epoch = epoch

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


_COUNT_WINDOW_LUA = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""

_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# ---------------------------------------------------------------------------- stats
class UpstashStats:
    """Exact counters in one Redis hash: every ``add`` is one atomic transaction of
    HINCRBYFLOAT, so concurrent writers never lose an update."""

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        token: str,
        *,
        key: str = "pc:stats",
        base64_responses: bool = True,
    ) -> None:
        self._rest = UpstashREST(
            client, url, token, base64_responses=base64_responses, error=StatsError
        )
        self._key = key

    def add(self, counters: Mapping[str, float]) -> None:
        commands: list[list[str | int]] = [
            ["HINCRBYFLOAT", self._key, name, repr(float(value))]
            for name, value in counters.items()
            if value
        ]
        if commands:
            self._rest.multi_exec(commands)

    def read(self) -> dict[str, float]:
        flat = self._rest.command("HGETALL", self._key)
        try:
            return {_text(flat[i]): float(_text(flat[i + 1])) for i in range(0, len(flat), 2)}
        except (TypeError, ValueError, IndexError) as exc:
            raise StatsError(f"Upstash stats hash is malformed: {exc}") from exc

    def reset(self) -> None:
        self._rest.command("DEL", self._key)
