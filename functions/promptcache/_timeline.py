"""The counters' shapes over time and in distributions: time buckets, fixed-bucket histograms,
per-entry hit counts. Pure: names in, names and numbers out (``_accounting`` writes and reads).

- Time buckets: each request adds its ``SERIES`` counters to the minute and the hour it ended in,
  ``s|m|{minute start}|{name}`` and ``s|h|{hour start}|{name}`` (Unix seconds). Minutes older than
  ``MINUTES_KEPT`` and hours older than ``HOURS_KEPT`` are stale: ``stale`` names them, and the
  accounting drops them, so storage stays bounded.
- Histograms: ``hist.{phase}.{le}``, one counter per fixed bucket (``LATENCY_BOUNDS_MS``, then
  ``inf``): a request adds 1 to the first bucket its duration fits. Counts per bucket add up
  across processes and backends, so merging is summing. ``latency_ms.{phase}`` holds the sum.
- Entries: ``e|{entry id}`` counts an entry's hits; ``top`` ranks them, ``stale`` keeps the
  ``ENTRIES_KEPT`` most hit ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

MINUTE, HOUR = 60, 3600
MINUTES_KEPT = 24 * 60  # per minute for the last day
HOURS_KEPT = 30 * 24  # per hour for the last month
ENTRIES_KEPT = 50  # per-entry hit counters kept per tenant
SERIES_PREFIX = "s|"
ENTRY_PREFIX = "e|"

#: The counters kept per time bucket.
SERIES = (
    "requests",
    "hits.exact",
    "hits.semantic",
    "misses",
    "bypasses",
    "latency_ms.hit",
    "latency_ms.miss",
    "tokens_saved",
)

#: Upper bounds of the latency histograms' buckets, in milliseconds (then +Inf).
LATENCY_BOUNDS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
#: Upper bounds of the token histograms (OpenTelemetry's advice for gen_ai.client.token.usage).
TOKEN_BOUNDS = tuple(4**i for i in range(14))
#: Phases with a latency histogram: a hit's or a miss's whole answer, and their parts.
PHASES = ("hit", "miss", "lookup", "embed", "verify", "model")


def _le(bound: float) -> str:
    return "inf" if math.isinf(bound) else f"{bound:g}"


def observe(name: str, value: float, bounds: tuple[float, ...]) -> str:
    """The counter of the histogram ``name``'s bucket that ``value`` falls in."""
    for bound in bounds:
        if value <= bound:
            return f"hist.{name}.{_le(bound)}"
    return f"hist.{name}.inf"


def histogram(
    counters: Mapping[str, float], name: str, bounds: tuple[float, ...], prefix: str = ""
) -> dict[str, Any]:
    """The histogram ``name``: each bucket's own count (not cumulative), the count, the sum."""
    edges = (*bounds, math.inf)
    counts = [int(counters.get(f"{prefix}hist.{name}.{_le(b)}", 0)) for b in edges]
    return {
        "le": [*bounds, "+Inf"],
        "counts": counts,
        "count": sum(counts),
        "sum": round(float(counters.get(f"{prefix}{_sum_name(name)}", 0.0)), 3),
    }


def _sum_name(name: str) -> str:
    return f"tokens.{name}" if name in ("input", "output") else f"latency_ms.{name}"


def buckets(counters: Mapping[str, float], now: float) -> dict[str, float]:
    """``counters``' series names (those in SERIES) in the minute and the hour of ``now``."""
    minute, hour = int(now // MINUTE * MINUTE), int(now // HOUR * HOUR)
    out: dict[str, float] = {}
    for name in SERIES:
        value = counters.get(name)
        if value:
            out[f"{SERIES_PREFIX}m|{minute}|{name}"] = value
            out[f"{SERIES_PREFIX}h|{hour}|{name}"] = value
    return out


def _bucket(name: str) -> tuple[str, int, str] | None:
    """(``m`` or ``h``, start, counter) of a series name, else None."""
    if not name.startswith(SERIES_PREFIX):
        return None
    parts = name[len(SERIES_PREFIX) :].split("|", 2)
    if len(parts) != 3 or parts[0] not in ("m", "h") or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def stale(names: Iterable[str], now: float) -> list[str]:
    """Of ``names`` (one scope's, prefix taken off), the buckets past their window."""
    oldest = {"m": now - MINUTES_KEPT * MINUTE, "h": now - HOURS_KEPT * HOUR}
    out = []
    for name in names:
        bucket = _bucket(name)
        if bucket is not None and bucket[1] < oldest[bucket[0]]:
            out.append(name)
    return out


def extra_entries(counters: Mapping[str, float]) -> list[str]:
    """The entry counters of one scope beyond its ``ENTRIES_KEPT`` most hit."""
    ranked = sorted(
        (k for k in counters if k.startswith(ENTRY_PREFIX)),
        key=lambda k: (-counters[k], k),
    )
    return ranked[ENTRIES_KEPT:]


def top(counters: Mapping[str, float], n: int) -> list[tuple[str, int]]:
    """The ``n`` most hit entries of one scope: (entry id, hits), most hits first."""
    ranked = sorted(
        (
            (k[len(ENTRY_PREFIX) :], int(v))
            for k, v in counters.items()
            if k.startswith(ENTRY_PREFIX)
        ),
        key=lambda item: (-item[1], item[0]),
    )
    return [item for item in ranked if item[1] > 0][:n]


def series(counters: Mapping[str, float], since: float, now: float) -> dict[str, Any]:
    """The buckets of one scope from ``since`` on: per minute when ``since`` is within the last
    day, else per hour. Only buckets with requests are listed, oldest first."""
    kind, step = ("m", MINUTE) if since >= now - MINUTES_KEPT * MINUTE else ("h", HOUR)
    start = since // step * step
    points: dict[int, dict[str, float]] = {}
    for name, value in counters.items():
        bucket = _bucket(name)
        if bucket is not None and bucket[0] == kind and bucket[1] >= start:
            points.setdefault(bucket[1], {})[bucket[2]] = value
    return {
        "step_s": step,
        "since": int(start),
        "points": [_point(t, points[t]) for t in sorted(points)],
    }


def _point(at: int, c: Mapping[str, float]) -> dict[str, Any]:
    exact, semantic = int(c.get("hits.exact", 0)), int(c.get("hits.semantic", 0))
    misses, bypasses = int(c.get("misses", 0)), int(c.get("bypasses", 0))
    requests = exact + semantic + misses + bypasses
    hits, upstream = exact + semantic, misses + bypasses
    return {
        "t": at,
        "requests": requests,
        "hits": {"exact": exact, "semantic": semantic, "total": hits},
        "misses": misses,
        "bypasses": bypasses,
        "hit_rate": round(hits / requests, 4) if requests else 0.0,
        "mean_latency_ms": {
            "hit": round(c.get("latency_ms.hit", 0.0) / hits, 3) if hits else None,
            "miss": round(c.get("latency_ms.miss", 0.0) / upstream, 3) if upstream else None,
        },
        "tokens_saved": int(c.get("tokens_saved", 0)),
    }
