"""Small fakes at the protocol boundaries (Embedder, LLM) for unit tests of the core."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence

import numpy as np

from promptcache import ChatRequest, Completion, EmbedderError, UpstreamError, Usage


def unit(seed: str, dim: int = 8) -> np.ndarray:
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def blend(a: np.ndarray, b: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector with cosine `cos` to unit vector `a` (b gives the orthogonal direction)."""
    ortho = b - (b @ a) * a
    ortho /= np.linalg.norm(ortho)
    v = cos * a + np.sqrt(1 - cos**2) * ortho
    return (v / np.linalg.norm(v)).astype(np.float32)


class FakeEmbedder:
    id = "fake"
    dim = 8
    default_threshold = 0.9
    max_input_chars = 2000

    def __init__(self, fixed: dict[str, np.ndarray] | None = None) -> None:
        self.fixed = dict(fixed or {})
        self.calls = 0
        self.fail = False

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.fail:
            raise EmbedderError("fake embedder is down")
        return np.stack([self.fixed.get(t, unit(t)) for t in texts])


class FakeLLM:
    name = "fake"

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def generate(self, request: ChatRequest) -> Completion:
        with self._lock:
            self.calls += 1
            n = self.calls
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return Completion(f"answer {n}: {request.prompt}", request.model, Usage(10, 20))


class FailingLLM(FakeLLM):
    def __init__(self) -> None:
        super().__init__()
        self.fail = UpstreamError("boom")


class FakeVerifier:
    """Scores by a table (query, candidate) -> score, default 0; records every call."""

    id = "fake-verifier"

    def __init__(self, table: dict[tuple[str, str], float] | None = None) -> None:
        self.table = dict(table or {})
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.fail: Exception | None = None
        self.delay = 0.0

    def scores(self, query: str, candidates: Sequence[str]) -> list[float]:
        self.calls.append((query, tuple(candidates)))
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return [self.table.get((query, c), 0.0) for c in candidates]
