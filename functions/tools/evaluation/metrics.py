"""What a policy's decisions are worth: precision, recall, false hits (and those on labelled pairs),
and the threshold calibration picks from a curve of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .data import Workload


@dataclass(frozen=True, slots=True)
class Metrics:
    name: str
    threshold: float
    queries: int
    answerable: int
    hits: int
    correct: int
    labelled_false: int = 0  # false hits on a labelled (duplicate: false) pair

    @property
    def false_hits(self) -> int:
        return self.hits - self.correct

    @property
    def labelled_false_per_1k(self) -> float:
        return 1000 * self.labelled_false / self.queries if self.queries else 0.0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0

    @property
    def precision(self) -> float:
        return self.correct / self.hits if self.hits else 1.0

    @property
    def recall(self) -> float:
        return self.correct / self.answerable if self.answerable else 0.0

    @property
    def false_hits_per_1k(self) -> float:
        return 1000 * self.false_hits / self.queries if self.queries else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "threshold": self.threshold,
            "queries": self.queries,
            "answerable": self.answerable,
            "hits": self.hits,
            "correct": self.correct,
            "false_hits": self.false_hits,
            "hit_rate": round(self.hit_rate, 4),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "false_hits_per_1k": round(self.false_hits_per_1k, 2),
            "labelled_false_hits": self.labelled_false,
            "labelled_false_hits_per_1k": round(self.labelled_false_per_1k, 2),
        }


def score(name: str, threshold: float, chosen: npt.NDArray[np.int64], work: Workload) -> Metrics:
    """Metrics of one policy's decisions (``chosen`` = entry index per query, -1 = miss)."""
    hit = chosen >= 0
    correct = hit & (work.entry_intent[np.maximum(chosen, 0)] == work.query_intent)
    wrong = np.flatnonzero(hit & ~correct)
    codes = chosen[wrong] * len(work.queries) + wrong
    found = np.searchsorted(work.labelled, codes)  # sorted once, in build: no re-sort per policy
    on_labelled = work.labelled[np.minimum(found, len(work.labelled) - 1)] == codes
    return Metrics(
        name,
        float(threshold),
        len(work.queries),
        int(work.answerable.sum()),
        int(hit.sum()),
        int(correct.sum()),
        int(on_labelled.sum()) if len(work.labelled) else 0,
    )


def pick_threshold(curve: Sequence[Metrics], target_precision: float) -> Metrics | None:
    """The lowest threshold (most recall) from which precision stays at or above the target for
    every higher threshold of the grid; None when no threshold with a correct hit reaches it."""
    best: Metrics | None = None
    for m in sorted(curve, key=lambda m: -m.threshold):
        if m.hits and m.precision < target_precision:
            break
        if m.correct:
            best = m
    return best
