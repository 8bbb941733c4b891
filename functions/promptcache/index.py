"""The in-process vector index of one namespace: a float32 matrix of unit vectors.

Search is a matrix-vector product (cosine on unit vectors). Rows are appended as the store's
vector log is read; deletes and expiries are masked, never shifted.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_INF = np.float64(np.inf)


class VectorIndex:
    """Append-only rows of unit vectors with ids, a liveness mask and expiry times."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._expires = np.full(capacity, _INF, dtype=np.float64)
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._row)

    @property
    def nbytes(self) -> int:
        return int(self._vectors.nbytes + self._expires.nbytes)

    def _grow(self, need: int) -> None:
        cap = self._vectors.shape[0]
        if need <= cap:
            return
        new_cap = max(need, cap * 2)
        vectors = np.zeros((new_cap, self.dim), dtype=np.float32)
        vectors[: self._size] = self._vectors[: self._size]
        expires = np.full(new_cap, _INF, dtype=np.float64)
        expires[: self._size] = self._expires[: self._size]
        self._vectors, self._expires = vectors, expires

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
        with self._lock:
            for entry_id in ids:
                old = self._row.pop(entry_id, None)
                if old is not None:
                    self._expires[old] = -_INF
            start = self._size
            self._grow(start + len(ids))
            self._vectors[start : start + len(ids)] = vectors
            for i, entry_id in enumerate(ids):
                exp = None if expires_at is None else expires_at[i]
                self._expires[start + i] = _INF if exp is None else exp
                self._row[entry_id] = start + i
            self._ids.extend(ids)
            self._size += len(ids)

    def remove(self, entry_id: str) -> bool:
        with self._lock:
            row = self._row.pop(entry_id, None)
            if row is None:
                return False
            self._expires[row] = -_INF
            return True

    def search(
        self, query: npt.NDArray[np.float32], k: int = 1, min_score: float = -1.0, now: float = 0.0
    ) -> list[tuple[str, float]]:
        """The k best live rows with cosine >= min_score, best first."""
        with self._lock:
            n = self._size
            if n == 0:
                return []
            scores = self._vectors[:n] @ np.asarray(query, dtype=np.float32).reshape(self.dim)
            scores[self._expires[:n] <= now] = -np.inf
            k = min(k, n)
            top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
            top = top[np.argsort(-scores[top])]
            return [
                (self._ids[i], float(scores[i]))
                for i in top
                if scores[i] >= min_score and np.isfinite(scores[i])
            ]
