"""The counters in the Prometheus text exposition format (version 0.0.4), for ``GET /metrics``.

Names follow OpenTelemetry's where it has them (the GenAI client metrics
``gen_ai.client.token.usage`` and ``gen_ai.client.operation.duration``) and the cache's own
otherwise (``promptcache.cache.requests``, ``promptcache.cache.lookup.duration``, ...), converted
the way OpenTelemetry's Prometheus exporters do: dots become underscores, the unit is appended
(``s`` -> ``_seconds``; annotations like ``{token}`` add nothing), counters end in ``_total``.
Every series carries its ``tenant``; the overall numbers are their sums.

Written here rather than with ``prometheus_client``: the format is a few lines of text, and the
Lambda layer's dependencies stay lean (the tests parse the output with ``prometheus_client``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

from .._accounting import models_in
from .._timeline import LATENCY_BOUNDS_MS, TOKEN_BOUNDS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MODEL = "m|"
_TIERS = (("exact", "hits.exact"), ("semantic", "hits.semantic"), ("miss", "misses"))

#: Histograms: (Prometheus name, help, counter family, phase or token type label, to seconds).
_DURATIONS = (
    (
        "gen_ai_client_operation_duration_seconds",
        "GenAI operation duration: the model's part of a miss (OpenTelemetry "
        "gen_ai.client.operation.duration).",
        "model",
    ),
    (
        "promptcache_cache_lookup_duration_seconds",
        "Cache lookup: store round trips and index search, without embedding and guards.",
        "lookup",
    ),
    ("promptcache_embedding_duration_seconds", "Embedding the prompt.", "embed"),
    ("promptcache_cache_verify_duration_seconds", "The guards and the verifier.", "verify"),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Family:
    def __init__(self, name: str, kind: str, help_: str) -> None:
        self.lines = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        self.name = name

    def sample(self, labels: Mapping[str, str], value: float, suffix: str = "") -> None:
        self.lines.append(f"{self.name}{suffix}{_labels(labels)} {_number(value)}")

    def histogram(
        self,
        labels: Mapping[str, str],
        counters: Mapping[str, float],
        counter: str,
        bounds: tuple[float, ...],
        scale: float,
        total: str,
    ) -> None:
        """Cumulative buckets from the per-bucket counters ``hist.{counter}.{le}``."""
        running = 0.0
        for bound in (*bounds, math.inf):
            le = "inf" if math.isinf(bound) else f"{bound:g}"
            running += counters.get(f"hist.{counter}.{le}", 0.0)
            shown = "+Inf" if math.isinf(bound) else _number(bound * scale)
            self.sample({**labels, "le": shown}, running, "_bucket")
        self.sample(labels, counters.get(total, 0.0) * scale, "_sum")
        self.sample(labels, running, "_count")


def render(per_tenant: Mapping[str, Mapping[str, float]], entries: int | None) -> str:
    """The exposition of every tenant's counters (``per_tenant``: each tenant's own, prefix
    taken off); ``entries``: the store's entry count, when the caller may see it."""
    return "".join(line + "\n" for line in _lines(per_tenant, entries))


def _by_label(
    name: str,
    help_: str,
    tenants: Sequence[str],
    per_tenant: Mapping[str, Mapping[str, float]],
    prefix: str,
    label: str,
) -> Iterator[str]:
    """A counter family of the counters named ``prefix + value``, labelled ``label=value``."""
    family = _Family(name, "counter", help_)
    for t in tenants:
        for key, value in sorted(per_tenant[t].items()):
            if key.startswith(prefix):
                family.sample({"tenant": t, label: key[len(prefix) :]}, value)
    yield from family.lines


def _lines(per_tenant: Mapping[str, Mapping[str, float]], entries: int | None) -> Iterator[str]:
    tenants = sorted(per_tenant)
    requests = _Family(
        "promptcache_cache_requests_total",
        "counter",
        "Chat requests answered, by tier (exact, semantic, miss, bypass) and model.",
    )
    for t in tenants:
        counters = per_tenant[t]
        for model in models_in(counters):
            prefix = f"{_MODEL}{model}|"
            for tier, name in (*_TIERS, ("bypass", "bypasses")):
                labels = {"tenant": t, "model": model, "tier": tier}
                requests.sample(labels, counters.get(prefix + name, 0.0))
    yield from requests.lines

    for name, help_, counter in (
        ("promptcache_cache_tokens_saved_total", "Tokens a hit did not spend.", "tokens_saved"),
        ("promptcache_cache_tokens_used_total", "Tokens the model spent.", "tokens_used"),
        (
            "promptcache_cache_cost_saved_usd_total",
            "Money the hits saved, at the configured price per 1k tokens.",
            "cost_saved_usd",
        ),
        ("promptcache_embedding_requests_total", "Embeddings made.", "embeddings"),
    ):
        family = _Family(name, "counter", help_)
        for t in tenants:
            family.sample({"tenant": t}, per_tenant[t].get(counter, 0.0))
        yield from family.lines

    yield from _by_label(
        "promptcache_cache_rejections_total",
        "Candidates at or above the threshold rejected, by guard (false hits avoided).",
        tenants, per_tenant, "rejected.", "guard",
    )  # fmt: skip
    yield from _by_label(
        "promptcache_cache_bypasses_total",
        "Answers forwarded and not stored, by reason (logprobs, audio, n, oversize, cache=skip, "
        "a backend's error code).",
        tenants, per_tenant, "bypassed.", "reason",
    )  # fmt: skip

    kinds = _Family(
        "promptcache_cache_requests_by_kind_total",
        "counter",
        "Chat requests answered, by kind: text, tools (tools offered), structured (JSON format).",
    )
    for t in tenants:
        for kind in ("text", "tools", "structured"):
            kinds.sample({"tenant": t, "kind": kind}, per_tenant[t].get(f"kind.{kind}", 0.0))
    yield from kinds.lines

    ms = 1 / 1000
    answers = _Family(
        "promptcache_cache_request_duration_seconds",
        "histogram",
        "Whole answers: hits (result=hit) and model answers (result=miss, bypasses included).",
    )
    for t in tenants:
        for result in ("hit", "miss"):
            labels = {"tenant": t, "result": result}
            counters = per_tenant[t]
            answers.histogram(
                labels, counters, result, LATENCY_BOUNDS_MS, ms, f"latency_ms.{result}"
            )
    yield from answers.lines

    for name, help_, phase in _DURATIONS:
        family = _Family(name, "histogram", help_)
        for t in tenants:
            labels = {"tenant": t}
            if phase == "model":
                labels = {"gen_ai_operation_name": "chat", **labels}
            family.histogram(
                labels, per_tenant[t], phase, LATENCY_BOUNDS_MS, ms, f"latency_ms.{phase}"
            )
        yield from family.lines

    tokens = _Family(
        "gen_ai_client_token_usage",
        "histogram",
        "Tokens per model call, by type (OpenTelemetry gen_ai.client.token.usage).",
    )
    for t in tenants:
        for kind in ("input", "output"):
            labels = {"gen_ai_operation_name": "chat", "gen_ai_token_type": kind, "tenant": t}
            tokens.histogram(labels, per_tenant[t], kind, TOKEN_BOUNDS, 1, f"tokens.{kind}")
    yield from tokens.lines

    if entries is not None:
        gauge = _Family("promptcache_cache_entries", "gauge", "Entries in the store.")
        gauge.sample({}, entries)
        yield from gauge.lines
