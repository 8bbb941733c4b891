"""Embedding once: every distinct text of an evaluation through the cache's own embedder, in
batches, with an optional on-disk memo of the vectors across runs.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .data import Progress


class MemoEmbedder:
    """Wraps the cache's own embedder: every distinct text is embedded once, in batches.

    ``prime`` fills the memo (sorted by length, so batches pad little); ``embed`` answers from it
    and falls through to the wrapped embedder for anything unseen."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.id: str = inner.id
        self.dim: int = inner.dim
        self.default_threshold: float = inner.default_threshold
        self.max_input_chars: int = inner.max_input_chars
        self._memo: dict[str, npt.NDArray[np.float32]] = {}
        self._lock = threading.Lock()

    def vectors(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return (
            np.stack([self._memo[t] for t in texts])
            if texts
            else np.zeros((0, self.dim), np.float32)
        )

    def prime(
        self,
        texts: Iterable[str],
        *,
        batch: int = 128,
        workers: int = 2,
        cache_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> None:
        todo = sorted({t for t in texts if t not in self._memo}, key=len)
        disk = _VectorCache(cache_dir, self.id, self.dim) if cache_dir else None
        if disk is not None:
            found = disk.load(todo)
            self._memo.update(found)
            todo = [t for t in todo if t not in found]
        chunks = [todo[i : i + batch] for i in range(0, len(todo), batch)]
        bar = progress(total=len(todo), unit="text", desc="embedding") if progress else None

        def run(chunk: list[str]) -> None:
            vecs = np.asarray(self.inner.embed(chunk), dtype=np.float32)
            with self._lock:
                for text, vec in zip(chunk, vecs, strict=True):
                    self._memo[text] = vec
            if bar is not None:
                bar.update(len(chunk))

        try:
            with ThreadPoolExecutor(max(1, workers)) as pool:
                list(pool.map(run, chunks))
        finally:
            if bar is not None:
                bar.close()
        if disk is not None and todo:
            disk.save({t: self._memo[t] for t in todo})

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        missing = [t for t in texts if t not in self._memo]
        if missing:
            fresh = np.asarray(self.inner.embed(missing), dtype=np.float32)
            for text, vec in zip(missing, fresh, strict=True):
                self._memo[text] = vec
        return self.vectors(list(texts))


class _VectorCache:
    """Optional on-disk memo of vectors (keyed by sha256 of the text, per embedder) so repeated
    evaluations of the same data skip embedding. Holds no text."""

    def __init__(self, directory: Path, embedder_id: str, dim: int) -> None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in embedder_id)
        self.path = directory / f"{safe}-{dim}.npz"
        self.dim = dim

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8")).digest()[:16]

    def _read(self) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32]]:
        if not self.path.exists():
            return np.zeros((0, 16), dtype=np.uint8), np.zeros((0, self.dim), np.float32)
        with np.load(self.path) as data:
            return data["keys"], data["vectors"]

    def load(self, texts: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        keys, vectors = self._read()
        row = {k.tobytes(): i for i, k in enumerate(keys)}
        out = {}
        for text in texts:
            i = row.get(self._key(text))
            if i is not None:
                out[text] = vectors[i]
        return out

    def save(self, new: dict[str, npt.NDArray[np.float32]]) -> None:
        keys, vectors = self._read()
        add_keys = np.frombuffer(b"".join(self._key(t) for t in new), dtype=np.uint8).reshape(
            -1, 16
        )
        add_vecs = np.stack(list(new.values())).astype(np.float32)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(
            tmp, keys=np.concatenate([keys, add_keys]), vectors=np.concatenate([vectors, add_vecs])
        )
        tmp.replace(self.path)
