"""The caching policy: tiers, thresholds, guards, TTL and fail-open.

``PromptCache`` decides what answers a request. Every other job has its own module:

    _query       the request as one value: namespace, exact key, canonical prompt
    _boundary    the backends, wrapped once: whatever one raises is its BackendError
    _indexes     the index: in-process per namespace (synced, bounded), or a server-side Index
    _claim       who asks the model for a miss: single-flight and the cross-process fill lock
    _accounting  the counters and the report (_tally: each request's running account)
    _health      the health probes       _admin  entry, forget, recent, flush, clear

Fail-open by construction: backends only through ``_boundary`` and ``_protocols``. A StoreError
or EmbedderError bypasses the cache, a StatsError is logged, an UpstreamError is a 502/504.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._accounting import Accounting
from ._admin import Admin
from ._boundary import (
    GuardedDocuments,
    GuardedEmbedder,
    GuardedLLM,
    GuardedLocks,
    GuardedStats,
    GuardedStore,
)
from ._claim import Claims, Filled, Lead, lock_ttl, locks_of
from ._errors import BackendError
from ._health import PROBE_MAX_AGE, Health
from ._indexes import DEFAULT_BOUNDS, Bounds, indexes_for
from ._keys import namespace, normalize
from ._protocols import LLM, Documents, Embedder, Index, Locks, Stats, Store
from ._query import Query
from ._settings_table import (
    PRICE_PER_1K_TOKENS,
    STRICT_GUARDS_BAND,
    TTL_SECONDS,
    UPSTREAM_TIMEOUT,
)
from ._stream import ChatStream, passthrough
from ._tally import Guard, Tally
from ._types import (
    CacheHit,
    CacheMode,
    ChatRequest,
    ChatResult,
    Completion,
    DependencyStatus,
    Entry,
    Tier,
    Vector,
)
from ._verify import ModelCheck, Rules, pick

log = logging.getLogger("promptcache")


@dataclass(frozen=True)
class _Plan:
    """What the cache can do for a request before any model call."""

    hit: CacheHit | None = None
    bypass: str | None = None  # why the cache is not used: the answer is neither shared nor stored
    vector: Vector | None = None  # the query's embedding, if the lookup made one
    old: Entry | None = None  # what a refresh replaces


class PromptCache:
    """The semantic cache. Public methods own policy; backends do raw I/O only.

    Backends, given at construction (each wrapped once by ``_boundary``; the read-only
    attributes of the same names return the backends themselves):

    - ``store``: entries, exact keys and vector logs; ``index``: a server-side Index for the
      vectors (default None: each process its own, synced from the logs). ``locks``: fill locks
      across processes (default: the store's if any; without, each process fills its own).
    - ``embedder``; ``stats``: the counters; ``llm``: the model. With no model, a miss raises
      UpstreamNotConfigured; ``llm_hint`` (from the composition root) ends its message with how
      to configure one.

    Policy:

    - ``threshold``: cosine similarity at or above which a stored prompt answers (default: the
      embedder's ``default_threshold``); ``candidates``: how many of the nearest entries the
      guards may look at.
    - ``guards``: each may reject a candidate (query and candidate prompt, both canonical ->
      a reason, or None). ``strict_guards``: more guards, asked only about borderline
      candidates, whose similarity is below ``threshold + strict_guards_band``;
      ``verifier_model``: the trained verifier and its policy (module ``_verify``), in its own
      band. All four are held as one value, ``rules`` (``_verify.Rules``).
    - ``ttl_seconds``: lifetime of a stored answer unless the request sets one (0: forever).
    - ``semantic_max_chars``: longer prompts use the exact tier only (default: what the embedder
      reads whole, its ``max_input_chars``). ``bounds``: of the indexes in memory (``_indexes``).
    - ``price_per_1k_tokens``: of the tokens a hit saves (the money saved). ``clock``: wall time.
    - ``fill_lock_ttl``: how long a fill lock lives (past the model's timeout); ``fill_wait``:
      how long an identical miss in another process is waited for (default: ``fill_lock_ttl``).
    """

    def __init__(
        self,
        *,
        store: Store,
        embedder: Embedder,
        stats: Stats,
        llm: LLM | None = None,
        locks: Locks | None = None,
        index: Index | None = None,
        threshold: float | None = None,
        ttl_seconds: float = TTL_SECONDS,
        guards: Sequence[Guard] = (),
        strict_guards: Sequence[Guard] = (),
        strict_guards_band: float = STRICT_GUARDS_BAND,
        verifier_model: ModelCheck | None = None,
        price_per_1k_tokens: float = PRICE_PER_1K_TOKENS,
        candidates: int = 4,
        semantic_max_chars: int | None = None,
        bounds: Bounds = DEFAULT_BOUNDS,
        fill_lock_ttl: float = lock_ttl(UPSTREAM_TIMEOUT),
        fill_wait: float | None = None,
        probe_max_age: float = PROBE_MAX_AGE,
        llm_hint: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = GuardedStore(store)
        self._documents = GuardedDocuments(store if isinstance(store, Documents) else None)
        self._locks = GuardedLocks(locks if locks is not None else locks_of(store))
        self._embedder = embedder = GuardedEmbedder(embedder)
        self._stats = GuardedStats(stats)
        self._llm = GuardedLLM(llm, llm_hint)
        self.threshold = embedder.default_threshold if threshold is None else threshold
        self.ttl_seconds = ttl_seconds
        self.rules = Rules(tuple(guards), tuple(strict_guards), strict_guards_band, verifier_model)
        self.candidates = candidates
        self.semantic_max_chars = (
            embedder.max_input_chars if semantic_max_chars is None else semantic_max_chars
        )
        self.clock = clock
        self._claims = Claims(
            locks=self._locks,
            clock=clock,
            lock_ttl=fill_lock_ttl,
            wait=fill_lock_ttl if fill_wait is None else fill_wait,
        )
        # an eviction may remove the entry a lingering shared answer names
        self._indexes = indexes_for(
            self._store, index, lambda: embedder.dim, bounds, evicted=self._claims.forget
        )
        self._accounting = Accounting(self._stats, price_per_1k_tokens, clock, self._store)
        self._health = Health(
            self._store, embedder, self._stats, self._llm, self._indexes, max_age=probe_max_age
        )
        self._admin = Admin(self._store, self._indexes, self._claims, self._accounting, clock)

    # ------------------------------------------------------------------ the backends
    @property
    def store(self) -> Store:
        return self._store.inner

    @property
    def locks(self) -> Locks | None:
        return self._locks.inner

    @property
    def embedder(self) -> Embedder:
        return self._embedder.inner

    @property
    def stats(self) -> Stats:
        return self._stats.inner

    @property
    def llm(self) -> LLM | None:
        return self._llm.inner

    # ------------------------------------------------------------------ answering
    def chat(self, request: ChatRequest) -> ChatResult:
        """Answer a request from the cache or the LLM. Raises UpstreamError on an LLM failure."""
        query, tally = self._query(request), Tally()
        plan = self._plan(query, tally)
        if plan.hit is not None:
            return self._accounting.hit(query.request, plan.hit, tally)
        lead = self._lead(query, plan)
        if isinstance(lead, Filled):
            return self._shared(query, tally, lead)
        with lead:
            completion = tally.call("model", self._llm.generate, request)
            return self._settle(query, tally, plan, lead, completion)

    def chat_stream(self, request: ChatRequest) -> ChatStream:
        """``chat``, streamed: same tiers, counters and fail-open, decided before the first delta.

        - Hit: the stored answer replayed as deltas; the model is not called.
        - Miss: the model's deltas pass through as they arrive; the whole answer is stored only
          when the model's stream completes. A broken stream (UpstreamError while iterating) or a
          cancelled one (``close()``) stores nothing.
        - Single-flight: a streamed miss leads its key's flight like a plain miss; identical
          requests arriving meanwhile (streamed or not) wait and get its answer as an exact hit,
          so the model is called once. If the leader is cancelled, they try again themselves.

        Raises UpstreamError when the model fails before its first delta (primed: an HTTP error).
        """
        query, tally = self._query(request), Tally()
        plan = self._plan(query, tally)
        if plan.hit is not None:
            return ChatStream.replay(self._accounting.hit(query.request, plan.hit, tally))
        lead = self._lead(query, plan)
        if isinstance(lead, Filled):
            return ChatStream.replay(self._shared(query, tally, lead))
        stream = ChatStream(
            tier=Tier.MISS if plan.bypass is None else Tier.BYPASS,
            model=request.model,
            deltas=self._relay(query, tally, plan, lead),
            bypass_reason=plan.bypass,
            timings=tally.timings,
        )
        stream.prime()
        return stream

    def lookup(self, request: ChatRequest) -> tuple[CacheHit | None, Vector | None]:
        """Exact tier, then semantic tier, as ``chat`` would (stores and counts nothing). Returns
        the hit (or None) and the query vector if one was computed. Raises BackendError."""
        return self._lookup(self._query(request), Tally())

    def store_answer(
        self, request: ChatRequest, completion: Completion, *, vector: Vector | None = None
    ) -> Entry:
        """Store an answer as the server would (``promptcache warm``). Raises BackendError."""
        query = self._query(request)
        if vector is None and query.semantic:
            vector = self._embed(query.folded, Tally())
        entry = self._entry(query, completion)
        self._indexes.put(entry, vector)
        return entry

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        """The normalized texts' embeddings, one row each. Raises EmbedderError."""
        return self._embedder.embed([normalize(t) for t in texts])

    def entry_namespace(self, request: ChatRequest) -> str:
        return namespace(request, self._embedder.id, self._embedder.dim)

    # ------------------------------------------------------------------ kept documents
    def keep(self, name: str, document: Mapping[str, Any], ttl: float | None = None) -> None:
        """Keep a JSON document under ``name`` in the store for ``ttl`` seconds (default: the
        entries' TTL; 0: as long as the store keeps it). One write. Raises StoreError."""
        seconds = self.ttl_seconds if ttl is None else ttl
        self._documents.put_document(name, document, seconds or None)

    def kept(self, name: str) -> dict[str, Any] | None:
        """The document kept under ``name``, or None. One read. Raises StoreError."""
        return self._documents.get_document(name)

    # ------------------------------------------------------------------ reporting and admin
    def report(
        self, tenants: Collection[str] | None = None, since: float | None = None
    ) -> dict[str, Any]:
        """The counters' report (``Accounting``), ``tenants``: per tenant, the series from
        ``since``. Raises StatsError."""
        try:
            entries: int | None = self._store.count()
        except BackendError:
            entries = None
        return self._accounting.report(self._about(entries), tenants, since)

    def tenant_report(
        self, tenant: str, known: Collection[str] = (), since: float | None = None
    ) -> dict[str, Any] | None:
        """``tenant``'s alone (``entries`` None: stores count every tenant's entries together),
        or None if it is neither in ``known`` nor counted. Raises StatsError."""
        return self._accounting.tenant_report(tenant, known, self._about(None), since)

    def counters(self) -> tuple[dict[str, dict[str, float]], int | None]:
        """Each tenant's counters and the store's entry count (None when it cannot tell), for
        ``/metrics``. Raises StatsError."""
        return self._accounting.counters()[1], self._accounting.entries()

    def _about(self, entries: int | None) -> dict[str, Any]:
        embedder = {"id": self._embedder.id, "dim": self._embedder.dim}
        return {"entries": entries, "threshold": self.threshold, "embedder": embedder}

    def models(self, tenant: str | None = None) -> list[str]:
        """The models answered for (``tenant``'s only, when given); empty if stats fail."""
        return self._accounting.models(tenant)

    def health(self) -> tuple[bool, list[DependencyStatus]]:
        """Each dependency's status; ok when the cache can answer (the store is reachable)."""
        return self._health.check()

    def entry(self, tenant: str, entry_id: str) -> Entry | None:
        """One of ``tenant``'s live stored answers, or None. Raises StoreError."""
        return self._admin.entry(tenant, entry_id)

    def forget(self, tenant: str, entry_id: str) -> Entry | None:
        """Remove one of ``tenant``'s answers everywhere (None if none). Raises StoreError."""
        return self._admin.forget(tenant, entry_id)

    def clear(self) -> int:
        """Delete every entry and reset the counters. Raises StoreError or StatsError."""
        return self._admin.clear()

    def recent(self, tenant: str | None, offset: int, limit: int) -> tuple[list[Entry], int | None]:
        """A page of live entries, newest first (``tenant``'s only, when given), and the offset
        of the next page (None at the end). Raises StoreError."""
        return self._admin.recent(tenant, offset, limit)

    def flush(
        self,
        *,
        namespace: str | None = None,
        model: str | None = None,
        tenant: str | None = None,
        prompt: str | None = None,
    ) -> int:
        """Remove every entry matching all the filters given (at least one); how many. Raises
        StoreError."""
        return self._admin.flush(namespace=namespace, model=model, tenant=tenant, prompt=prompt)

    # ------------------------------------------------------------------ the policy
    def _query(self, request: ChatRequest) -> Query:
        return Query.of(
            request,
            embedder_id=self._embedder.id,
            dim=self._embedder.dim,
            semantic_max_chars=self.semantic_max_chars,
        )

    def _plan(self, query: Query, tally: Tally) -> _Plan:
        """A hit, a bypass (the request's reason, cache=skip, a failed lookup), or a miss."""
        if query.request.bypass is not None or query.mode is CacheMode.SKIP:
            return _Plan(bypass=query.request.bypass or "cache=skip")
        if query.mode is CacheMode.REFRESH:  # find what the exact key answers now, to replace it
            try:
                return _Plan(old=self._indexes.sync(query.namespace, query.key).exact)
            except BackendError as exc:
                log.warning("refresh lookup failed: %s", exc)
                return _Plan()
        try:
            with tally.timed("lookup"):
                hit, vector = self._lookup(query, tally)
        except BackendError as exc:
            log.warning("cache lookup failed, bypassing: %s", exc)
            return _Plan(bypass=_reason(exc))
        return _Plan(hit=hit, vector=vector)

    def _peek(self, query: Query) -> Entry | None:
        """The query's stored entry, read afresh (after waiting for another process's fill)."""
        return self._indexes.sync(query.namespace, query.key).exact

    def _lookup(self, query: Query, tally: Tally) -> tuple[CacheHit | None, Vector | None]:
        now = self.clock()
        exact = self._indexes.sync(query.namespace, query.key).exact
        if exact is not None and not exact.expired(now):
            return CacheHit(entry=exact, tier=Tier.EXACT, similarity=1.0), None
        if not query.semantic:
            return None, None
        vector = self._embed(query.folded, tally)
        threshold = self.threshold if query.request.threshold is None else query.request.threshold
        model = self.rules.verifier_model
        lowest = threshold if model is None else model.lowest(threshold)
        found = self._indexes.search(
            query.namespace, vector, k=self.candidates, min_score=lowest, now=now
        )
        live = self._live(query, found, now)
        chosen = pick(query.text, live, threshold, self.rules, tally.verdicts, tally.screen)
        if chosen is None:
            return None, vector
        self._indexes.hit(query.namespace, chosen[0].id)
        return CacheHit(entry=chosen[0], tier=Tier.SEMANTIC, similarity=chosen[1]), vector

    def _live(self, query: Query, found: Sequence[tuple[str, float]], now: float) -> Any:
        """The found entries that still exist, fetched one by one as ``pick`` reads them."""
        for entry_id, similarity in found:
            entry = self._store.get(entry_id)
            if entry is None or entry.expired(now):
                self._indexes.remove(query.namespace, entry_id)
                continue
            yield entry, similarity

    def _lead(self, query: Query, plan: _Plan) -> Lead | Filled:
        """The claim step (``_claim``): lead, or share another's answer (a bypass leads none)."""
        return Lead() if plan.bypass is not None else self._claims.claim(query, self._peek)

    def _relay(
        self, query: Query, tally: Tally, plan: _Plan, lead: Lead
    ) -> Generator[str, None, ChatResult]:
        """The model's deltas, then the whole answer settled as a plain one. A broken or closed
        stream settles ``lead`` by its exception (see ``Lead``) and stores nothing."""
        with lead:
            deltas = passthrough(self._llm.stream(query.request), query.model)
            completion = yield from tally.clocked("model", deltas)
            return self._settle(query, tally, plan, lead, completion)

    def _settle(
        self, query: Query, tally: Tally, plan: _Plan, lead: Lead, completion: Completion
    ) -> ChatResult:
        """The model answered: store the answer (unless bypassed), share it, count it."""
        if plan.bypass is not None:
            filled = Filled(completion, None, plan.bypass)
        else:
            filled = self._keep(query, tally, plan, completion)
        lead.resolve(filled)
        return self._answered(query, tally, filled)

    def _keep(self, query: Query, tally: Tally, plan: _Plan, completion: Completion) -> Filled:
        """Store a complete answer; a backend failure answers anyway (not stored, and why)."""
        try:
            vector = plan.vector
            if vector is None and query.semantic:
                vector = self._embed(query.folded, tally)
            entry = self._entry(query, completion)
            self._indexes.put(entry, vector)
            if plan.old is not None and plan.old.id != entry.id:
                self._indexes.delete(plan.old)
        except BackendError as exc:
            log.warning("storing the answer failed, bypassing: %s", exc)
            return Filled(completion, None, _reason(exc))
        return Filled(completion, entry)

    def _embed(self, text: str, tally: Tally) -> Vector:
        tally.embeddings += 1
        with tally.timed("embed"):
            return np.asarray(self._embedder.embed([text])[0], dtype=np.float32)

    def _entry(self, query: Query, completion: Completion) -> Entry:
        now = self.clock()
        ttl = self.ttl_seconds if query.request.ttl is None else query.request.ttl
        return Entry(
            id=uuid.uuid4().hex,
            namespace=query.namespace,
            exact_key=query.key,
            prompt=query.text,
            response=completion.text,
            model=query.model,
            usage=completion.usage,
            created_at=now,
            expires_at=(now + ttl) if ttl else None,
            tool_calls=tuple(c.anonymous() for c in completion.tool_calls),
            finish_reason=completion.finish_reason,
            thinking=completion.thinking,
            stop_sequence=completion.stop_sequence,
        )

    def _shared(self, query: Query, tally: Tally, filled: Filled) -> ChatResult:
        """An identical request answered meanwhile: its entry is an exact hit (else a bypass)."""
        if filled.entry is None:
            return self._answered(query, tally, filled)
        hit = CacheHit(entry=filled.entry, tier=Tier.EXACT, similarity=1.0)
        return self._accounting.hit(query.request, hit, tally)

    def _answered(self, query: Query, tally: Tally, filled: Filled) -> ChatResult:
        return self._accounting.answered(
            query.request, filled.completion, tally, entry=filled.entry, reason=filled.reason
        )


def _reason(exc: BackendError) -> str:
    return f"{exc.code}: {exc.message}"
