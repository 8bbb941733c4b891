"""The caching policy: tiers, thresholds, guards, TTL, single-flight, fail-open and stats.

Depends only on the protocols in ``_protocols``; never on a concrete backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import BackendError, EmbedderError, StatsError, StoreError, UpstreamNotConfigured
from ._keys import exact_key, namespace, normalize, tenant_of
from ._protocols import LLM, Embedder, Locks, Stats, Store, StreamingLLM
from ._singleflight import Lease, SingleFlight
from ._stream import ChatStream
from ._types import (
    CacheHit,
    CacheMode,
    ChatRequest,
    ChatResult,
    Completion,
    Cursor,
    DependencyStatus,
    Entry,
    SyncResult,
    Tier,
    Usage,
    Vector,
)
from .index import VectorIndex

log = logging.getLogger("promptcache")

_NO_LLM = (
    "no LLM upstream is configured, so a cache miss cannot be answered: set "
    "OPENAI_BASE_URL (and OPENAI_API_KEY) for an OpenAI-compatible server, or "
    "CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN for Workers AI"
)

#: The reason a leader returns when another process answered the same prompt meanwhile.
_FROM_PEER = "answered by an identical request in another process"

#: Embedding calls made while answering the current request (counted into the stats).
_EMBEDS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("embeds", default=None)

#: A guard looks at the query and a candidate's prompt (both normalized) and returns a reason to
#: reject the candidate, or None to accept it.
Guard = Callable[[str, str], "str | None"]


@dataclass(frozen=True)
class _Plan:
    hit: CacheHit | None = None
    bypass: str | None = None  # why the cache is not used for this request
    vector: Vector | None = None  # the query's embedding, if the lookup made one
    old: Entry | None = None  # what a refresh replaces


@dataclass
class _Namespace:
    index: VectorIndex
    cursor: Cursor | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class PromptCache:
    """The semantic cache. Public methods own policy; backends do raw I/O only."""

    def __init__(
        self,
        *,
        store: Store,
        embedder: Embedder,
        stats: Stats,
        llm: LLM | None = None,
        locks: Locks | None = None,
        threshold: float | None = None,
        ttl_seconds: float = 7 * 86400,
        guards: Sequence[Guard] = (),
        verifier: Sequence[Guard] = (),
        verifier_band: float = 0.04,
        price_per_1k_tokens: float = 0.002,
        candidates: int = 4,
        semantic_max_chars: int | None = None,
        fill_lock_ttl: float = 65.0,
        fill_wait: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.stats = stats
        self.llm = llm
        self.locks = locks if locks is not None or not isinstance(store, Locks) else store
        self.threshold = embedder.default_threshold if threshold is None else threshold
        self.ttl_seconds = ttl_seconds
        self.guards = tuple(guards)
        # The optional verifier looks only at borderline candidates: similarity below
        # threshold + verifier_band. Clear matches above the band never pay for it.
        self.verifier = tuple(verifier)
        self.verifier_band = verifier_band
        self.price_per_1k_tokens = price_per_1k_tokens
        self.candidates = candidates
        # Longer prompts than the embedder reads whole would be compared on a truncated prefix
        # (two long prompts sharing a preamble would look identical): exact tier only for them.
        self.semantic_max_chars = (
            semantic_max_chars
            if semantic_max_chars is not None
            else getattr(embedder, "max_input_chars", 2000)
        )
        self.clock = clock
        self._namespaces: dict[str, _Namespace] = {}
        self._ns_lock = threading.Lock()
        # Cross-process single-flight: how long the fill lock lives (past the model's timeout)
        # and how long another process's identical miss is waited for.
        self.fill_lock_ttl = fill_lock_ttl
        self.fill_wait = fill_lock_ttl if fill_wait is None else fill_wait
        self.probe_max_age = 30.0  # seconds a health probe of a paid dependency is reused
        self._probes: dict[str, tuple[float, DependencyStatus]] = {}
        # Results linger briefly: a request whose lookup ran while an identical miss was being
        # answered, but which reaches the flight just after it ended, still shares its answer.
        self._flight: SingleFlight[tuple[Completion, Entry | None, str | None]] = SingleFlight(
            linger=5.0, reusable=lambda r: r[1] is not None and not r[1].expired(self.clock())
        )

    # ------------------------------------------------------------------ public API
    def chat(self, request: ChatRequest) -> ChatResult:
        """Answer a request from the cache or the LLM. Raises UpstreamError on an LLM failure."""
        token = _EMBEDS.set([0])
        try:
            return self._chat(request)
        finally:
            _EMBEDS.reset(token)

    def _chat(self, request: ChatRequest) -> ChatResult:
        started = time.perf_counter()
        ns = namespace(request, self.embedder.id, self.embedder.dim)
        key = exact_key(ns, request.prompt)

        plan = self._plan(request, ns, key)
        if plan.bypass is not None:
            completion = self._generate(request)
            return self._finish(request, started, completion, Tier.BYPASS, reason=plan.bypass)
        if plan.hit is not None:
            return self._hit(request, started, plan.hit)

        def fill() -> tuple[Completion, Entry | None, str | None]:
            return self._fill(request, ns, key, plan.vector, plan.old)

        (completion, entry, reason), shared = self._flight.do(
            key, fill, reuse_recent=request.cache is CacheMode.USE
        )
        if entry is not None and (shared or reason == _FROM_PEER):
            # Waited on an identical in-flight request: its answer is now the stored entry.
            hit = CacheHit(entry=entry, tier=Tier.EXACT, similarity=1.0)
            return self._hit(request, started, hit)
        tier = Tier.MISS if entry is not None else Tier.BYPASS
        return self._finish(request, started, completion, tier, entry=entry, reason=reason)

    def chat_stream(self, request: ChatRequest) -> ChatStream:
        """``chat``, streamed: same tiers, counters and fail-open, decided before the first delta.

        - Hit: the stored answer replayed as deltas; the model is not called.
        - Miss: the model's deltas pass through as they arrive; the whole answer is stored only
          when the model's stream completes. A broken stream (UpstreamError while iterating) or a
          cancelled one (``close()``) stores nothing.
        - Single-flight: a streamed miss leads its key's flight like a plain miss; identical
          requests arriving meanwhile (streamed or not) wait and get its answer as an exact hit,
          so the model is called once. If the leader is cancelled, they try again themselves.

        Raises UpstreamError when the model fails before its first delta (the stream is primed),
        so that failure can still be an HTTP error status.
        """
        counter = [0]  # this request's embeddings, also those made when the stream completes
        token = _EMBEDS.set(counter)
        try:
            return self._chat_stream(request, counter)
        finally:
            _EMBEDS.reset(token)

    def _chat_stream(self, request: ChatRequest, counter: list[int]) -> ChatStream:
        started = time.perf_counter()
        ns = namespace(request, self.embedder.id, self.embedder.dim)
        key = exact_key(ns, request.prompt)

        plan = self._plan(request, ns, key)
        if plan.bypass is not None:
            return self._relay(request, started, ns, key, counter, store=False, reason=plan.bypass)
        if plan.hit is not None:
            return ChatStream.replay(self._hit(request, started, plan.hit))
        vector, old = plan.vector, plan.old

        lease, shared = self._flight.lead(key, reuse_recent=request.cache is CacheMode.USE)
        if lease is None:  # an identical request was in flight: its answer, no model call
            completion, entry, why = shared  # type: ignore[misc]
            if entry is not None:
                hit = CacheHit(entry=entry, tier=Tier.EXACT, similarity=1.0)
                return ChatStream.replay(self._hit(request, started, hit))
            return ChatStream.replay(
                self._finish(request, started, completion, Tier.BYPASS, reason=why)
            )
        release: Callable[[], None] | None = None
        if request.cache is CacheMode.USE:  # across processes, as _fill does
            lock, token = f"fill:{key}", uuid.uuid4().hex
            peer, locked = self._lead_or_wait(ns, key, lock, token)
            if peer is not None:
                lease.resolve((Completion(peer.response, peer.model, Usage()), peer, _FROM_PEER))
                hit = CacheHit(entry=peer, tier=Tier.EXACT, similarity=1.0)
                return ChatStream.replay(self._hit(request, started, hit))
            if locked:
                release = functools.partial(self._unlock, lock, token)
        try:
            return self._relay(
                request, started, ns, key, counter,
                vector=vector, old=old, lease=lease, release=release,
            )  # fmt: skip
        except BaseException:
            if release is not None:
                release()
            raise

    def models(self) -> list[str]:
        """The models this cache has answered for (from the counters); empty if stats fail."""
        try:
            counters = self.stats.read()
        except Exception as exc:
            log.warning("reading stats failed: %s", exc)
            return []
        return sorted({k[2:].rsplit("|", 1)[0] for k in counters if k.startswith("m|")})

    def _plan(self, request: ChatRequest, ns: str, key: str) -> _Plan:
        """What the cache can do for a request before any model call (shared by chat and
        chat_stream): a hit, a bypass (cache=skip, or a failed lookup), or a miss to fill."""
        if request.cache is CacheMode.SKIP:
            return _Plan(bypass="cache=skip")
        if request.cache is CacheMode.USE:
            try:
                hit, vector = self.lookup(request, ns=ns, key=key)
            except BackendError as exc:
                log.warning("cache lookup failed, bypassing: %s", exc)
                return _Plan(bypass=f"{exc.code}: {exc.message}")
            return _Plan(hit=hit, vector=vector)
        try:  # REFRESH: find what the exact key answers now, to replace it
            return _Plan(old=self._sync(ns, key).exact)
        except BackendError as exc:
            log.warning("refresh lookup failed: %s", exc)
            return _Plan()

    def lookup(
        self, request: ChatRequest, *, ns: str | None = None, key: str | None = None
    ) -> tuple[CacheHit | None, Vector | None]:
        """Exact tier, then semantic tier. Returns the hit (or None) and the query vector if one
        was computed (so a miss can store it without embedding twice). Raises BackendError."""
        ns = ns or namespace(request, self.embedder.id, self.embedder.dim)
        key = key or exact_key(ns, request.prompt)
        now = self.clock()
        sync = self._sync(ns, key)
        if sync.exact is not None and not sync.exact.expired(now):
            return CacheHit(entry=sync.exact, tier=Tier.EXACT, similarity=1.0), None

        query = normalize(request.prompt)
        if not self._semantic_ok(query):
            return None, None
        vector = self._embed(query)
        threshold = self.threshold if request.threshold is None else request.threshold
        state = self._namespace(ns)
        for entry_id, similarity in state.index.search(
            vector, k=self.candidates, min_score=threshold, now=now
        ):
            entry = self.store.get(entry_id)
            if entry is None or entry.expired(now):
                state.index.remove(entry_id)
                continue
            reason = self._guard(query, entry.prompt, self.guards)
            if reason is None and self.verifier and similarity < threshold + self.verifier_band:
                reason = self._guard(query, entry.prompt, self.verifier)  # borderline only
            if reason is not None:
                log.info("candidate %s rejected by guard: %s", entry_id, reason)
                continue
            return CacheHit(entry=entry, tier=Tier.SEMANTIC, similarity=similarity), vector
        return None, vector

    def store_answer(
        self,
        request: ChatRequest,
        completion: Completion,
        *,
        vector: Vector | None = None,
    ) -> Entry:
        """Store an answer as the server would (used by ``promptcache warm``)."""
        ns = namespace(request, self.embedder.id, self.embedder.dim)
        key = exact_key(ns, request.prompt)
        if vector is None and self._semantic_ok(normalize(request.prompt)):
            vector = self._embed(normalize(request.prompt))
        entry = self._entry(request, ns, key, completion)
        self.store.put(entry, vector)
        return entry

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        with _failures_as(EmbedderError, "embedder"):
            return self.embedder.embed([normalize(t) for t in texts])

    def entry_namespace(self, request: ChatRequest) -> str:
        return namespace(request, self.embedder.id, self.embedder.dim)

    def report(self) -> dict[str, Any]:
        """Hits by tier, misses, bypasses, hit rate, entries, latencies, savings; per model."""
        counters = self.stats.read()
        try:
            entries: int | None = self.store.count()
        except BackendError:
            entries = None
        models = sorted({k[2:].rsplit("|", 1)[0] for k in counters if k.startswith("m|")})
        body = _summarize(counters, "")
        body["entries"] = entries
        body["threshold"] = self.threshold
        body["embedder"] = {"id": self.embedder.id, "dim": self.embedder.dim}
        body["models"] = {m: _summarize(counters, f"m|{m}|") for m in models}
        return body

    def health(self) -> tuple[bool, list[DependencyStatus]]:
        """Each dependency's status; ok when the cache can answer (the store is reachable)."""
        checks: list[DependencyStatus] = []
        checks.append(_probe("store", self.store.ping))
        # A deployed embedding or a KV listing costs money and rate limit: frequent health
        # checks (load balancers, uptime monitors) reuse a recent result of those probes.
        checks.append(self._recent_probe("embedder", lambda: self._embed("health check")))
        checks.append(self._recent_probe("stats", self.stats.read))
        if self.llm is None:
            checks.append(
                DependencyStatus(
                    "llm", False, 0.0, "not configured: set OPENAI_BASE_URL", required=False
                )
            )
        else:
            checks.append(DependencyStatus("llm", True, 0.0, f"configured: {self.llm.name}", False))
        ok = all(c.ok for c in checks if c.required)
        return ok, checks

    def _recent_probe(self, name: str, fn: Callable[[], object]) -> DependencyStatus:
        now = time.monotonic()
        cached = self._probes.get(name)
        if cached is not None and now - cached[0] < self.probe_max_age:
            return cached[1]
        status = _probe(name, fn, required=False)
        self._probes[name] = (now, status)
        return status

    def entry(self, tenant: str, entry_id: str) -> Entry | None:
        """One of ``tenant``'s live stored answers, or None (another tenant's entries are
        invisible). Raises StoreError."""
        with _failures_as(StoreError, "store"):
            entry = self.store.get(entry_id)
        if entry is None or tenant_of(entry.namespace) != tenant or entry.expired(self.clock()):
            return None
        return entry

    def forget(self, tenant: str, entry_id: str) -> Entry | None:
        """Remove one of ``tenant``'s stored answers (a wrong one, say): neither tier serves it
        again, here or in any process sharing the store. Returns the removed entry, or None when
        the tenant has no such entry. Raises StoreError."""
        entry = self.entry(tenant, entry_id)
        if entry is None:
            return None
        with _failures_as(StoreError, "store"):
            removed = self.store.delete(entry_id)
        with self._ns_lock:
            state = self._namespaces.get(entry.namespace)
        if state is not None:
            with state.lock:
                state.index.remove(entry_id)
        self._flight.forget()  # a lingering shared answer may be this entry's
        return entry if removed else None

    def clear(self) -> int:
        removed = self.store.clear()
        with self._ns_lock:
            self._namespaces.clear()
        self._flight.forget()
        self.stats.reset()
        return removed

    # ------------------------------------------------------------------ internals
    def _namespace(self, ns: str) -> _Namespace:
        with self._ns_lock:
            state = self._namespaces.get(ns)
            if state is None:
                state = self._namespaces[ns] = _Namespace(VectorIndex(self.embedder.dim))
            return state

    def _sync(self, ns: str, key: str | None) -> SyncResult:
        """One store round trip: exact lookup + incremental index sync.

        The round trip runs outside the namespace lock (concurrent requests do not queue behind
        each other's network calls); its records are applied only if no other request moved the
        cursor meanwhile, otherwise the next request reads them again from the newer cursor.
        """
        state = self._namespace(ns)
        cursor = state.cursor
        with _failures_as(StoreError, "store"):
            result = self.store.sync(ns, key, cursor)
        fresh = None
        if result.reset:  # build the new index before taking the lock
            fresh = VectorIndex(self.embedder.dim, capacity=max(1024, len(result.records)))
            fresh.apply_log(result.records)
        with state.lock:
            if state.cursor == cursor:
                if fresh is not None:
                    state.index = fresh
                else:
                    state.index.apply_log(result.records)
                state.cursor = result.cursor
        return result

    def _semantic_ok(self, query: str) -> bool:
        return len(query) <= self.semantic_max_chars

    def _embed(self, text: str) -> Vector:
        counter = _EMBEDS.get()
        if counter is not None:
            counter[0] += 1
        with _failures_as(EmbedderError, "embedder"):
            vectors = self.embedder.embed([text])
        return np.asarray(vectors[0], dtype=np.float32)

    @staticmethod
    def _guard(query: str, candidate: str, guards: Sequence[Guard]) -> str | None:
        for guard in guards:
            reason = guard(query, candidate)
            if reason is not None:
                return reason
        return None

    def _generate(self, request: ChatRequest) -> Completion:
        if self.llm is None:
            raise UpstreamNotConfigured(_NO_LLM)
        return self.llm.generate(request)

    def _entry(self, request: ChatRequest, ns: str, key: str, completion: Completion) -> Entry:
        now = self.clock()
        ttl = self.ttl_seconds if request.ttl is None else request.ttl
        return Entry(
            id=uuid.uuid4().hex,
            namespace=ns,
            exact_key=key,
            prompt=normalize(request.prompt),
            response=completion.text,
            model=request.model,
            usage=completion.usage,
            created_at=now,
            expires_at=(now + ttl) if ttl else None,
        )

    def _fill(
        self, request: ChatRequest, ns: str, key: str, vector: Vector | None, old: Entry | None
    ) -> tuple[Completion, Entry | None, str | None]:
        lock, token, locked = f"fill:{key}", uuid.uuid4().hex, False
        if request.cache is CacheMode.USE:
            peer, locked = self._lead_or_wait(ns, key, lock, token)
            if peer is not None:
                return Completion(peer.response, peer.model, Usage()), peer, _FROM_PEER
        try:
            completion = self._generate(request)  # an upstream error propagates: nothing stored
            return self._store_completion(request, ns, key, vector, old, completion)
        finally:
            if locked:
                self._unlock(lock, token)

    def _unlock(self, lock: str, token: str) -> None:
        try:
            if self.locks is not None:
                self.locks.unlock(lock, token)
        except Exception as exc:  # it expires by itself
            log.warning("releasing the fill lock failed: %s", exc)

    def _lead_or_wait(self, ns: str, key: str, lock: str, token: str) -> tuple[Entry | None, bool]:
        """Across processes sharing the store (Lambda containers, several servers): the first to
        take the prompt's lock asks the model; the others wait for its entry, bounded by
        ``fill_wait``, then ask the model themselves. Store trouble never blocks an answer.
        Returns (the entry another process stored, or None; whether this process holds the lock).
        """
        if self.locks is None:
            return None, False
        deadline = time.monotonic() + self.fill_wait
        pause, waited = 0.02, False
        while True:
            try:
                locked = self.locks.try_lock(lock, token, self.fill_lock_ttl)
                if locked and not waited:
                    return None, True  # the usual miss: the lookup just found nothing
                # waited, then got the lock: the holder may have stored the answer and left
                exact = self._sync(ns, key).exact
                if exact is not None and not exact.expired(self.clock()):
                    if locked:
                        self.locks.unlock(lock, token)
                    return exact, False
                if locked:
                    return None, True
            except Exception as exc:
                log.warning("fill lock unavailable, asking the model: %s", exc)
                return None, False
            if time.monotonic() >= deadline:
                return None, False
            time.sleep(pause)
            pause, waited = min(pause * 2, 0.5), True

    def _store_completion(
        self,
        request: ChatRequest,
        ns: str,
        key: str,
        vector: Vector | None,
        old: Entry | None,
        completion: Completion,
    ) -> tuple[Completion, Entry | None, str | None]:
        """Store a complete answer; a backend failure answers anyway (entry None, the reason)."""
        try:
            if vector is None and self._semantic_ok(normalize(request.prompt)):
                vector = self._embed(normalize(request.prompt))
            entry = self._entry(request, ns, key, completion)
            self.store.put(entry, vector)
            if old is not None and old.id != entry.id:
                self.store.delete(old.id)
        except BackendError as exc:
            log.warning("storing the answer failed, bypassing: %s", exc)
            return completion, None, f"{exc.code}: {exc.message}"
        except Exception as exc:  # a backend bug: still answer
            log.exception("storing the answer failed")
            return completion, None, f"store_error: {exc}"
        return completion, entry, None

    def _relay(
        self,
        request: ChatRequest,
        started: float,
        ns: str,
        key: str,
        counter: list[int],
        *,
        vector: Vector | None = None,
        old: Entry | None = None,
        lease: Lease[tuple[Completion, Entry | None, str | None]] | None = None,
        store: bool = True,
        reason: str | None = None,
        release: Callable[[], None] | None = None,
    ) -> ChatStream:
        """A primed stream of the model's deltas (tier miss when it will be stored, else bypass).
        ``release`` runs once the stream has ended, however it ended."""
        deltas = self._relay_deltas(
            request, started, ns, key, counter, vector, old, lease, store, reason
        )
        if release is not None:
            deltas = _then(deltas, release)
        stream = ChatStream(
            tier=Tier.MISS if store else Tier.BYPASS,
            model=request.model,
            deltas=deltas,
            bypass_reason=reason,
        )
        stream.prime()
        return stream

    def _relay_deltas(
        self,
        request: ChatRequest,
        started: float,
        ns: str,
        key: str,
        counter: list[int],
        vector: Vector | None,
        old: Entry | None,
        lease: Lease[tuple[Completion, Entry | None, str | None]] | None,
        store: bool,
        reason: str | None,
    ) -> Generator[str, None, ChatResult]:
        parts: list[str] = []
        final: object = None
        upstream: Iterator[str] | None = None
        try:
            upstream = self._upstream_deltas(request)
            while True:
                try:
                    delta = next(upstream)
                except StopIteration as stop:
                    final = stop.value
                    break
                if delta:
                    parts.append(delta)
                    yield delta
        except GeneratorExit:  # cancelled: nothing is stored, waiting requests try again
            if lease is not None:
                lease.abandon()
            raise
        except BaseException as exc:  # broken: nothing is stored, waiting requests get the error
            if lease is not None:
                lease.fail(exc)
            raise
        finally:
            close = getattr(upstream, "close", None)
            if close is not None:
                close()

        done = final if isinstance(final, Completion) else None
        completion = Completion(
            text="".join(parts),
            model=(done.model if done else "") or request.model,
            usage=done.usage if done else Usage(),
            finish_reason=done.finish_reason if done else "stop",
        )
        entry: Entry | None = None
        token = _EMBEDS.set(counter)  # the stream may end in another context than it began
        try:
            if store:
                completion, entry, reason = self._store_completion(
                    request, ns, key, vector, old, completion
                )
            if lease is not None:
                lease.resolve((completion, entry, reason))
            tier = Tier.MISS if entry is not None else Tier.BYPASS
            return self._finish(request, started, completion, tier, entry=entry, reason=reason)
        finally:
            _EMBEDS.reset(token)
            if lease is not None:
                lease.abandon()  # a no-op once resolved; frees the key if storing blew up

    def _upstream_deltas(self, request: ChatRequest) -> Iterator[str]:
        """The model's text deltas. A model that cannot stream answers in one delta."""
        if self.llm is None:
            raise UpstreamNotConfigured(_NO_LLM)
        if isinstance(self.llm, StreamingLLM):
            return self.llm.stream(request)
        return _whole(self.llm.generate(request))

    def _hit(self, request: ChatRequest, started: float, hit: CacheHit) -> ChatResult:
        entry = hit.entry
        latency = (time.perf_counter() - started) * 1000
        result = ChatResult(
            response=entry.response,
            tier=hit.tier,
            model=entry.model,
            usage=Usage(0, 0),
            latency_ms=latency,
            similarity=hit.similarity,
            entry_id=entry.id,
        )
        saved = entry.usage.total_tokens
        self._count(
            request.model,
            {
                "requests": 1,
                "embeddings": _embeds(),
                f"hits.{hit.tier.value}": 1,
                "latency_ms.hit": latency,
                "tokens_saved": saved,
                "cost_saved_usd": saved / 1000 * self.price_per_1k_tokens,
            },
        )
        return result

    def _finish(
        self,
        request: ChatRequest,
        started: float,
        completion: Completion,
        tier: Tier,
        *,
        entry: Entry | None = None,
        reason: str | None = None,
    ) -> ChatResult:
        latency = (time.perf_counter() - started) * 1000
        self._count(
            request.model,
            {
                "requests": 1,
                "embeddings": _embeds(),
                "misses" if tier is Tier.MISS else "bypasses": 1,
                "latency_ms.miss": latency,
                "tokens_used": completion.usage.total_tokens,
            },
        )
        return ChatResult(
            response=completion.text,
            tier=tier,
            model=completion.model or request.model,
            usage=completion.usage,
            latency_ms=latency,
            similarity=None,
            entry_id=entry.id if entry else None,
            bypass_reason=reason,
            finish_reason=completion.finish_reason,
        )

    def _count(self, model: str, counters: Mapping[str, float]) -> None:
        merged = dict(counters)
        merged.update({f"m|{model}|{k}": v for k, v in counters.items()})
        try:
            self.stats.add(merged)
        except Exception as exc:  # stats never break an answer
            log.warning(
                "stats update failed: %s", exc if isinstance(exc, StatsError) else repr(exc)
            )


@contextlib.contextmanager
def _failures_as(error: type[BackendError], what: str) -> Iterator[None]:
    """A backend's failure surfaces as its BackendError: a backend bug, or an exception the
    adapter did not wrap, must not escape as anything else."""
    try:
        yield
    except error:
        raise
    except Exception as exc:
        raise error(f"{what} failed: {exc}") from exc


def _then(
    deltas: Generator[str, None, ChatResult], after: Callable[[], None]
) -> Generator[str, None, ChatResult]:
    """``deltas``, then ``after()`` once they have ended: completed, broken or closed."""
    try:
        return (yield from deltas)
    finally:
        after()


def _embeds() -> int:
    counter = _EMBEDS.get()
    return counter[0] if counter is not None else 0


def _whole(completion: Completion) -> Generator[str, None, Completion]:
    yield completion.text
    return completion


def _probe(name: str, fn: Callable[[], object], required: bool = True) -> DependencyStatus:
    started = time.perf_counter()
    try:
        fn()
    except Exception as exc:
        return DependencyStatus(
            name, False, (time.perf_counter() - started) * 1000, str(exc), required
        )
    return DependencyStatus(name, True, (time.perf_counter() - started) * 1000, "ok", required)


def _summarize(counters: Mapping[str, float], prefix: str) -> dict[str, Any]:
    def get(name: str) -> float:
        return float(counters.get(prefix + name, 0.0))

    exact, semantic = get("hits.exact"), get("hits.semantic")
    hits = exact + semantic
    misses, bypasses = get("misses"), get("bypasses")
    requests = hits + misses + bypasses
    upstream = misses + bypasses
    return {
        "requests": int(requests),
        "hits": {"exact": int(exact), "semantic": int(semantic), "total": int(hits)},
        "misses": int(misses),
        "bypasses": int(bypasses),
        "hit_rate": round(hits / requests, 4) if requests else 0.0,
        "mean_latency_ms": {
            "hit": round(get("latency_ms.hit") / hits, 3) if hits else None,
            "miss": round(get("latency_ms.miss") / upstream, 3) if upstream else None,
        },
        "embeddings": int(get("embeddings")),
        "tokens_saved": int(get("tokens_saved")),
        "tokens_used": int(get("tokens_used")),
        "cost_saved_usd": round(get("cost_saved_usd"), 6),
    }
