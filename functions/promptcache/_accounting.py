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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ._boundary import GuardedStats
from ._errors import StatsError
from ._types import CacheHit, ChatRequest, ChatResult, Completion, Entry, Tier, Usage
from ._verify import Verdicts

log = logging.getLogger("promptcache")

_MODEL = "m|"  # prefix of the per-model copy of each counter: m|{model}|{name}
_TENANT = "t|"  # prefix of the per-tenant copies: t|{escaped tenant}|{name}, t|...|m|{model}|...


@dataclass
class Tally:
    """One request's running account: when it started, how many embeddings it has made, what
    the verifier model judged."""

    started: float = field(default_factory=time.perf_counter)
    embeddings: int = 0
    verdicts: Verdicts = field(default_factory=Verdicts)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


class Accounting:
    """Closes each request's books: its ChatResult (latency from its tally), counted into
    ``stats``. Reads the report and the models back."""

    def __init__(self, stats: GuardedStats, price_per_1k_tokens: float) -> None:
        self.stats = stats
        self.price_per_1k_tokens = price_per_1k_tokens

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
        )
        return ChatResult(
            response=entry.response,
            tier=hit.tier,
            model=entry.model,
            usage=Usage(0, 0),
            latency_ms=latency,
            similarity=hit.similarity,
            entry_id=entry.id,
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
        self._add(
            request,
            {
                "requests": 1,
                "embeddings": tally.embeddings,
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
            entry_id=entry.id if entry is not None else None,
            bypass_reason=reason,
            finish_reason=completion.finish_reason,
        )

    def report(
        self, extra: Mapping[str, Any], tenants: Collection[str] | None = None
    ) -> dict[str, Any]:
        """The overall summary, then ``extra`` (entries, threshold, embedder), then one summary
        per model; with ``tenants`` (the configured ones), ``tenants``: one report per tenant
        configured or counted. Raises StatsError."""
        overall, per_tenant = _split(self.stats.read())
        body = _report(overall, extra)
        if tenants is not None:
            names = sorted(set(tenants) | set(per_tenant))
            body["tenants"] = {t: _report(per_tenant.get(t, {}), {}) for t in names}
        return body

    def tenant_report(
        self, tenant: str, known: Collection[str], extra: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """``tenant``'s own summary (``tenant``: its name, then ``extra``, then its models), or
        None when it is neither in ``known`` nor counted. Raises StatsError."""
        counters = _split(self.stats.read())[1].get(tenant)
        if counters is None and tenant not in known:
            return None
        return _report(counters or {}, {"tenant": tenant, **extra})

    def models(self, tenant: str | None = None) -> list[str]:
        """The models counted so far (only ``tenant``'s when given); empty when the stats cannot
        be read."""
        try:
            overall, per_tenant = _split(self.stats.read())
        except StatsError as exc:
            log.warning("reading stats failed: %s", exc)
            return []
        return _models(overall if tenant is None else per_tenant.get(tenant, {}))

    def reset(self) -> None:
        """Raises StatsError."""
        self.stats.reset()

    def _add(self, request: ChatRequest, counters: Mapping[str, float]) -> None:
        model = f"{_MODEL}{request.model}|"
        tenant = tenant_prefix(request.tenant)
        merged = dict(counters)
        for prefix in (model, tenant, tenant + model):
            merged.update({prefix + k: v for k, v in counters.items()})
        try:
            self.stats.add(merged)
        except StatsError as exc:  # stats never break an answer
            log.warning("stats update failed: %s", exc)


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


def _report(counters: Mapping[str, float], extra: Mapping[str, Any]) -> dict[str, Any]:
    body = _summarize(counters, "")
    body.update(extra)
    body["models"] = {m: _summarize(counters, f"{_MODEL}{m}|") for m in _models(counters)}
    return body


def _models(counters: Mapping[str, float]) -> list[str]:
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
