"""The in-process vector index of one namespace: float32 unit vectors plus 1-bit sketches.

Search returns the best rows by cosine (dot product of unit vectors). A full float32 scan reads
``4 * dim`` bytes per row and is bound by memory bandwidth, so large indexes are searched in two
steps:

1. Every row also keeps a sign sketch: bit ``b`` is ``g_b . x > 0`` for fixed Gaussian directions
   ``g_b`` (SimHash). For two vectors at angle ``theta`` each bit differs with probability exactly
   ``theta / pi``, independently, so the Hamming distance of a row whose cosine to the query is
   at least ``min_score`` is at most a ``Binomial(bits, arccos(min_score) / pi)`` draw. The scan
   keeps every row within the radius where that tail is below ``miss_probability`` (1e-12):
   ``bits / 8`` bytes per row (48 for 384 bits) instead of ``4 * dim`` (1,536 for 384-d).
2. The kept rows are scored exactly in float32 and ranked.

Whatever the data, a row scoring at least ``min_score`` is kept unless a 1e-12 event occurs;
rows below ``min_score`` are never returned either way. Data only changes the speed: when the
radius keeps too many rows (a low ``min_score``, or vectors crowded in one cone), or the index is
small, search falls back to the exact float32 scan.

Rows are appended as the store's vector log is read; deletes and expiries are masked, never
shifted.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ._errors import ConfigError
from ._types import LogRecord

_INF = np.float64(np.inf)

#: Below this many rows the float32 scan is as fast as the sketch scan and simpler.
EXACT_BELOW = 4_096
#: Sketch rows scanned per step: keeps the temporaries inside the CPU's L2 cache.
_CHUNK = 32_768
#: Re-scoring a scattered candidate costs a few sequential rows: past this share of the rows,
#: scanning them all is cheaper.
_MAX_CANDIDATE_SHARE = 0.125
#: Bits that float32 rounding of a projection near zero may flip, added to the radius.
_ROUNDING_SLACK = 2
_SEED = 0x5EED_CAFE


@functools.lru_cache(maxsize=8)
def _directions(dim: int, bits: int) -> npt.NDArray[np.float32]:
    """The fixed Gaussian directions of the sketch (same for every index of this shape)."""
    rng = np.random.default_rng(_SEED)
    g = rng.standard_normal((dim, bits), dtype=np.float32)
    g.setflags(write=False)
    return g


@functools.lru_cache(maxsize=256)
def _radius(bits: int, p_units: int, miss_probability: float) -> int:
    """The smallest r with P(Binomial(bits, p) > r) <= miss_probability, p = p_units / 1e5."""
    p = p_units / 100_000
    if p <= 0.0:
        return _ROUNDING_SLACK
    if p >= 1.0:
        return bits
    log_p, log_q = math.log(p), math.log1p(-p)
    tail = 0.0
    for r in range(bits, -1, -1):  # tail = P(X > r) before adding pmf(r)
        log_pmf = (
            math.lgamma(bits + 1)
            - math.lgamma(r + 1)
            - math.lgamma(bits - r + 1)
            + r * log_p
            + (bits - r) * log_q
        )
        if tail + math.exp(log_pmf) > miss_probability:
            return min(bits, r + _ROUNDING_SLACK)
        tail += math.exp(log_pmf)
    return _ROUNDING_SLACK


class VectorIndex:
    """Append-only rows of unit vectors with ids, a liveness mask and expiry times."""

    def __init__(
        self,
        dim: int,
        capacity: int = 1024,
        *,
        bits: int = 384,
        exact_below: int = EXACT_BELOW,
        miss_probability: float = 1e-12,
    ) -> None:
        if bits <= 0 or bits % 64:
            raise ConfigError(f"index sketch bits must be a positive multiple of 64, got {bits}")
        self.dim = dim
        self.bits = bits
        self.exact_below = exact_below
        self.miss_probability = miss_probability
        capacity = max(1, capacity)
        self._directions = _directions(dim, bits)
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        # word-major: row i's sketch is _codes[:, i]; each word is scanned as one contiguous run
        self._codes = np.zeros((bits // 64, capacity), dtype=np.uint64)
        self._expires = np.full(capacity, _INF, dtype=np.float64)
        self._max_norm = 0.0
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._row)

    @property
    def nbytes(self) -> int:
        return int(self._vectors.nbytes + self._codes.nbytes + self._expires.nbytes)

    def _sketch(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.uint64]:
        """(words, n) sign sketches of (n, dim) vectors."""
        out = np.empty((self.bits // 64, len(vectors)), dtype=np.uint64)
        for s in range(0, len(vectors), _CHUNK):
            signs = (vectors[s : s + _CHUNK] @ self._directions) > 0
            out[:, s : s + _CHUNK] = np.packbits(signs, axis=1).view(np.uint64).T
        return out

    def _grow(self, need: int) -> None:
        cap = self._vectors.shape[0]
        if need <= cap:
            return
        new_cap = max(need, cap * 2)
        vectors = np.zeros((new_cap, self.dim), dtype=np.float32)
        vectors[: self._size] = self._vectors[: self._size]
        codes = np.zeros((self._codes.shape[0], new_cap), dtype=np.uint64)
        codes[:, : self._size] = self._codes[:, : self._size]
        expires = np.full(new_cap, _INF, dtype=np.float64)
        expires[: self._size] = self._expires[: self._size]
        self._vectors, self._codes, self._expires = vectors, codes, expires

    def add(
        self,
        ids: Sequence[str],
        vectors: npt.NDArray[np.float32],
        expires_at: Sequence[float | None] | None = None,
    ) -> None:
        """Append rows (replacing an id already present)."""
        if len(ids) == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        codes = self._sketch(vectors)  # the costly part, outside the lock
        max_norm = float(np.sqrt(np.max(np.einsum("ij,ij->i", vectors, vectors))))
        with self._lock:
            for entry_id in ids:
                old = self._row.pop(entry_id, None)
                if old is not None:
                    self._expires[old] = -_INF
            start = self._size
            end = start + len(ids)
            self._grow(end)
            self._vectors[start:end] = vectors
            self._codes[:, start:end] = codes
            for i, entry_id in enumerate(ids):
                exp = None if expires_at is None else expires_at[i]
                self._expires[start + i] = _INF if exp is None else exp
                self._row[entry_id] = start + i
            self._ids.extend(ids)
            self._size = end
            self._max_norm = max(self._max_norm, max_norm)

    def apply_log(self, records: Sequence[LogRecord], chunk: int = 4096) -> None:
        """Apply a store's log records in order: vectors are added, tombstones remove; the last
        record of an id decides. Vectors are copied in ``chunk`` rows at a time, so loading a
        whole log never holds a second full copy of them beside the records and the index."""
        last = {r.entry_id: r for r in records}
        live = [r for r in last.values() if r.vector is not None]
        for record in last.values():
            if record.vector is None:
                self.remove(record.entry_id)
        for start in range(0, len(live), chunk):
            part = live[start : start + chunk]
            self.add(
                [r.entry_id for r in part],
                np.stack([r.vector for r in part]),  # type: ignore[misc]
                [r.expires_at for r in part],
            )

    def remove(self, entry_id: str) -> bool:
        with self._lock:
            row = self._row.pop(entry_id, None)
            if row is None:
                return False
            self._expires[row] = -_INF
            return True

    def compact_if_sparse(self) -> None:
        """Drop the removed rows' space once they are most of the index (rows are only ever
        masked, so a bounded namespace whose entries turn over would otherwise keep growing)."""
        with self._lock:
            live = len(self._row)
            if self._size <= max(1024, 2 * live):
                return
            rows = np.fromiter(sorted(self._row.values()), dtype=np.intp, count=live)
            capacity = max(64, live + live // 2)
            vectors = np.zeros((capacity, self.dim), dtype=np.float32)
            vectors[:live] = self._vectors[rows]
            codes = np.zeros((self._codes.shape[0], capacity), dtype=np.uint64)
            codes[:, :live] = self._codes[:, rows]
            expires = np.full(capacity, _INF, dtype=np.float64)
            expires[:live] = self._expires[rows]
            self._ids = [self._ids[r] for r in rows]
            self._row = {entry_id: i for i, entry_id in enumerate(self._ids)}
            self._vectors, self._codes, self._expires = vectors, codes, expires
            self._size = live

    def search(
        self, query: npt.NDArray[np.float32], k: int = 1, min_score: float = -1.0, now: float = 0.0
    ) -> list[tuple[str, float]]:
        """The k best live rows with cosine >= min_score, best first."""
        q = np.asarray(query, dtype=np.float32).reshape(self.dim)
        with self._lock:
            n = self._size
            if n == 0 or k <= 0:
                return []
            rows = None
            radius = self._search_radius(q, min_score) if n >= self.exact_below else None
            if radius is not None:
                rows = self._within(q, radius, n)
                if len(rows) > _MAX_CANDIDATE_SHARE * n:
                    rows = None
            if rows is None:  # the exact float32 scan
                scores = self._vectors[:n] @ q
                rows = np.flatnonzero((scores >= min_score) & (self._expires[:n] > now))
                scores = scores[rows]
            else:
                rows = rows[self._expires[rows] > now]
                scores = self._vectors[rows] @ q
                keep = scores >= min_score
                rows, scores = rows[keep], scores[keep]
            if len(rows) > k:
                top = np.argpartition(-scores, k - 1)[:k]
                rows, scores = rows[top], scores[top]
            order = np.argsort(-scores, kind="stable")
            return [(self._ids[rows[i]], float(scores[i])) for i in order]

    # ------------------------------------------------------------------ internals
    def _search_radius(self, q: npt.NDArray[np.float32], min_score: float) -> int | None:
        """The Hamming radius holding every row scoring >= min_score, or None (scan all)."""
        q_norm = float(np.linalg.norm(q))
        if not (min_score > 0.0 and 0.0 < q_norm < math.inf and 0.0 < self._max_norm < math.inf):
            return None
        # score = |q| |x| cos(theta) >= min_score needs cos(theta) >= min_score / (|q| max|x|)
        cos_min = min_score / (q_norm * self._max_norm) - 1e-6
        if cos_min >= 1.0:
            cos_min = 1.0 - 1e-6
        p = math.acos(cos_min) / math.pi
        radius = _radius(self.bits, math.ceil(p * 100_000), self.miss_probability)
        # past ~0.45 of the bits the radius admits a large share of any data: scan instead
        return radius if radius < 0.45 * self.bits else None

    def _within(self, q: npt.NDArray[np.float32], radius: int, n: int) -> npt.NDArray[np.intp]:
        """Rows whose sketch is within `radius` bits of the query's."""
        qcode = np.packbits((q @ self._directions) > 0).view(np.uint64)
        words = self._codes.shape[0]
        chunk = min(_CHUNK, n)
        xor = np.empty(chunk, dtype=np.uint64)
        count = np.empty(chunk, dtype=np.uint8)
        dist = np.empty(chunk, dtype=np.uint16)
        found: list[npt.NDArray[np.intp]] = []
        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            m = end - start
            x, c, d = xor[:m], count[:m], dist[:m]
            for w in range(words):
                np.bitwise_xor(self._codes[w, start:end], qcode[w], out=x)
                np.bitwise_count(x, out=c)
                if w == 0:
                    np.copyto(d, c)
                else:
                    np.add(d, c, out=d)
            hits = np.flatnonzero(d <= radius)
            if len(hits):
                found.append(hits + start)
        if not found:
            return np.empty(0, dtype=np.intp)
        return np.concatenate(found)
