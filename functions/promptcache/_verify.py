"""Which candidate answers: the guards, the strict guards and the verifier model.

The index gives a query's nearest entries, best first, down to the lowest similarity any rule
may accept. ``pick`` returns the first that every rule accepts:

- every guard, on every candidate, whoever stored it;
- the strict guards on candidates below ``threshold + strict_guards_band``;
- the verifier model (``ModelCheck``), when configured, on candidates in its own band around
  the threshold: their score must reach its ``cutoff``. Candidates below the threshold are
  eligible only through the model. All candidates that need the model are judged
  in one call. The model fails closed: whatever it raises rejects them (a miss, never a hit).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ._protocols import Verifier
from ._tally import Guard, Verdicts
from ._types import Entry

log = logging.getLogger("promptcache")

#: How a candidate is screened: (guards, query, candidate prompt) -> the first reason, or None.
Screen = Callable[[Sequence[Guard], str, str], "str | None"]


@dataclass(frozen=True)
class ModelCheck:
    """The verifier model and its policy: candidates with similarity in ``[threshold - below,
    threshold + band)`` are judged and need a score of at least ``cutoff``; those at or above
    ``threshold + band`` pass without it (1 = every candidate is judged)."""

    verifier: Verifier
    cutoff: float = 0.5
    below: float = 0.0
    band: float = 1.0

    def lowest(self, threshold: float) -> float:
        return threshold - self.below


def rejection(guards: Sequence[Guard], query: str, candidate: str) -> str | None:
    """The first guard's reason to reject ``candidate`` for ``query``, or None."""
    for guard in guards:
        reason = guard(query, candidate)
        if reason is not None:
            return reason
    return None


@dataclass(frozen=True)
class Rules:
    """The policy ``pick`` applies, as one value: ``guards`` on every candidate,
    ``strict_guards`` on candidates below ``threshold + strict_guards_band``, and the trained
    ``verifier_model`` (None: off) in its own band."""

    guards: tuple[Guard, ...] = ()
    strict_guards: tuple[Guard, ...] = ()
    strict_guards_band: float = 0.04
    verifier_model: ModelCheck | None = None


def pick(
    query: str,
    found: Iterable[tuple[Entry, float]],
    threshold: float,
    rules: Rules,
    verdicts: Verdicts | None = None,
    screen: Screen | None = None,
) -> tuple[Entry, float] | None:
    """The first candidate of ``found`` (entries and similarities, best first) every rule
    accepts, or None. ``found`` is read lazily: entries past an accepted one are never fetched,
    except that all candidates needing the model are gathered for one call. ``screen`` runs the
    guards (default ``rejection``; the cache's counts which guard rejected)."""
    guards, strict, model = rules.guards, rules.strict_guards, rules.verifier_model
    borderline = threshold + rules.strict_guards_band  # where the strict guards apply
    ceiling = threshold if model is None else threshold + model.band  # where the model does
    lowest = threshold if model is None else model.lowest(threshold)
    pending: list[tuple[Entry, float]] = []
    screen = rejection if screen is None else screen
    for entry, similarity in found:
        if similarity < lowest:
            break
        reason = screen(guards, query, entry.prompt)
        if reason is None and strict and similarity < borderline:
            reason = screen(strict, query, entry.prompt)  # borderline only
        if reason is not None:
            log.info("candidate %s rejected by guard: %s", entry.id, reason)
            continue
        if model is None or similarity >= ceiling:
            if similarity >= threshold:
                return entry, similarity  # nothing pending: sorted, the model's share comes last
            continue
        pending.append((entry, similarity))
    if not pending or model is None:
        return None
    return _judge(query, pending, model, verdicts or Verdicts())


def _judge(
    query: str, pending: list[tuple[Entry, float]], model: ModelCheck, verdicts: Verdicts
) -> tuple[Entry, float] | None:
    started = time.perf_counter()
    verdicts.judged += len(pending)
    verdicts.calls += 1
    try:
        scores = [float(s) for s in model.verifier.scores(query, [e.prompt for e, _ in pending])]
        if len(scores) != len(pending):
            raise ValueError(f"{len(scores)} scores for {len(pending)} candidates")
    except Exception as exc:  # fail closed: a verifier that cannot judge rejects
        verdicts.failed += 1
        log.warning("verifier failed, %d candidates rejected: %s", len(pending), exc)
        return None
    finally:
        verdicts.ms += 1000 * (time.perf_counter() - started)
    for (entry, similarity), score in zip(pending, scores, strict=True):
        if score >= model.cutoff:
            return entry, similarity
        log.info("candidate %s rejected by the verifier: score %.3f", entry.id, score)
    return None
