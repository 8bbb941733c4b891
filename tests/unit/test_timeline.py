"""Stats over time and in distributions: time buckets (bounded), latency and token histograms,
rejections by guard, the most hit entries, ``?since=``; on every stats backend."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from promptcache import PromptCache
from promptcache._protocols import Stats
from promptcache._timeline import (
    ENTRIES_KEPT,
    HOUR,
    HOURS_KEPT,
    LATENCY_BOUNDS_MS,
    MINUTE,
    MINUTES_KEPT,
    histogram,
    observe,
    series,
    stale,
)
from promptcache._types import ChatRequest, Message
from promptcache.adapters.cloudflare_kv import KVStats
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.adapters.sqlite import SQLiteStats, SQLiteStore
from tests.support.kv_standin import KVStandIn
from tests.unit.fakes import FakeEmbedder, FakeLLM, blend, unit

BASE = "https://api.cloudflare.test/client/v4"
T0 = 1_800_000_000.0  # a minute and an hour boundary


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ask(prompt: str, tenant: str = "default", model: str = "m") -> ChatRequest:
    return ChatRequest(messages=(Message("user", prompt),), model=model, tenant=tenant)


def _memory(tmp_path: Path) -> Stats:
    return MemoryStats()


def _sqlite(tmp_path: Path) -> Stats:
    return SQLiteStats(SQLiteStore(tmp_path / "c.sqlite3"))


def _kv(tmp_path: Path) -> Stats:
    kv = KVStandIn()
    return KVStats(
        httpx.Client(transport=kv.transport()), kv.account_id, kv.namespace_id, kv.token,
        BASE, flush_every=0, background=False,
    )  # fmt: skip


BACKENDS = [_memory, _sqlite, _kv]
IDS = ["memory", "sqlite", "kv"]


@pytest.fixture(params=BACKENDS, ids=IDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stats]:
    stats = request.param(tmp_path)
    yield stats
    if isinstance(stats, KVStats):
        stats.close()


def cache_on(stats: Stats, clock: Clock, **kwargs: Any) -> PromptCache:
    return PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=stats, llm=FakeLLM(), clock=clock,
        **kwargs,
    )  # fmt: skip


# ---------------------------------------------------------------- pure parts
def test_a_value_falls_in_the_first_bucket_it_fits() -> None:
    assert observe("hit", 0.2, LATENCY_BOUNDS_MS) == "hist.hit.1"
    assert observe("hit", 1.0, LATENCY_BOUNDS_MS) == "hist.hit.1"
    assert observe("hit", 1.01, LATENCY_BOUNDS_MS) == "hist.hit.2.5"
    assert observe("hit", 10**9, LATENCY_BOUNDS_MS) == "hist.hit.inf"
    counters = {"hist.hit.1": 2.0, "hist.hit.inf": 1.0, "latency_ms.hit": 7.5}
    shown = histogram(counters, "hit", LATENCY_BOUNDS_MS)
    assert shown["counts"][0] == 2 and shown["counts"][-1] == 1 and shown["count"] == 3
    assert shown["sum"] == 7.5 and shown["le"][-1] == "+Inf"


def test_stale_buckets_are_those_past_their_window() -> None:
    now = T0
    fresh_minute = f"s|m|{int(now - (MINUTES_KEPT - 1) * MINUTE)}|requests"
    old_minute = f"s|m|{int(now - (MINUTES_KEPT + 1) * MINUTE)}|requests"
    fresh_hour = f"s|h|{int(now - (HOURS_KEPT - 1) * HOUR)}|requests"
    old_hour = f"s|h|{int(now - (HOURS_KEPT + 1) * HOUR)}|requests"
    names = [fresh_minute, old_minute, fresh_hour, old_hour, "requests", "s|x|1|y", "s|m|a|b"]
    assert sorted(stale(names, now)) == sorted([old_minute, old_hour])


def test_series_is_per_minute_within_a_day_else_per_hour() -> None:
    counters = {
        f"s|m|{int(T0)}|requests": 2.0,
        f"s|m|{int(T0)}|hits.exact": 1.0,
        f"s|m|{int(T0)}|misses": 1.0,
        f"s|m|{int(T0 - 600)}|misses": 1.0,
        f"s|h|{int(T0)}|misses": 1.0,
        f"s|h|{int(T0)}|hits.exact": 1.0,
        f"s|h|{int(T0 - 3 * HOUR)}|misses": 1.0,
    }
    recent = series(counters, T0 - 60, T0)
    assert recent["step_s"] == 60 and [p["t"] for p in recent["points"]] == [int(T0)]
    point = recent["points"][0]
    assert point["requests"] == 2 and point["hit_rate"] == 0.5 and point["hits"]["exact"] == 1
    assert [p["t"] for p in series(counters, T0 - 3600, T0)["points"]] == [T0 - 600, T0]
    hourly = series(counters, T0 - 2 * 86400, T0)
    assert hourly["step_s"] == 3600
    assert [p["t"] for p in hourly["points"]] == [T0 - 3 * HOUR, T0]


# ---------------------------------------------------------------- on every backend
def test_buckets_per_minute_and_hour_and_old_ones_dropped(backend: Stats) -> None:
    clock = Clock()
    cache = cache_on(backend, clock)
    cache.chat(ask("one"))
    cache.chat(ask("one"))  # an exact hit
    clock.now += 2 * MINUTE
    cache.chat(ask("two"))
    report = cache.report(since=T0 - 1)
    points = report["series"]["points"]
    assert [(p["t"], p["requests"], p["hits"]["total"]) for p in points] == [
        (T0, 2, 1),
        (T0 + 120, 1, 0),
    ]
    assert report["series"]["step_s"] == 60
    hourly = cache.report(since=clock.now - 2 * 86400)["series"]["points"]
    assert [(p["t"], p["requests"]) for p in hourly] == [(T0, 3)]
    minute_names = {k for k in backend.read() if k.startswith("s|m|")}
    assert minute_names  # overall and the tenant's

    clock.now = T0 + (MINUTES_KEPT + 5) * MINUTE  # a day later: the minutes went stale
    cache.chat(ask("three"))  # the hour changed: this process drops stale counters
    left = backend.read()
    assert not minute_names & set(left)
    assert any(k.startswith("s|h|") for k in left)
    assert left["requests"] == 4  # the totals stay
    assert cache.report()["requests"] == 4

    clock.now = T0 + (HOURS_KEPT + 2) * HOUR  # a month later: the hours too
    cache.report()
    assert all(
        not k.split("|", 2)[-1].startswith(f"s|h|{int(T0)}") for k in backend.read() if "s|h|" in k
    )
    assert not [k for k in backend.read() if f"|{int(T0)}|" in k]


def test_histograms_of_hits_misses_and_their_parts(backend: Stats) -> None:
    cache = cache_on(backend, Clock())
    for prompt in ("a", "b", "a", "a"):
        result = cache.chat(ask(prompt))
        assert set(result.timings) >= {"lookup"}
    report = cache.report()
    hist = report["latency_ms"]
    assert hist["hit"]["count"] == 2 and hist["miss"]["count"] == 2
    assert hist["model"]["count"] == 2 and hist["lookup"]["count"] == 4
    assert hist["embed"]["count"] == 2  # the misses embed; exact hits do not
    assert sum(hist["hit"]["counts"]) == 2 and hist["hit"]["sum"] >= 0
    own = cache.tenant_report("default")
    assert own is not None and own["latency_ms"]["miss"]["count"] == 2


def test_a_results_timings_name_its_parts() -> None:
    vectors = {"the same question": unit("q"), "the same question?": unit("q")}
    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(vectors), stats=MemoryStats(), llm=FakeLLM()
    )
    miss = cache.chat(ask("the same question"))
    assert set(miss.timings) == {"lookup", "embed", "model"}
    assert all(v >= 0 for v in miss.timings.values())
    semantic = cache.chat(ask("the same question?"))
    assert semantic.tier.value == "semantic"
    assert set(semantic.timings) == {"lookup", "embed", "verify"}
    exact = cache.chat(ask("the same question"))
    assert set(exact.timings) == {"lookup"}
    assert sum(miss.timings.values()) <= miss.latency_ms + 1e-6


def test_rejections_are_counted_by_guard(backend: Stats) -> None:
    base = unit("base")
    vectors = {"how old is 5": base, "how old is 6": blend(base, unit("x"), 0.99)}

    def numbers_guard(query: str, candidate: str) -> str | None:
        return "numbers differ" if query[-1] != candidate[-1] else None

    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(vectors), stats=backend, llm=FakeLLM(),
        guards=[numbers_guard], clock=Clock(),
    )  # fmt: skip
    cache.chat(ask("how old is 5", tenant="a"))
    assert cache.chat(ask("how old is 6", tenant="a")).tier.value == "miss"
    report = cache.report(tenants=["a", "b"])
    assert report["rejections"] == {"numbers": 1}
    assert report["tenants"]["a"]["rejections"] == {"numbers": 1}
    assert report["tenants"]["b"]["rejections"] == {}
    assert report["latency_ms"]["verify"]["count"] == 1


def test_top_entries_per_tenant_with_prompt_and_age(backend: Stats) -> None:
    clock = Clock()
    cache = cache_on(backend, clock)
    for prompt, times in (("popular", 4), ("rare", 2), ("once", 1)):
        for _ in range(times):
            cache.chat(ask(prompt, tenant="a"))
    cache.chat(ask("b's secret"))
    cache.chat(ask("b's secret"))
    clock.now += 30
    own = cache.tenant_report("a")
    assert own is not None
    top = own["top_entries"]
    assert [(e["prompt"], e["hits"]) for e in top] == [("popular", 3), ("rare", 1)]
    assert top[0]["age_s"] == 30 and top[0]["tenant"] == "a" and len(top[0]["id"]) == 32
    assert "secret" not in json.dumps(own)
    overall = cache.report(tenants=["a"])
    assert [e["hits"] for e in overall["top_entries"]] == [3, 1, 1]
    assert "secret" not in json.dumps(overall["tenants"]["a"])
    removed = cache.forget("a", top[0]["id"])
    assert removed is not None
    after = cache.tenant_report("a")
    assert after is not None and "prompt" not in after["top_entries"][0]  # gone from the store


def test_entry_counters_are_bounded(backend: Stats) -> None:
    cache = cache_on(backend, Clock(), threshold=1.01)  # exact hits only
    for i in range(ENTRIES_KEPT + 5):
        cache.chat(ask(f"prompt {i}"))
        for _ in range(1 + (i == 0)):
            cache.chat(ask(f"prompt {i}"))
    cache.report()
    entries = [k for k in backend.read() if "|e|" in k]
    assert len(entries) == ENTRIES_KEPT
    assert cache.report()["top_entries"][0]["prompt"] == "prompt 0"


def test_token_histograms_count_the_models_tokens(backend: Stats) -> None:
    cache = cache_on(backend, Clock())
    cache.chat(ask("x"))  # FakeLLM: 10 prompt and 20 completion tokens
    counters = backend.read()
    assert counters["hist.input.16"] == 1 and counters["hist.output.64"] == 1
    assert counters["tokens.input"] == 10 and counters["tokens.output"] == 20


@pytest.mark.parametrize("make", BACKENDS, ids=IDS)
def test_buckets_and_histograms_exact_under_16_writers(
    tmp_path: Path, make: Callable[[Path], Stats]
) -> None:
    """16 threads at once, each its own cache (KV: each its own writer) on one backend."""
    first = make(tmp_path)
    if isinstance(first, KVStats):
        first.close()  # one KV namespace, 16 writers (no key with two writers)
        kv = KVStandIn()
        writers = [
            KVStats(
                httpx.Client(transport=kv.transport()),
                kv.account_id,
                kv.namespace_id,
                kv.token,
                BASE,
                flush_every=0,
                background=False,
            )  # fmt: skip
            for _ in range(16)
        ]
    else:
        writers = [first] * 16
    clock = Clock()
    caches = [cache_on(w, clock, threshold=1.01) for w in writers]
    start, errors = threading.Barrier(16), []

    def run(i: int) -> None:
        try:
            start.wait()
            for j in range(10):
                caches[i].chat(ask(f"w{i} p{j % 5}", tenant=f"t{i % 2}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = caches[0].report(tenants=["t0", "t1"])
    assert report["requests"] == 160
    assert report["series"]["points"][0]["requests"] == 160
    assert report["series"]["points"][0]["hits"]["total"] == 80
    assert report["latency_ms"]["hit"]["count"] == 80
    assert report["latency_ms"]["miss"]["count"] == 80
    assert report["latency_ms"]["lookup"]["count"] == 160
    for t in ("t0", "t1"):
        assert "series" not in report["tenants"][t]  # the overview stays small
        own = caches[0].tenant_report(t)
        assert own is not None and own["series"]["points"][0]["requests"] == 80
        entries = caches[0].counters()[0][t]
        assert sum(v for k, v in entries.items() if k.startswith("e|")) == 40
    for w in writers:
        if isinstance(w, KVStats):
            w.close()


def test_a_stats_failure_on_drop_loses_no_answer() -> None:
    class NoDrop(MemoryStats):
        def drop(self, names: Any) -> None:
            raise RuntimeError("drop refused")

    clock = Clock()
    stats = NoDrop()
    cache = cache_on(stats, clock)
    cache.chat(ask("one"))
    clock.now += (MINUTES_KEPT + 5) * MINUTE  # stale minutes, and the hour changed
    assert cache.chat(ask("two")).tier.value == "miss"  # the drop failed: logged only
    assert stats.read()["requests"] == 2
    assert np.isfinite(cache.chat(ask("two")).latency_ms)
