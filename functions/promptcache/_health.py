"""Health probes: each dependency's status, and whether the cache can answer.

The store is probed on every call (the cache cannot answer without it). The embedder (one
embedding), the stats backend and a server-side index (without it the cache bypasses, so it is
not required) are optional and cost money or rate limit deployed, so frequent monitors (load
balancers, uptime checks) reuse a probe younger than ``max_age`` seconds. The model is reported
as configured or not, never asked to generate: an upstream with a free probe (Claude's models
list) is probed like the optional dependencies, the others are reported as configured.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._boundary import GuardedEmbedder, GuardedLLM, GuardedStats, GuardedStore
from ._errors import BackendError
from ._types import DependencyStatus

if TYPE_CHECKING:
    from ._indexes import Indexes

#: Seconds a probe of a paid dependency is reused.
PROBE_MAX_AGE = 30.0


class Health:
    def __init__(
        self,
        store: GuardedStore,
        embedder: GuardedEmbedder,
        stats: GuardedStats,
        llm: GuardedLLM,
        indexes: Indexes | None = None,
        *,
        max_age: float = PROBE_MAX_AGE,
    ) -> None:
        self.max_age = max_age
        self._indexes = indexes
        self._store = store
        self._embedder = embedder
        self._stats = stats
        self._llm = llm
        self._recent: dict[str, tuple[float, DependencyStatus]] = {}

    def check(self) -> tuple[bool, list[DependencyStatus]]:
        """Each dependency's status; ok when every required one is (the store)."""
        checks = [
            _probe("store", self._store.ping),
            self._reused("embedder", lambda: self._embedder.embed(["health check"])),
            self._reused("stats", self._stats.read),
            self._model(),
        ]
        server = None if self._indexes is None else self._indexes.index
        if server is not None:
            checks.insert(1, self._reused("index", server.ping))
        return all(c.ok for c in checks if c.required), checks

    def _model(self) -> DependencyStatus:
        llm = self._llm.inner
        if llm is None:
            hint = self._llm.hint
            detail = f"not configured: {hint}" if hint else "not configured"
            return DependencyStatus("llm", False, 0.0, detail, required=False)
        if not self._llm.probed:
            return DependencyStatus("llm", True, 0.0, f"configured: {llm.name}", required=False)
        probe = self._reused("llm", self._llm.ping)
        return dataclasses.replace(probe, detail=f"configured: {llm.name}; probe: {probe.detail}")

    def _reused(self, name: str, fn: Callable[[], object]) -> DependencyStatus:
        now = time.monotonic()
        cached = self._recent.get(name)
        if cached is not None and now - cached[0] < self.max_age:
            return cached[1]
        status = _probe(name, fn, required=False)
        self._recent[name] = (now, status)
        return status


def _probe(name: str, fn: Callable[[], object], required: bool = True) -> DependencyStatus:
    started = time.perf_counter()
    try:
        fn()
    except BackendError as exc:
        return DependencyStatus(
            name, False, (time.perf_counter() - started) * 1000, str(exc), required
        )
    return DependencyStatus(name, True, (time.perf_counter() - started) * 1000, "ok", required)
