"""The data of an evaluation: labelled pairs read from a file, the intents chained through them,
the fit/holdout folds, the seeded sample, and the workload (what is stored, what is asked).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from promptcache._errors import PromptCacheError
from promptcache._keys import canonical

from .._jsonl import json_objects, require_text

PARTS = ("all", "fit", "holdout")

#: A progress-bar factory (tqdm's signature: ``progress(total=, unit=, desc=)``).
Progress = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Pair:
    """One labelled pair; ``a`` and ``b`` are canonical, as the cache stores prompts (their
    vectors are of the folded form the embedder reads, ``normalize``)."""

    a: str
    b: str
    duplicate: bool


def read_pairs(path: Path) -> list[Pair]:
    """Every pair of a JSONL (or .jsonl.gz) file; a malformed line is an error naming it."""
    pairs: list[Pair] = []
    for lineno, obj in json_objects(path):
        a = require_text(path, lineno, obj, "a")
        b = require_text(path, lineno, obj, "b")
        if not isinstance(obj.get("duplicate"), bool):
            raise PromptCacheError(f"{path}:{lineno}: 'duplicate' must be true or false")
        pairs.append(Pair(canonical(a), canonical(b), obj["duplicate"]))
    if not pairs:
        raise PromptCacheError(f"{path}: no pairs")
    return pairs


# ---------------------------------------------------------------------------- intents and folds
class UnionFind:
    """Disjoint sets over hashable items (path halving, union by size)."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._size: dict[str, int] = {}

    def add(self, item: str) -> None:
        if item not in self._parent:
            self._parent[item] = item
            self._size[item] = 1

    def find(self, item: str) -> str:
        self.add(item)
        parent = self._parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]


def intents(pairs: Iterable[Pair]) -> dict[str, int]:
    """Each text's intent: the connected component of duplicate=true pairs it belongs to."""
    sets = UnionFind()
    order: list[str] = []
    for pair in pairs:
        for text in (pair.a, pair.b):
            if text not in sets._parent:
                order.append(text)
            sets.add(text)
        if pair.duplicate:
            sets.union(pair.a, pair.b)
    ids: dict[str, int] = {}
    out: dict[str, int] = {}
    for text in order:
        out[text] = ids.setdefault(sets.find(text), len(ids))
    return out


def folds(pairs: Sequence[Pair]) -> list[str]:
    """``fit`` or ``holdout`` for each pair, by the component of every pair it is linked to.

    Deterministic (a hash of the component's smallest text), independent of sampling."""
    sets = UnionFind()
    for pair in pairs:
        sets.union(pair.a, pair.b)
    smallest: dict[str, str] = {}
    for pair in pairs:
        root = sets.find(pair.a)
        for text in (pair.a, pair.b):
            if root not in smallest or text < smallest[root]:
                smallest[root] = text
    out = []
    for pair in pairs:
        digest = hashlib.sha256(smallest[sets.find(pair.a)].encode("utf-8")).digest()
        out.append("fit" if digest[0] % 2 == 0 else "holdout")
    return out


def groups(pairs: Sequence[Pair]) -> list[list[int]]:
    """The pairs' indices by group: the connected component of texts linked by any pair
    (duplicate or not), groups in the order of their first pair, indices ascending."""
    sets = UnionFind()
    for pair in pairs:
        sets.union(pair.a, pair.b)
    members: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        members.setdefault(sets.find(pair.a), []).append(i)
    return list(members.values())


def select(
    pairs: Sequence[Pair], part: str = "all", limit: int | None = None, seed: int = 0
) -> list[Pair]:
    """The pairs of one fold (or all); with ``limit``, whole groups (``groups``) drawn in a
    seeded order until at least ``limit`` pairs are chosen, in file order. A group holds every
    pair between its texts, so no labelled relation between two chosen texts is left out (a
    ``duplicate: false`` pair left out would count its false hit as one nobody labelled)."""
    if part not in PARTS:
        raise PromptCacheError(f"part must be one of {', '.join(PARTS)}; got {part!r}")
    if part == "all":
        chosen = list(pairs)
    else:
        chosen = [p for p, f in zip(pairs, folds(pairs), strict=True) if f == part]
    if limit is not None and limit < 1:
        raise PromptCacheError(f"--limit must be at least 1, got {limit}")
    if not chosen:
        raise PromptCacheError(f"no pairs in part {part!r}: use --part all")
    if limit is not None and limit < len(chosen):
        order = groups(chosen)
        random.Random(seed).shuffle(order)
        keep: list[int] = []
        for group in order:
            if len(keep) >= limit:
                break
            keep += group
        chosen = [chosen[i] for i in sorted(keep)]
    return chosen


# ---------------------------------------------------------------------------- workload
@dataclass(frozen=True)
class Workload:
    """What the cache stores and what it is asked, with the ground truth."""

    entries: tuple[str, ...]
    queries: tuple[str, ...]
    entry_intent: npt.NDArray[np.int64]
    query_intent: npt.NDArray[np.int64]
    answerable: npt.NDArray[np.bool_]  # the query's intent is in the cache
    exact: npt.NDArray[np.int64]  # index of the entry equal to the query, else -1
    #: every labelled pair as entry * len(queries) + query, sorted (a pair written the other
    #: way round never reaches a semantic decision: its query is a stored text, an exact hit)
    labelled: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def build(cls, pairs: Sequence[Pair], intent_of: dict[str, int] | None = None) -> Workload:
        intent_of = intent_of if intent_of is not None else intents(pairs)
        entries = tuple(dict.fromkeys(p.a for p in pairs))
        queries = tuple(dict.fromkeys(p.b for p in pairs))
        entry_intent = np.array([intent_of[t] for t in entries], dtype=np.int64)
        query_intent = np.array([intent_of[t] for t in queries], dtype=np.int64)
        cached = set(entry_intent.tolist())
        position = {t: i for i, t in enumerate(entries)}
        asked = {t: i for i, t in enumerate(queries)}
        codes = {position[p.a] * len(queries) + asked[p.b] for p in pairs}
        return cls(
            entries=entries,
            queries=queries,
            entry_intent=entry_intent,
            query_intent=query_intent,
            answerable=np.array([i in cached for i in query_intent.tolist()], dtype=np.bool_),
            exact=np.array([position.get(t, -1) for t in queries], dtype=np.int64),
            labelled=np.array(sorted(codes), dtype=np.int64),
        )
