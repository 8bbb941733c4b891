"""The vector log's record format: pure encoding and decoding, no network, no server.

A namespace's log is a sequence of fixed-size records (one size per namespace, as the dimension
is)::

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
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..._errors import StoreError
from ..._types import LogRecord

VERSION = 1
HEADER = struct.Struct("<BBHd32s")  # version, kind, dim, expires_at, entry id
ID_BYTES = 32
#: base64 characters that always cover a whole header (45 bytes)
HEADER_CHARS = 60


def record_dtype(dim: int) -> np.dtype[Any]:
    """The numpy layout of one log record of a ``dim``-dimensional namespace."""
    size = HEADER.size + 4 * dim
    return np.dtype(
        {
            "names": ["ver", "kind", "dim", "exp", "id", "vec"],
            "formats": ["u1", "u1", "<u2", "<f8", f"S{ID_BYTES}", ("<f4", (dim,))],
            "offsets": [0, 1, 2, 4, 12, HEADER.size],
            "itemsize": size + (-size) % 3,
        }
    )


def entry_id_bytes(entry_id: str) -> bytes:
    """The id as a record stores it; refuses one that does not fit (StoreError)."""
    raw = entry_id.encode("utf-8")
    if not raw or len(raw) > ID_BYTES or b"\x00" in raw:
        raise StoreError(f"entry id {entry_id!r} must be 1-{ID_BYTES} UTF-8 bytes without NUL")
    return raw


def encode_records(records: Sequence[LogRecord], dim: int) -> bytes:
    """Records as stored in the log (base64 text). A tombstone has ``vector=None``."""
    if not 0 < dim <= 0xFFFF:
        raise StoreError(f"a vector log holds 1-65535 dimensions, not {dim}")
    arr = np.zeros(len(records), dtype=record_dtype(dim))
    arr["ver"] = VERSION
    arr["dim"] = dim
    arr["id"] = [entry_id_bytes(r.entry_id) for r in records]
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
    if len(text) < HEADER_CHARS:
        return [], 0, None
    try:
        version, kind, dim, _, _ = HEADER.unpack_from(base64.b64decode(text[:HEADER_CHARS]))
    except (binascii.Error, ValueError, struct.error) as exc:
        raise StoreError(f"corrupt vector log: {exc}") from exc
    if version != VERSION or kind not in (0, 1) or dim == 0:
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
    if (arr["ver"] != VERSION).any() or (arr["dim"] != dim).any() or (kinds > 1).any():
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
