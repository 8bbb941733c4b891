"""Each request's running account (``Tally``): its start, its embeddings, the time spent in each
phase and the guards that rejected a candidate. It travels with the request from the lookup to
the counting (``_accounting``)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
#: A guard looks at the query and a candidate's prompt (both canonical) and returns a reason to
#: reject the candidate, or None to accept it.
Guard = Callable[[str, str], "str | None"]
_GUARD_NAME = re.compile(r"[^a-z0-9_]")


@dataclass
class Verdicts:
    """What one lookup asked the verifier model: candidates judged, calls, ms, failures."""

    judged: int = 0
    calls: int = 0
    ms: float = 0.0
    failed: int = 0


@dataclass
class Tally:
    """One request's running account: when it started, how many embeddings it has made, the
    milliseconds spent in each phase (``lookup``, ``embed``, ``verify``, ``model``), the
    guards that rejected a candidate and what the verifier model judged."""

    started: float = field(default_factory=time.perf_counter)
    embeddings: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    verdicts: Verdicts = field(default_factory=Verdicts)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to ``phase``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._add(phase, start)

    def call(self, phase: str, fn: Callable[[T], R], arg: T) -> R:
        with self.timed(phase):
            return fn(arg)

    def clocked(self, phase: str, deltas: Generator[str, None, T]) -> Generator[str, None, T]:
        """``deltas`` passed through, the time from the first ``next`` to its end in ``phase``."""
        start = time.perf_counter()
        try:
            return (yield from deltas)
        finally:
            self._add(phase, start)

    def screen(self, guards: Sequence[Guard], query: str, candidate: str) -> str | None:
        """The first guard's reason to reject ``candidate`` for ``query`` (that guard's name
        recorded), or None; the time it takes in ``verify``."""
        with self.timed("verify"):
            for guard in guards:
                reason = guard(query, candidate)
                if reason is not None:
                    self.rejected.append(guard_name(guard))
                    return reason
        return None

    def timings(self) -> dict[str, float]:
        """Milliseconds per phase; ``lookup`` without the embedding and the guards in it."""
        out = dict(self.phases)
        if self.verdicts.ms:
            out["verify"] = out.get("verify", 0.0) + self.verdicts.ms
        if "lookup" in out:
            inner = out.get("embed", 0.0) + out.get("verify", 0.0)
            out["lookup"] = max(0.0, out["lookup"] - inner)
        return out

    def _add(self, phase: str, start: float) -> None:
        ms = (time.perf_counter() - start) * 1000
        self.phases[phase] = self.phases.get(phase, 0.0) + ms


def guard_name(guard: Guard) -> str:
    """A guard's name in counters: its function's name without ``_guard`` (``numbers``)."""
    name = str(getattr(guard, "__name__", type(guard).__name__)).lower()
    return _GUARD_NAME.sub("_", name.removesuffix("_guard"))[:40] or "guard"
