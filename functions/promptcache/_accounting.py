"""Accounting: each answer's result and what it adds to the counters; the report read back.

The only owner of the counters' names: nothing else writes or parses them. Each answer is
counted four times: overall (``hits.exact``, ``latency_ms.miss``, ...), per model
(``m|{model}|{name}``), per tenant (``t|{tenant}|{name}``) and per tenant and model
(``t|{tenant}|m|{model}|{name}``). A tenant may hold any character: in a key it is written with
``%`` and ``|`` percent-escaped, so its segment never holds a ``|``; a model's name may hold
``|`` (the counter's own name, the last segment, never does). Each request carries its own ``Tally``
explicitly, from the lookup to the counting; a streamed miss is counted when its stream ends,
possibly after ``chat_stream`` returned and in another thread, so the tally travels with it.
Counting never breaks an answer: a stats failure is logged and the answer goes out.

A report stays small however many models and tenants were counted: it lists the ``LISTED`` with
the most requests by name, and sums the rest into ``other_models`` (``other_tenants``), which
also says how many there are.

Overall and per tenant only (not per model): the time buckets, the latency and token histograms,
the guards' rejections (``rejected.{guard}``) and, per tenant, each entry's hits (``_timeline``
names them). Once an hour per process (and on every report) stale buckets and the entry
counters beyond the most hit are dropped, so storage stays bounded. The bypasses by reason
(``bypassed.{label}``, ``bypass_label``) and the requests by kind (``kind.{text|tools|structured}``,
``ChatRequest.kind``) are counted as the requests are: overall, per model and per tenant.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from ._boundary import GuardedStats, GuardedStore
from ._errors import StatsError, StoreError
from ._keys import tenant_of
from ._tally import Tally
from ._timeline import (
    ENTRY_PREFIX,
    HOUR,
    LATENCY_BOUNDS_MS,
    PHASES,
    TOKEN_BOUNDS,
    buckets,
    extra_entries,
    histogram,
    observe,
    series,
    stale,
    top,
)
from ._types import CacheHit, ChatRequest, ChatResult, Completion, Entry, Tier, Usage

log = logging.getLogger("promptcache")

_MODEL = "m|"  # prefix of the per-model copy of each counter: m|{model}|{name}
_TENANT = "t|"  # prefix of the per-tenant copies: t|{escaped tenant}|{name}, t|...|m|{model}|...
#: Models (tenants) a report names; the others are summed together.
LISTED = 100


TOP_ENTRIES = 10  # entries listed in a report's top_entries


def bypass_label(reason: str | None) -> str:
    """A bypass reason as a label: a request's (``BYPASS_REASONS``), ``cache=skip``, or a
    backend failure's error code (``store_error: ...`` -> ``store_error``): a closed set."""
    return (reason or "unknown").split(":", 1)[0].strip() or "unknown"


class Accounting:
    """Closes each request's books: its ChatResult (latency from its tally), counted into
    ``stats``. Reads the report and the models back."""

    def __init__(
        self,
        stats: GuardedStats,
        price_per_1k_tokens: float,
        clock: Callable[[], float] = time.time,
        store: GuardedStore | None = None,
    ) -> None:
        self.stats = stats
        self.price_per_1k_tokens = price_per_1k_tokens
        self.clock = clock
        self.store = store  # where the top entries' prompts are read
        self._lock = threading.Lock()
        self._pruned_hour = int(clock() // HOUR)

    def hit(self, request: ChatRequest, hit: CacheHit, tally: Tally) -> ChatResult:
        """A stored answer goes out (tier exact or semantic) for ``request``."""
        entry, latency = hit.entry, tally.elapsed_ms()
        saved = entry.usage.total_tokens
        self._add(
            request,
            {
                "requests": 1,
                "embeddings": tally.embeddings,
                f"hits.{hit.tier.value}": 1,
                "latency_ms.hit": latency,
                "tokens_saved": saved,
                "cost_saved_usd": saved / 1000 * self.price_per_1k_tokens,
            },
            tally,
            "hit",
            {f"{ENTRY_PREFIX}{entry.id}": 1},
        )
        return ChatResult(
            response=entry.response,
            tier=hit.tier,
            model=entry.model,
            usage=Usage(0, 0),
            latency_ms=latency,
            similarity=hit.similarity,
            entry_id=entry.id,
            timings=tally.timings(),
            saved_tokens=saved,
            finish_reason=entry.finish_reason,
            tool_calls=entry.tool_calls,
            thinking=entry.thinking,
            stop_sequence=entry.stop_sequence,
        )

    def answered(
        self,
        request: ChatRequest,
        completion: Completion,
        tally: Tally,
        *,
        entry: Entry | None = None,
        reason: str | None = None,
    ) -> ChatResult:
        """The model's answer goes out: tier miss when ``entry`` stores it, else bypass (and
        ``reason`` says why)."""
        tier = Tier.MISS if entry is not None else Tier.BYPASS
        latency = tally.elapsed_ms()
        counters = {
            "requests": 1,
            "embeddings": tally.embeddings,
            "misses" if tier is Tier.MISS else "bypasses": 1,
            "latency_ms.miss": latency,
            "tokens_used": completion.usage.total_tokens,
        }
        if tier is Tier.BYPASS:
            counters[f"bypassed.{bypass_label(reason)}"] = 1
        self._add(
            request,
            counters,
            tally,
            "miss",
            {},
            completion.usage,
        )
        return ChatResult(
            response=completion.text,
            tier=tier,
            model=completion.model or request.model,
            usage=completion.usage,
            latency_ms=latency,
            entry_id=entry.id if entry is not None else None,
            bypass_reason=reason,
            finish_reason=completion.finish_reason,
            timings=tally.timings(),
            tool_calls=completion.tool_calls,
            alternatives=completion.alternatives,
            thinking=completion.thinking,
            stop_sequence=completion.stop_sequence,
        )

    def report(
        self,
        extra: Mapping[str, Any],
        tenants: Collection[str] | None = None,
        since: float | None = None,
    ) -> dict[str, Any]:
        """The overall summary, then ``extra`` (entries, threshold, embedder), then one summary
        per model; with ``tenants`` (the configured ones), ``tenants``: one report per tenant
        configured or counted. Each has its rejections and top entries; the overall one also its
        time series from ``since`` (default: the last hour) and histograms. Raises StatsError."""
        now = self.clock()
        overall, per_tenant = self._read(now)
        body = self._scope(overall, extra, since, now)
        body["top_entries"] = self._top(per_tenant, list(per_tenant), now)
        if tenants is not None:
            names = sorted(set(tenants) | set(per_tenant))
            reports = {t: self._tenant(t, per_tenant.get(t, {}), {}, since, now) for t in names}
            listed = set(sorted(names, key=lambda t: -reports[t]["requests"])[:LISTED])
            # the overview stays small: a tenant's series and histograms come with ?tenant=
            body["tenants"] = {t: _brief(reports[t]) for t in names if t in listed}
            others = [per_tenant.get(t, {}) for t in names if t not in listed]
            if others:
                body["other_tenants"] = {"tenants": len(others), **_summarize(_sum(others), "")}
        return body

    def tenant_report(
        self,
        tenant: str,
        known: Collection[str],
        extra: Mapping[str, Any],
        since: float | None = None,
    ) -> dict[str, Any] | None:
        """``tenant``'s own report (``tenant``: its name, then ``extra``, then its models), or
        None when it is neither in ``known`` nor counted. Raises StatsError."""
        now = self.clock()
        counters = self._read(now)[1].get(tenant)
        if counters is None and tenant not in known:
            return None
        return self._tenant(tenant, counters or {}, {"tenant": tenant, **extra}, since, now)

    def entries(self) -> int | None:
        """The store's entry count, None when it cannot tell."""
        if self.store is None:
            return None
        try:
            return self.store.count()
        except StoreError as exc:
            log.warning("counting entries failed: %s", exc)
            return None

    def counters(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """The overall counters and each tenant's (stale ones dropped first). Raises
        StatsError."""
        return self._read(self.clock())

    def _tenant(
        self,
        tenant: str,
        counters: Mapping[str, float],
        extra: Mapping[str, Any],
        since: float | None,
        now: float,
    ) -> dict[str, Any]:
        body = self._scope(counters, extra, since, now)
        body["top_entries"] = self._top({tenant: counters}, [tenant], now)
        return body

    def _scope(
        self,
        counters: Mapping[str, float],
        extra: Mapping[str, Any],
        since: float | None,
        now: float,
    ) -> dict[str, Any]:
        body = _report(counters, extra)
        body["rejections"] = {
            k[len("rejected.") :]: int(v)
            for k, v in sorted(counters.items())
            if k[:9] == "rejected."
        }
        body["bypass_reasons"] = {
            k[len("bypassed.") :]: int(v)
            for k, v in sorted(counters.items())
            if k[:9] == "bypassed."
        }
        body["kinds"] = {k[5:]: int(v) for k, v in sorted(counters.items()) if k[:5] == "kind."}
        body["latency_ms"] = {p: histogram(counters, p, LATENCY_BOUNDS_MS) for p in PHASES}
        body["series"] = series(counters, now - HOUR if since is None else since, now)
        return body

    def _top(
        self, per_tenant: Mapping[str, Mapping[str, float]], tenants: Sequence[str], now: float
    ) -> list[dict[str, Any]]:
        """The most hit entries of ``tenants``: id, tenant, hits, and (when the store has it
        still) prompt, model, created_at and age_s."""
        ranked = sorted(
            (
                (hits, entry_id, t)
                for t in tenants
                for entry_id, hits in top(per_tenant[t], TOP_ENTRIES)
            ),
            key=lambda x: (-x[0], x[1]),
        )[:TOP_ENTRIES]
        out = []
        for hits, entry_id, t in ranked:
            item: dict[str, Any] = {"id": entry_id, "tenant": t, "hits": hits}
            entry = self._entry(t, entry_id, now)
            if entry is not None:
                item.update(
                    prompt=entry.prompt,
                    model=entry.model,
                    created_at=entry.created_at,
                    age_s=round(max(0.0, now - entry.created_at), 3),
                )
            out.append(item)
        return out

    def _entry(self, tenant: str, entry_id: str, now: float) -> Entry | None:
        if self.store is None:
            return None
        try:
            return live_entry(self.store, tenant, entry_id, now)
        except StoreError as exc:
            log.warning("reading a top entry failed: %s", exc)
            return None

    def models(self, tenant: str | None = None) -> list[str]:
        """The models counted so far (only ``tenant``'s when given); empty when the stats cannot
        be read."""
        try:
            overall, per_tenant = _split(self.stats.read())
        except StatsError as exc:
            log.warning("reading stats failed: %s", exc)
            return []
        return models_in(overall if tenant is None else per_tenant.get(tenant, {}))

    def reset(self) -> None:
        """Raises StatsError."""
        self.stats.reset()

    def _add(
        self,
        request: ChatRequest,
        counters: Mapping[str, float],
        tally: Tally,
        kind: str,
        per_tenant: Mapping[str, float],
        usage: Usage | None = None,
    ) -> None:
        """``counters`` four times (overall, model, tenant, tenant and model); ``kind``'s
        (``hit`` or ``miss``) and the phases' histograms, the rejections, the time buckets and
        ``usage``'s token histograms overall and per tenant; ``per_tenant`` for the tenant only."""
        now = self.clock()
        counters = {**counters, f"kind.{request.kind}": 1}
        model = f"{_MODEL}{request.model}|"
        tenant = tenant_prefix(request.tenant)
        scoped = {**buckets(counters, now), **_shapes(counters, tally, kind, usage)}
        merged = {**counters, **scoped}
        for prefix in (model, tenant + model):
            merged.update({prefix + k: v for k, v in counters.items()})
        merged.update({tenant + k: v for k, v in counters.items()})
        merged.update({tenant + k: v for k, v in scoped.items()})
        merged.update({tenant + k: v for k, v in per_tenant.items()})
        try:
            self.stats.add(merged)
        except StatsError as exc:  # stats never break an answer
            log.warning("stats update failed: %s", exc)
            return
        hour = int(now // HOUR)
        with self._lock:
            due, self._pruned_hour = hour != self._pruned_hour, hour
        if due:
            try:
                self._read(now)
            except StatsError as exc:
                log.warning("dropping stale counters failed: %s", exc)

    def _read(self, now: float) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """The counters split, after dropping stale buckets and the least hit entry counters."""
        counters = self.stats.read()
        overall, per_tenant = _split(counters)
        drop = stale(overall, now)
        for t, mine in per_tenant.items():
            prefix = tenant_prefix(t)
            drop += [prefix + k for k in stale(mine, now) + extra_entries(mine)]
        if drop:
            self.stats.drop(drop)
            for name in drop:
                counters.pop(name, None)
            overall, per_tenant = _split(counters)
        return overall, per_tenant


def live_entry(store: GuardedStore, tenant: str, entry_id: str, now: float) -> Entry | None:
    """One of ``tenant``'s live stored answers, or None (another tenant's entries are
    invisible). Raises StoreError."""
    entry = store.get(entry_id)
    if entry is None or tenant_of(entry.namespace) != tenant or entry.expired(now):
        return None
    return entry


def _shapes(
    counters: Mapping[str, float], tally: Tally, kind: str, usage: Usage | None
) -> dict[str, float]:
    """The histograms' and rejections' counters of one answer."""
    out: dict[str, float] = {}
    for name in tally.rejected:
        out[f"rejected.{name}"] = out.get(f"rejected.{name}", 0.0) + 1
    timings = {kind: float(counters[f"latency_ms.{kind}"]), **tally.timings()}
    for phase, ms in timings.items():
        out[observe(phase, ms, LATENCY_BOUNDS_MS)] = 1
        if phase != kind:
            out[f"latency_ms.{phase}"] = ms
    if usage is not None and usage.total_tokens:
        for name, tokens in (("input", usage.prompt_tokens), ("output", usage.completion_tokens)):
            out[observe(name, tokens, TOKEN_BOUNDS)] = 1
            out[f"tokens.{name}"] = tokens
    return out


def tenant_prefix(tenant: str) -> str:
    """The prefix of ``tenant``'s counters: ``t|`` and the tenant with ``%`` and ``|`` escaped."""
    return f"{_TENANT}{tenant.replace('%', '%25').replace('|', '%7C')}|"


def _split(
    counters: Mapping[str, float],
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The overall counters, and each tenant's own (its prefix taken off)."""
    overall: dict[str, float] = {}
    per_tenant: dict[str, dict[str, float]] = {}
    for name, value in counters.items():
        if not name.startswith(_TENANT):
            overall[name] = value
            continue
        escaped, sep, rest = name[len(_TENANT) :].partition("|")
        if sep:  # every % in a tenant is escaped, so unquote undoes exactly the escaping
            per_tenant.setdefault(unquote(escaped), {})[rest] = value
    return overall, per_tenant


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("series", "latency_ms")}


def _report(counters: Mapping[str, float], extra: Mapping[str, Any]) -> dict[str, Any]:
    body = _summarize(counters, "")
    body.update(extra)
    per_model = _per_model(counters)
    models = {m: _summarize(per_model[m], "") for m in sorted(per_model)}
    listed = set(sorted(models, key=lambda m: -models[m]["requests"])[:LISTED])
    body["models"] = {m: summary for m, summary in models.items() if m in listed}
    others = [per_model[m] for m in models if m not in listed]
    if others:
        body["other_models"] = {"models": len(others), **_summarize(_sum(others), "")}
    return body


def _per_model(counters: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Each model's counters, by counter name (one pass over the counters)."""
    per_model: dict[str, dict[str, float]] = {}
    for key, value in counters.items():
        if key.startswith(_MODEL):
            model, _, name = key[len(_MODEL) :].rpartition("|")
            per_model.setdefault(model, {})[name] = value
    return per_model


def _sum(parts: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for part in parts:
        for name, value in part.items():
            total[name] = total.get(name, 0.0) + value
    return total


def models_in(counters: Mapping[str, float]) -> list[str]:
    return sorted({k[len(_MODEL) :].rsplit("|", 1)[0] for k in counters if k.startswith(_MODEL)})


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
