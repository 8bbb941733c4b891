"""The cache's decision policy, vectorised over every query at once: each query's nearest entries,
every guard's and the verifier model's verdicts on them, and the entry a policy picks
(``decide``, which must agree with ``PromptCache.lookup``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from promptcache._errors import PromptCacheError

from .data import Progress, Workload

#: The fixed cosine thresholds other semantic caches ship, converted to cosine.
PEERS: tuple[tuple[str, float], ...] = (
    ("GPTCache similar-cache (~0.6)", 0.6),
    ("Upstash semantic-cache (0.8)", 0.8),
    ("seed design (0.85)", 0.85),
    ("RedisVL (0.9)", 0.9),
    ("Portkey (0.95)", 0.95),
)
#: The thresholds a curve sweeps.
GRID = np.round(np.arange(0.50, 0.995, 0.005), 3)


@dataclass(frozen=True)
class Candidates:
    """Each query's best entries (index into ``Workload.entries``) and similarities, best first;
    every guard's verdicts on each of them."""

    index: npt.NDArray[np.int64]  # (queries, k)
    sims: npt.NDArray[np.float32]  # (queries, k)
    rejects: dict[str, npt.NDArray[np.bool_]] = field(default_factory=dict)  # guard -> (queries, k)
    scores: npt.NDArray[np.float32] | None = None  # the verifier model's, NaN where not asked


@dataclass(frozen=True)
class Model:
    """A verifier model policy, as ``ModelCheck`` (module ``promptcache._verify``) applies it;
    ``k``: only the first k candidates are considered (top-k)."""

    cutoff: float = 0.5
    below: float = 0.0
    band: float = 1.0
    k: int | None = None

    def describe(self) -> str:
        top = f", top-{self.k}" if self.k else ""
        return f"cutoff {self.cutoff:g}, below {self.below:g}, band {self.band:g}{top}"


#: The verifier policies ``promptcache eval`` compares: a band above the threshold, every
#: candidate above a floor below it, and the top-k candidates only.
MODEL_POLICIES: tuple[tuple[str, Model], ...] = (
    ("verifier: band 0.04", Model(band=0.04)),
    ("verifier: band 0.08", Model(band=0.08)),
    ("verifier: all above threshold", Model()),
    ("verifier: all above threshold - 0.05", Model(below=0.05)),
    ("verifier: all above threshold - 0.10", Model(below=0.10)),
    ("verifier: all above threshold - 0.15", Model(below=0.15)),
    ("verifier: all above threshold - 0.10, top-1", Model(below=0.10, k=1)),
    ("verifier: all above threshold - 0.10, top-2", Model(below=0.10, k=2)),
    ("verifier: all above threshold - 0.10, cutoff 0.3", Model(cutoff=0.3, below=0.10)),
    ("verifier: all above threshold - 0.10, cutoff 0.7", Model(cutoff=0.7, below=0.10)),
    ("verifier: all above threshold - 0.10, cutoff 0.9", Model(cutoff=0.9, below=0.10)),
)


def nearest(
    queries: npt.NDArray[np.float32],
    entries: npt.NDArray[np.float32],
    k: int,
    *,
    chunk: int = 2048,
    progress: Progress | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The k most similar entries of each query (cosine on unit vectors), best first."""
    n = len(queries)
    k = max(1, min(k, len(entries)))
    index = np.zeros((n, k), dtype=np.int64)
    sims = np.zeros((n, k), dtype=np.float32)
    bar = progress(total=n, unit="query", desc="searching") if progress else None
    for start in range(0, n, chunk):
        scores = queries[start : start + chunk] @ entries.T
        top = (
            np.argpartition(-scores, k - 1, axis=1)[:, :k]
            if k < scores.shape[1]
            else (np.tile(np.arange(scores.shape[1]), (len(scores), 1)))
        )
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        index[start : start + chunk] = np.take_along_axis(top, order, axis=1)
        sims[start : start + chunk] = np.take_along_axis(top_scores, order, axis=1)
        if bar is not None:
            bar.update(len(scores))
    if bar is not None:
        bar.close()
    return index, sims


def judge(
    work: Workload,
    index: npt.NDArray[np.int64],
    sims: npt.NDArray[np.float32],
    guards: dict[str, Callable[[str, str], str | None]],
    *,
    floor: float = float(GRID[0]),
    progress: Progress | None = None,
) -> Candidates:
    """Every guard's verdict on every candidate at or above ``floor``."""
    rejects = {name: np.zeros(index.shape, dtype=np.bool_) for name in guards}
    rows, cols = np.nonzero(sims >= floor)
    bar = progress(total=len(rows), unit="candidate", desc="guards") if progress else None
    for n, (q, j) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        query, candidate = work.queries[q], work.entries[index[q, j]]
        if query == candidate:
            continue
        for name, guard in guards.items():
            if guard(query, candidate) is not None:
                rejects[name][q, j] = True
        if bar is not None and n % 4096 == 4095:
            bar.update(4096)
    if bar is not None:
        bar.update(len(rows) % 4096)
        bar.close()
    return Candidates(index, sims, rejects)


def decide(
    work: Workload,
    cands: Candidates,
    threshold: float,
    guards: Iterable[str] = (),
    strict_guards: Iterable[str] = (),
    strict_guards_band: float = 1.0,
    model: Model | None = None,
) -> npt.NDArray[np.int64]:
    """The entry each query gets under a policy (-1 = miss): the exact tier first, then the first
    candidate at or above the threshold that no chosen guard rejects, nor a strict guard when
    its similarity is below threshold + strict_guards_band, nor the verifier model in its band
    (as ``PromptCache.lookup``)."""
    lowest = threshold if model is None else threshold - model.below
    ok = cands.sims >= np.float32(lowest)
    for name in guards:
        ok &= ~cands.rejects[name]
    borderline = cands.sims < np.float32(threshold + strict_guards_band)
    for name in strict_guards:
        ok &= ~(cands.rejects[name] & borderline)
    if model is not None:
        if cands.scores is None:
            raise PromptCacheError("no verifier scores: the evaluation ran without a verifier")
        asked = cands.sims < np.float32(threshold + model.band)
        with np.errstate(invalid="ignore"):
            accepted = cands.scores >= model.cutoff  # NaN (never asked) is a rejection
        ok &= ~asked | accepted
        if model.k is not None:
            ok[:, model.k :] = False
    first = np.argmax(ok, axis=1)
    chosen = np.where(ok.any(axis=1), cands.index[np.arange(len(ok)), first], -1)
    return np.where(work.exact >= 0, work.exact, chosen).astype(np.int64)


def verify(
    work: Workload,
    cands: Candidates,
    verifier: Any,
    *,
    floor: float,
    batch: int = 64,
    progress: Progress | None = None,
) -> npt.NDArray[np.float32]:
    """The verifier's score of every candidate at or above ``floor`` (NaN elsewhere), in
    length-sorted batches (one call each: little padding)."""
    scores = np.full(cands.sims.shape, np.nan, dtype=np.float32)
    rows, cols = np.nonzero(cands.sims >= floor)
    pairs = [
        (work.queries[q], work.entries[cands.index[q, j]])
        for q, j in zip(rows.tolist(), cols.tolist(), strict=True)
    ]
    keep = [i for i, (a, b) in enumerate(pairs) if a != b]  # the exact tier answers these
    order = sorted(keep, key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    score_pairs = getattr(verifier, "score_pairs", None)
    bar = progress(total=len(order), unit="pair", desc="verifier") if progress else None
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        if score_pairs is not None:
            got = score_pairs([pairs[i] for i in idx])
        else:
            got = [verifier.scores(pairs[i][0], [pairs[i][1]])[0] for i in idx]
        scores[rows[idx], cols[idx]] = np.asarray(got, dtype=np.float32)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return scores
