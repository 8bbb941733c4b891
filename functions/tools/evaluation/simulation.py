"""One evaluation: the workload stored in a real PromptCache, every query's candidates searched and
judged once, the policies decided from them, and a sample checked through ``PromptCache.lookup``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from promptcache._keys import normalize
from promptcache._types import ChatRequest, Completion, Message, Usage

from .data import Pair, Progress, Workload
from .embedding import MemoEmbedder
from .metrics import Metrics, score
from .policy import GRID, MODEL_POLICIES, PEERS, Candidates, Model, decide, judge, nearest, verify

log = logging.getLogger("promptcache")

EVAL_MODEL = "eval"


@dataclass(frozen=True)
class Policy:
    """This cache's decision policy, read from the cache itself."""

    threshold: float
    guards: tuple[str, ...]
    strict_guards: tuple[str, ...] = ()
    strict_guards_band: float = 1.0
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
        chosen = decide(
            self.work, self.cands, t, p.guards, p.strict_guards, p.strict_guards_band, p.model
        )
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
        return [self.metrics("curve", float(t), names, model) for t in GRID]

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
            band = self.policy.strict_guards_band
            banded = decide(self.work, self.cands, t, self.policy.guards, more, band)
            rows.append(
                score(f"policy + verifier {', '.join(more)} (band {band:g})", t, banded, self.work)
            )
        rows.append(self.metrics("all guards", t, all_guards))
        rows += [
            self.metrics(f"all but {g}", t, [x for x in all_guards if x != g]) for g in all_guards
        ]
        return rows


def _model_of(check: Any) -> Model | None:
    if check is None:
        return None
    return Model(float(check.cutoff), float(check.below), float(check.band))


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
    chosen = decide(
        work, cands, p.threshold, p.guards, p.strict_guards, p.strict_guards_band, p.model
    )
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
