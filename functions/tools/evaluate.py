"""Decision quality on human-labelled pairs: ``promptcache eval`` and ``promptcache calibrate``.

The protocol (the one GPTCache benchmarks itself with, made fair): from a file of labelled pairs
``{"id", "a", "b", "duplicate"}``, store every distinct ``a`` in a cache built exactly as the
server builds it (same embedder, index and guards; an isolated in-memory store), then ask every
distinct ``b``. Two questions share an *intent* when a chain of ``duplicate: true`` pairs joins
them (union-find); each stored answer is a label of its prompt's intent, so a hit is correct
when the returned entry shares the query's intent.

- hit rate = hits / queries
- precision = correct hits / hits
- recall = correct hits / queries whose intent is in the cache
- false hits per 1,000 queries = (hits - correct hits) / queries * 1000
- of them, on labelled pairs: false hits whose query and entry form a pair of the file (labelled
  ``duplicate: false``). The others join two texts nobody labelled together; the protocol counts
  them wrong because no chain of duplicates joins them, though some are the same question (on
  Quora pairs, reading a sample found most were), so this column is the floor of the truth and
  the full count its ceiling.

Every distinct text is embedded once (batched). The candidates of every query (the index's
``candidates`` best entries and their cosine similarities) are computed once, and every policy is
decided from them: the peers' fixed thresholds (no guards) and this cache's own policy (its
threshold and guards). A sample of queries also goes through the real
``PromptCache.lookup`` and must reach the same decisions.

Folds: pairs are split in two halves, ``fit`` and ``holdout``, by the connected component of
texts they belong to (every pair, duplicate or not, is an edge), so no text is in both halves.
Parameters are chosen on ``fit`` and reported on both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from promptcache._errors import ConfigError, PromptCacheError
from promptcache._keys import canonical, normalize
from promptcache._types import ChatRequest, Completion, Message, Usage
from promptcache.calibration import calibration_path

from ._jsonl import json_objects, require_text

log = logging.getLogger("promptcache")

#: The fixed cosine thresholds other semantic caches ship, converted to cosine.
PEERS: tuple[tuple[str, float], ...] = (
    ("GPTCache similar-cache (~0.6)", 0.6),
    ("Upstash semantic-cache (0.8)", 0.8),
    ("seed design (0.85)", 0.85),
    ("RedisVL (0.9)", 0.9),
    ("Portkey (0.95)", 0.95),
)
PARTS = ("all", "fit", "holdout")
EVAL_MODEL = "eval"
_GRID = np.round(np.arange(0.50, 0.995, 0.005), 3)

Progress = Callable[..., Any]


# ---------------------------------------------------------------------------- reading pairs
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


def select(
    pairs: Sequence[Pair], part: str = "all", limit: int | None = None, seed: int = 0
) -> list[Pair]:
    """The pairs of one fold (or all), then a seeded sample of ``limit`` of them."""
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
        keep = sorted(random.Random(seed).sample(range(len(chosen)), limit))
        chosen = [chosen[i] for i in keep]
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


# ---------------------------------------------------------------------------- metrics
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


# ---------------------------------------------------------------------------- embedding once
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


# ---------------------------------------------------------------------------- candidates
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
    floor: float = float(_GRID[0]),
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
    verifier: Iterable[str] = (),
    band: float = 1.0,
    model: Model | None = None,
) -> npt.NDArray[np.int64]:
    """The entry each query gets under a policy (-1 = miss): the exact tier first, then the first
    candidate at or above the threshold that no chosen guard rejects, nor a verifier check when
    its similarity is below threshold + band, nor the verifier model in its band (as
    ``PromptCache.lookup``)."""
    lowest = threshold if model is None else threshold - model.below
    ok = cands.sims >= np.float32(lowest)
    for name in guards:
        ok &= ~cands.rejects[name]
    borderline = cands.sims < np.float32(threshold + band)
    for name in verifier:
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


def _model_of(check: Any) -> Model | None:
    if check is None:
        return None
    return Model(float(check.cutoff), float(check.below), float(check.band))


# ---------------------------------------------------------------------------- one evaluation
@dataclass(frozen=True)
class Policy:
    """This cache's decision policy, read from the cache itself."""

    threshold: float
    guards: tuple[str, ...]
    verifier: tuple[str, ...] = ()
    band: float = 1.0
    model: Model | None = None


@dataclass(frozen=True)
class Evaluation:
    work: Workload
    cands: Candidates
    policy: Policy
    embedder_id: str
    seconds: dict[str, float]
    checked: int = 0
    agreed: int = 0

    def metrics(
        self, name: str, threshold: float, guards: Iterable[str] = (), model: Model | None = None
    ) -> Metrics:
        chosen = decide(self.work, self.cands, threshold, guards, model=model)
        return score(name, threshold, chosen, self.work)

    def default(self, threshold: float | None = None) -> Metrics:
        t = self.policy.threshold if threshold is None else threshold
        p = self.policy
        chosen = decide(self.work, self.cands, t, p.guards, p.verifier, p.band, p.model)
        return score("promptcache (default)", t, chosen, self.work)

    def models(self, threshold: float | None = None) -> list[Metrics]:
        """The verifier policies of MODEL_POLICIES on top of the policy's guards (empty when the
        evaluation ran without a verifier)."""
        if self.cands.scores is None:
            return []
        t = self.policy.threshold if threshold is None else threshold
        return [self.metrics(n, t, self.policy.guards, m) for n, m in MODEL_POLICIES]

    def peers(self) -> list[Metrics]:
        return [self.metrics(name, t) for name, t in PEERS]

    def curve(self, guards: Iterable[str] = (), model: Model | None = None) -> list[Metrics]:
        names = tuple(guards)
        return [self.metrics("curve", float(t), names, model) for t in _GRID]

    def ablation(self, all_guards: Sequence[str], extra: Sequence[str] = ()) -> list[Metrics]:
        """At the policy's threshold: no guard, each guard alone, the policy's guards, the
        policy's guards plus ``extra`` (the strict verifier), and each guard left out of all."""
        t = self.policy.threshold
        rows = [self.metrics("no guards", t)]
        rows += [self.metrics(f"only {g}", t, (g,)) for g in all_guards]
        rows.append(
            self.metrics(
                f"policy: {', '.join(self.policy.guards) or 'none'}", t, self.policy.guards
            )
        )
        more = [g for g in extra if g not in self.policy.guards]
        if more:
            rows.append(
                self.metrics(f"policy + {', '.join(more)}", t, (*self.policy.guards, *more))
            )
            band = self.policy.band
            banded = decide(self.work, self.cands, t, self.policy.guards, more, band)
            rows.append(
                score(f"policy + verifier {', '.join(more)} (band {band:g})", t, banded, self.work)
            )
        rows.append(self.metrics("all guards", t, all_guards))
        rows += [
            self.metrics(f"all but {g}", t, [x for x in all_guards if x != g]) for g in all_guards
        ]
        return rows


def _guard_name(guard: Callable[..., Any]) -> str:
    return str(getattr(guard, "name", None) or getattr(guard, "__name__", repr(guard)))


def evaluate(
    cache: Any,
    pairs: Sequence[Pair],
    *,
    intent_of: dict[str, int] | None = None,
    extra_guards: dict[str, Callable[[str, str], str | None]] | None = None,
    verifier: Any = None,
    verifier_floor: float = 0.75,
    check: int = 2000,
    seed: int = 0,
    workers: int = 2,
    vector_cache: Path | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Run the protocol through ``cache`` (a PromptCache built by ``runtime.build`` on an empty,
    isolated store). ``extra_guards`` are judged too (for ablations) without joining the policy.
    ``verifier``: a verifier model scoring every candidate at or above ``verifier_floor`` for
    the verifier policies (default: the cache's own, if it has one). ``check`` queries (a seeded
    sample) also go through ``cache.lookup`` and must get the entry the simulated policy
    chose."""
    seconds: dict[str, float] = {}
    work = Workload.build(pairs, intent_of)
    # build_cache gives the cache a MemoEmbedder: its real lookups then reuse these vectors
    memo = (
        cache.embedder if isinstance(cache.embedder, MemoEmbedder) else MemoEmbedder(cache.embedder)
    )
    # prompts longer than the embedder reads whole get the exact tier only (as in the cache)
    longest = int(getattr(cache, "semantic_max_chars", 1 << 62))
    folded = {t: normalize(t) for t in work.entries + work.queries}
    semantic_entries = np.array([len(folded[t]) <= longest for t in work.entries], dtype=np.bool_)
    semantic_queries = np.array([len(folded[t]) <= longest for t in work.queries], dtype=np.bool_)
    to_embed = [f for f in folded.values() if len(f) <= longest]

    started = time.perf_counter()
    memo.prime(to_embed, workers=workers, cache_dir=vector_cache, progress=progress)
    seconds["embed"] = time.perf_counter() - started

    started = time.perf_counter()
    bar = progress(total=len(work.entries), unit="entry", desc="storing") if progress else None
    for text, label in zip(work.entries, work.entry_intent.tolist(), strict=True):
        request = ChatRequest(messages=(Message("user", text),), model=EVAL_MODEL)
        completion = Completion(f"intent:{label}", EVAL_MODEL, Usage())
        cache.store_answer(request, completion, vector=memo._memo.get(folded[text]))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds["store"] = time.perf_counter() - started

    started = time.perf_counter()
    rows = np.flatnonzero(semantic_entries)
    k = max(1, min(cache.candidates, len(rows)))
    index = np.zeros((len(work.queries), k), dtype=np.int64)
    sims = np.full((len(work.queries), k), -np.inf, dtype=np.float32)
    if len(rows) and semantic_queries.any():
        found, found_sims = nearest(
            memo.vectors(
                [folded[t] for t, ok in zip(work.queries, semantic_queries, strict=True) if ok]
            ),
            memo.vectors([folded[work.entries[i]] for i in rows.tolist()]),
            k,
            progress=progress,
        )
        index[semantic_queries] = rows[found]
        sims[semantic_queries] = found_sims
    seconds["search"] = time.perf_counter() - started

    rules = cache.rules
    own = {_guard_name(g): g for g in rules.guards}
    strict = {_guard_name(g): g for g in rules.strict_guards}
    judged = {**own, **strict}
    for name, guard in (extra_guards or {}).items():
        judged.setdefault(name, guard)
    started = time.perf_counter()
    cands = judge(work, index, sims, judged, progress=progress)
    seconds["guards"] = time.perf_counter() - started
    check_model = rules.verifier_model
    model = verifier if check_model is None else check_model.verifier
    if model is not None:
        started = time.perf_counter()
        floor = min(verifier_floor, cache.threshold - (check_model.below if check_model else 0))
        cands = Candidates(
            index, sims, cands.rejects, verify(work, cands, model, floor=floor, progress=progress)
        )
        seconds["verifier"] = time.perf_counter() - started
    policy = Policy(
        float(cache.threshold),
        tuple(own),
        tuple(strict),
        float(rules.strict_guards_band),
        _model_of(check_model),
    )

    started = time.perf_counter()
    checked, agreed = _check_real_path(cache, work, cands, policy, check, seed, progress)
    seconds["check"] = time.perf_counter() - started
    return Evaluation(work, cands, policy, memo.id, seconds, checked, agreed)


def _check_real_path(
    cache: Any,
    work: Workload,
    cands: Candidates,
    policy: Policy,
    n: int,
    seed: int,
    progress: Progress | None,
) -> tuple[int, int]:
    """Ask ``n`` sampled queries through ``PromptCache.lookup``; count agreements with the
    simulated decision (a near-tie at the threshold may differ in the last float bit)."""
    if n <= 0:
        return 0, 0
    p = policy
    chosen = decide(work, cands, p.threshold, p.guards, p.verifier, p.band, p.model)
    sample = range(len(work.queries))
    if n < len(work.queries):
        sample = sorted(random.Random(seed).sample(range(len(work.queries)), n))  # type: ignore[assignment]
    bar = progress(total=len(sample), unit="query", desc="real lookups") if progress else None
    agreed = 0
    for q in sample:
        request = ChatRequest(messages=(Message("user", work.queries[q]),), model=EVAL_MODEL)
        hit, _ = cache.lookup(request)
        got = hit.entry.prompt if hit is not None else None
        want = work.entries[chosen[q]] if chosen[q] >= 0 else None
        if got == want:
            agreed += 1
        else:
            log.info("real lookup disagrees on %r: %r vs %r", work.queries[q], got, want)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return len(sample), agreed


# ---------------------------------------------------------------------------- calibration
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


def write_calibration(data_dir: Path, embedder_id: str, record: dict[str, Any]) -> Path:
    """Merge this embedder's record into the calibration file (atomically)."""
    path = calibration_path(data_dir)
    body: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            body = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            body = {}
    body[embedder_id] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------- report
def table(rows: Sequence[Metrics]) -> str:
    """A Markdown table of policies."""
    lines = [
        "| policy | threshold | hit rate | precision | recall | false hits / 1k | on labelled "
        "pairs / 1k |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        lines.append(
            f"| {m.name} | {m.threshold:.3f} | {m.hit_rate:.3f} | {m.precision:.3f} | "
            f"{m.recall:.3f} | {m.false_hits_per_1k:.1f} | {m.labelled_false_per_1k:.1f} |"
        )
    return "\n".join(lines)


def bar_check(ev: Evaluation, rows: Sequence[Metrics]) -> str:
    """The bar: at the recall of the best fixed peer threshold (highest F1), at most half its
    false hits. Also compares with the fixed threshold of equal recall."""
    mine = ev.default()
    best = _best_peer(rows)
    iso = iso_recall_false_hits(ev.curve(), mine.recall)
    meets = mine.recall >= best.recall - 1e-9 and mine.false_hits <= best.false_hits / 2
    return (
        f"best fixed peer threshold (F1): {best.name}: recall {best.recall:.3f}, "
        f"{best.false_hits_per_1k:.1f} false hits/1k\n"
        f"promptcache default: recall {mine.recall:.3f}, "
        f"{mine.false_hits_per_1k:.1f} false hits/1k "
        f"({mine.false_hits / best.false_hits if best.false_hits else 0:.0%} of it): "
        f"{'meets' if meets else 'misses'} the bar (recall >= its recall, false hits <= half)\n"
        f"a fixed threshold at the default's recall: {iso:.1f} false hits/1k "
        f"(the default has {mine.false_hits_per_1k / iso if iso else 0:.0%} of it)\n"
        f"counting only false hits on labelled pairs: {best.name} "
        f"{best.labelled_false_per_1k:.1f}/1k, promptcache default "
        f"{mine.labelled_false_per_1k:.1f}/1k"
    )


def _best_peer(rows: Sequence[Metrics]) -> Metrics:
    def f1(m: Metrics) -> float:
        return (
            2 * m.precision * m.recall / (m.precision + m.recall) if m.precision + m.recall else 0.0
        )

    return max(rows[: len(PEERS)], key=f1)


def model_bars(ev: Evaluation, rows: Sequence[Metrics], models: Sequence[Metrics]) -> list[str]:
    """For each verifier policy: the lowest threshold at which it reaches the best peer's recall,
    and its false hits there against half the peer's (the bar, if it were the default)."""
    best = _best_peer(rows)
    out = [
        f"\nat the recall of {best.name} ({best.recall:.3f}; bar: <= "
        f"{best.false_hits_per_1k / 2:.1f} false hits/1k), each verifier policy's highest "
        "threshold reaching it:\n",
        "| policy | threshold | hit rate | precision | recall | false hits / 1k | on labelled "
        "pairs / 1k | bar |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, model), _ in zip(MODEL_POLICIES, models, strict=True):
        found = None
        for t in _GRID[::-1]:
            if float(t) - model.below < 0.5:
                break
            m = ev.metrics(name, float(t), ev.policy.guards, model)
            if m.recall >= best.recall - 1e-9:
                found = m
                break
        if found is None:
            out.append(f"| {name} | - | - | - | - | - | - | never reaches it |")
            continue
        verdict = "meets" if found.false_hits <= best.false_hits / 2 else "misses"
        out.append(
            f"| {name} | {found.threshold:.3f} | {found.hit_rate:.3f} | {found.precision:.3f} | "
            f"{found.recall:.3f} | {found.false_hits_per_1k:.1f} | "
            f"{found.labelled_false_per_1k:.1f} | {verdict} |"
        )
    return out


def iso_recall_false_hits(fixed: Sequence[Metrics], recall: float) -> float:
    """False hits per 1,000 queries of a fixed threshold at the given recall (interpolated along
    the fixed-threshold curve; its highest-recall point when the recall is beyond it)."""
    points = sorted((m.recall, m.false_hits_per_1k) for m in fixed)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return float(np.interp(recall, xs, ys))


def plot(ev: Evaluation, path: Path, title: str) -> Path:
    """Precision-recall curves (fixed threshold vs this cache's policy) with each peer's and the
    default's operating point. Needs matplotlib (the ``dev`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    except ImportError as exc:
        raise ConfigError(
            "writing the precision-recall plot needs matplotlib: pip install 'promptcache[dev]' "
            "(or pass --no-plot)"
        ) from exc
    fixed = ev.curve()
    mine = ev.curve(ev.policy.guards)
    model = ev.policy.model or (Model(below=0.10) if ev.cands.scores is not None else None)
    lowest = (
        float(np.nanmin(np.where(np.isnan(ev.cands.scores), np.inf, ev.cands.sims)))
        if (ev.cands.scores is not None and not np.isnan(ev.cands.scores).all())
        else 1.0
    )
    checked = (
        [
            ev.metrics("curve", float(t), ev.policy.guards, model)
            for t in _GRID
            if float(t) - model.below >= lowest - 1e-6
        ]
        if model is not None
        else []
    )
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.0, 3.8), dpi=100)
    for axis, y in ((ax, "precision"), (bx, "false_hits_per_1k")):
        axis.plot(
            [m.recall for m in fixed],
            [getattr(m, y) for m in fixed],
            color="0.55",
            lw=1.5,
            label="fixed cosine threshold",
        )
        axis.plot(
            [m.recall for m in mine],
            [getattr(m, y) for m in mine],
            color="tab:blue",
            lw=1.8,
            label="promptcache guards (threshold swept)",
        )
        if checked and model is not None:
            axis.plot(
                [m.recall for m in checked],
                [getattr(m, y) for m in checked],
                color="tab:green",
                lw=1.8,
                label=f"guards + verifier ({model.describe()}; threshold swept)",
            )
        for (name, _), m, marker in zip(PEERS, ev.peers(), "os^vD", strict=True):
            axis.scatter(
                [m.recall], [getattr(m, y)], marker=marker, s=30, color="0.3", zorder=3, label=name
            )
        d = ev.default()
        axis.scatter(
            [d.recall],
            [getattr(d, y)],
            marker="*",
            s=140,
            color="tab:red",
            zorder=4,
            label=f"promptcache default ({d.threshold:.2f})",
        )
        axis.set_xlabel("recall")
        axis.grid(alpha=0.3)
    ax.set_ylabel("precision")
    bx.set_ylabel("false hits per 1,000 queries")
    bx.set_yscale("log")
    bx.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    bx.yaxis.set_major_formatter(ScalarFormatter())
    bx.yaxis.set_minor_formatter(NullFormatter())
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def iter_rows(ev: Evaluation) -> Iterator[Metrics]:
    yield from ev.peers()
    yield ev.default()


# ---------------------------------------------------------------------------- commands
def build_cache(threshold: float | None = None, env: dict[str, str] | None = None) -> Any:
    """A PromptCache built by ``runtime.build`` exactly as the server builds it (same embedder,
    guards and threshold resolution), on an isolated in-memory store, with no LLM; its embedder
    is memoised (``MemoEmbedder``), so ``evaluate`` embeds each text once."""
    import os

    from promptcache import runtime
    from promptcache.settings import Settings

    overrides = {
        "PROMPTCACHE_STORE": "memory",
        "PROMPTCACHE_STATS": "store",
        "PROMPTCACHE_LLM": "none",
    }
    if threshold is not None:
        overrides["PROMPTCACHE_THRESHOLD"] = repr(threshold)
    settings = Settings.from_env({**(os.environ if env is None else env), **overrides})
    return runtime.build(settings, embedder=MemoEmbedder(runtime.make_embedder(settings)))


def _progress(quiet: bool) -> Progress | None:
    if quiet:
        return None
    from functools import partial

    from tqdm import tqdm

    return partial(tqdm, leave=False, mininterval=0.5)


def _run(
    path: Path,
    pairs: Sequence[Pair],
    intent_of: dict[str, int],
    *,
    threshold: float | None,
    check: int,
    seed: int,
    vector_cache: Path | None,
    quiet: bool,
    verifier: bool = True,
) -> Evaluation:
    from promptcache import guards as guard_module

    cache = build_cache(threshold)
    return evaluate(
        cache,
        pairs,
        intent_of=intent_of,
        extra_guards=dict(guard_module.ALL_GUARDS),
        verifier=_comparison_verifier(cache) if verifier else None,
        check=check,
        seed=seed,
        vector_cache=vector_cache,
        progress=_progress(quiet),
    )


def _comparison_verifier(cache: Any) -> Any:
    """The local verifier, for the verifier rows when the cache itself runs without one; None
    when it is not installed (the rows are left out)."""
    if cache.rules.verifier_model is not None:
        return None
    from promptcache.adapters.local_verifier import LocalVerifier

    try:
        return LocalVerifier(threads=2, timeout=60.0)
    except ConfigError as exc:
        log.warning("verifier rows left out: %s", exc.message)
        return None


def _describe(
    ev: Evaluation, path: Path, part: str, limit: int | None, seed: int, n_pairs: int
) -> str:
    sampled = f", a sample of {limit} pairs (seed {seed})" if limit is not None else ""
    t = ev.seconds
    agree = (
        f"; real PromptCache.lookup on {ev.checked} sampled queries agreed on {ev.agreed}"
        if ev.checked
        else ""
    )
    return (
        f"{path.name}: part {part}{sampled}: {n_pairs} pairs, {len(ev.work.entries)} stored, "
        f"{len(ev.work.queries)} queries ({int(ev.work.answerable.sum())} with their intent in the "
        f"cache); embedder {ev.embedder_id}; policy: threshold {ev.policy.threshold:.3f}, guards "
        f"{', '.join(ev.policy.guards) or 'none'}, verifier "
        f"{', '.join(ev.policy.verifier) or 'off'} (band {ev.policy.band:g}), verifier model "
        f"{ev.policy.model.describe() if ev.policy.model else 'off'}\n"
        f"time: embed {t['embed']:.1f}s, store {t['store']:.1f}s, search {t['search']:.1f}s, "
        f"guards {t['guards']:.1f}s, verifier {t.get('verifier', 0.0):.1f}s, "
        f"real lookups {t['check']:.1f}s{agree}"
    )


def _strict() -> list[str]:
    from promptcache.guards import strict_guards

    return [g.__name__ for g in strict_guards("on")]


def run_eval(
    path: Path,
    *,
    part: str = "all",
    limit: int | None = None,
    seed: int = 0,
    threshold: float | None = None,
    plot_path: Path | None = None,
    json_path: Path | None = None,
    check: int = 2000,
    vector_cache: Path | None = None,
    quiet: bool = False,
    verifier: bool = True,
    out: Any = None,
) -> Evaluation:
    """``promptcache eval``: print the policies side by side, the guard ablation and the bar;
    write the precision-recall plot (and a JSON report)."""
    import sys

    out = out or sys.stdout
    pairs = read_pairs(path)
    intent_of = intents(pairs)  # chains through every pair, even unsampled ones
    chosen = select(pairs, part, limit, seed)
    ev = _run(
        path,
        chosen,
        intent_of,
        threshold=threshold,
        check=check,
        seed=seed,
        vector_cache=vector_cache,
        quiet=quiet,
        verifier=verifier,
    )
    rows = list(iter_rows(ev))
    from promptcache import guards as guard_module

    print(_describe(ev, path, part, limit, seed, len(chosen)), file=out)
    print("\n" + table(rows), file=out)
    print("\nguards at the policy's threshold, each on its own:\n", file=out)
    print(table(ev.ablation(list(guard_module.ALL_GUARDS), _strict())), file=out)
    models = ev.models()
    if models:
        print("\nthe verifier model on top of the policy's guards, at its threshold:\n", file=out)
        print(table(models), file=out)
        for line in model_bars(ev, rows, models):
            print(line, file=out)
    print("\n" + bar_check(ev, rows), file=out)
    if plot_path is not None:
        title = f"{path.name.split('.')[0]} ({part}{f', {limit} pairs' if limit else ''})"
        print(f"\nwrote {plot(ev, plot_path, title)}", file=out)
    if json_path is not None:
        body = {
            "file": path.name,
            "part": part,
            "limit": limit,
            "seed": seed,
            "embedder": ev.embedder_id,
            "policies": [m.as_dict() for m in rows],
            "ablation": [
                m.as_dict() for m in ev.ablation(list(guard_module.ALL_GUARDS), _strict())
            ],
            "verifier": [m.as_dict() for m in models],
            "seconds": ev.seconds,
            "checked": ev.checked,
            "agreed": ev.agreed,
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return ev


def run_calibrate(
    path: Path,
    target_precision: float,
    *,
    part: str = "fit",
    limit: int | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    write: bool = True,
    check: int = 0,
    vector_cache: Path | None = None,
    quiet: bool = False,
    out: Any = None,
) -> tuple[Metrics, Metrics | None, Path | None]:
    """``promptcache calibrate``: the lowest threshold whose precision (with the cache's guards)
    stays at or above the target on ``part``; reports it on the held-out half too and writes it
    to ``<data dir>/calibration.json`` under the embedder's id, where ``runtime.build`` reads it
    when PROMPTCACHE_THRESHOLD is unset."""
    import sys
    from datetime import UTC, datetime

    from promptcache import runtime

    out = out or sys.stdout
    if not 0.0 < target_precision <= 1.0:
        raise PromptCacheError(f"--target-precision must be in (0, 1], got {target_precision}")
    pairs = read_pairs(path)
    intent_of = intents(pairs)
    fit_pairs = select(pairs, part, limit, seed)
    ev = _run(
        path,
        fit_pairs,
        intent_of,
        threshold=None,
        check=check,
        seed=seed,
        vector_cache=vector_cache,
        quiet=quiet,
        verifier=False,  # only the cache's own verifier model, if any
    )
    # with the verifier model on, thresholds are swept with it (its candidates scored once)
    curve = ev.curve(ev.policy.guards, ev.policy.model)
    chosen = pick_threshold(curve, target_precision)
    if chosen is None:
        best = max(curve, key=lambda m: m.precision)
        raise PromptCacheError(
            f"no threshold reaches precision {target_precision} on {path.name} ({part}); the "
            f"highest is {best.precision:.3f} at {best.threshold:.3f}"
        )
    fit = ev.default(chosen.threshold)
    print(_describe(ev, path, part, limit, seed, len(fit_pairs)), file=out)
    held: Metrics | None = None
    if part == "fit":
        hold_pairs = select(pairs, "holdout", limit, seed)
        hev = _run(
            path,
            hold_pairs,
            intent_of,
            threshold=chosen.threshold,
            check=check,
            seed=seed,
            vector_cache=vector_cache,
            quiet=quiet,
            verifier=False,
        )
        held = hev.default(chosen.threshold)
    rows = [replace(fit, name=f"{part}: {fit.name}")]
    if held is not None:
        rows.append(replace(held, name=f"holdout: {held.name}"))
    print(
        f"\nthreshold for {ev.embedder_id} at precision >= {target_precision}: "
        f"{chosen.threshold:.3f}\n\n{table(rows)}",
        file=out,
    )
    written: Path | None = None
    if write:
        directory = data_dir if data_dir is not None else runtime.settings().data_dir
        record = {
            "threshold": chosen.threshold,
            "target_precision": target_precision,
            "file": path.name,
            "part": part,
            "limit": limit,
            "seed": seed,
            "guards": list(ev.policy.guards),
            "verifier_model": ev.policy.model.describe() if ev.policy.model else None,
            "fit": fit.as_dict(),
            "holdout": held.as_dict() if held is not None else None,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        written = write_calibration(directory, ev.embedder_id, record)
        print(
            f"\nwrote {written} (read by the cache when PROMPTCACHE_THRESHOLD is unset)", file=out
        )
    return fit, held, written
