"""adapters/cloudflare_kv without sockets: the KV stand-in through httpx.MockTransport."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from promptcache import ConfigError, Stats, StatsError
from promptcache.adapters import cloudflare_kv
from promptcache.adapters._http import CircuitBreaker, RetryPolicy
from promptcache.adapters.cloudflare_kv import KVStats
from tests.support.kv_standin import KVStandIn

BASE = "https://cf.example.test/client/v4"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kv() -> KVStandIn:
    return KVStandIn()  # used through .transport(): never started as a server


def stats(kv: KVStandIn, **kwargs: Any) -> KVStats:
    client = httpx.Client(transport=kv.transport())
    kwargs.setdefault("background", False)
    kwargs.setdefault("sleep", lambda s: None)
    return KVStats(client, kv.account_id, kv.namespace_id, kv.token, BASE, **kwargs)


def doc(kv: KVStandIn, key: str) -> dict[str, Any]:
    raw = kv.value(key)
    assert raw is not None, key
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


def test_16_writers_x_500_increments_with_a_put_on_every_add(kv: KVStandIn) -> None:
    """The strictest schedule: every add is its own PUT (8,000 writes racing); 8 writers have
    their own KVStats, 8 threads share one (the group commit of one process)."""
    shared = stats(kv, flush_every=0)

    def write(i: int) -> None:
        own = shared if i % 2 else stats(kv, flush_every=0)
        for _ in range(500):
            own.add({"requests": 1, "latency_ms.hit": 0.5})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(16)))
    assert stats(kv).read() == {"requests": 8000.0, "latency_ms.hit": 4000.0}
    assert doc(kv, shared.key)["version"] == 8 * 500
    assert kv.counts["put"] <= 8000


def test_is_a_stats_backend(kv: KVStandIn) -> None:
    assert isinstance(stats(kv), Stats)


def test_each_writer_puts_its_whole_totals_to_its_own_key(kv: KVStandIn) -> None:
    s = stats(kv, writer_id="writer-a", flush_every=0)
    s.add({"requests": 1, "latency_ms.hit": 2.5})
    s.add({"requests": 1, "hits.exact": 1})
    assert kv.live_keys() == ["stats:w:writer-a"]
    value = doc(kv, "stats:w:writer-a")
    assert value["writer"] == "writer-a" and value["version"] == 2
    assert value["totals"] == {"requests": 2.0, "latency_ms.hit": 2.5, "hits.exact": 1.0}
    assert kv.counts["put"] == 2 and kv.counts["get"] == 1  # one GET: resuming a chosen id
    assert s.read() == {"requests": 2.0, "latency_ms.hit": 2.5, "hits.exact": 1.0}


def test_read_sums_all_writers_from_the_listing_alone(kv: KVStandIn) -> None:
    a, b = stats(kv, flush_every=0), stats(kv, flush_every=0)
    a.add({"requests": 3, "tokens_saved": 10})
    b.add({"requests": 4, "misses": 1})
    reader = stats(kv)
    gets = kv.counts["get"]
    assert reader.read() == {"requests": 7.0, "tokens_saved": 10.0, "misses": 1.0}
    assert kv.counts["get"] - gets == 1  # only the reset baseline: totals came with the list


def test_totals_too_big_for_metadata_are_fetched(kv: KVStandIn) -> None:
    big = {f"m|@cf/meta/some-model-{i}|latency_ms.miss": float(i) for i in range(40)}
    writer = stats(kv, flush_every=0)
    writer.add(big)
    listed = kv.dispatch(
        "GET",
        f"/client/v4/accounts/{kv.account_id}/storage/kv/namespaces/{kv.namespace_id}/keys",
        {"Authorization": f"Bearer {kv.token}"},
        b"",
    )
    assert listed.json_body["result"][0]["metadata"] == {"v": 1}
    gets = kv.counts["get"]
    assert stats(kv).read() == big
    assert kv.counts["get"] - gets == 2  # the writer's value, then the baseline


def test_list_pages_are_followed(kv: KVStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cloudflare_kv, "LIST_LIMIT", 10)
    for _ in range(25):
        stats(kv, flush_every=0).add({"requests": 1})
    lists = kv.counts["list"]
    assert stats(kv).read() == {"requests": 25.0}
    assert kv.counts["list"] - lists == 3


def test_add_within_flush_every_waits_and_the_next_due_add_carries_it(kv: KVStandIn) -> None:
    clock = Clock()
    s = stats(kv, flush_every=5.0, clock=clock)
    s.add({"requests": 1})  # first add: due at once
    assert kv.counts["put"] == 1
    clock.now += 1
    s.add({"requests": 1})
    s.add({"requests": 1})
    assert kv.counts["put"] == 1 and s.pending
    clock.now += 5
    s.add({"requests": 1})
    assert kv.counts["put"] == 2 and not s.pending
    assert doc(kv, s.key)["totals"] == {"requests": 4.0}


def test_background_timer_writes_within_flush_every(kv: KVStandIn) -> None:
    s = stats(kv, flush_every=0.05, background=True)
    s.add({"requests": 1})
    s.add({"requests": 1})  # deferred: the timer must write it
    deadline = time.monotonic() + 5
    while s.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not s.pending
    assert doc(kv, s.key)["totals"] == {"requests": 2.0}
    s.close()


def test_close_writes_what_is_pending(kv: KVStandIn) -> None:
    clock = Clock()
    s = stats(kv, flush_every=60, clock=clock)
    s.add({"a": 1})
    s.add({"a": 1})
    assert doc(kv, s.key)["totals"] == {"a": 1.0}
    s.close()
    assert doc(kv, s.key)["totals"] == {"a": 2.0}


def test_a_failed_write_loses_nothing(kv: KVStandIn) -> None:
    s = stats(kv, flush_every=0, policy=RetryPolicy(attempts=1))
    s.add({"requests": 1})
    kv.fail(500, 10001, "KV is having a bad day", times=2, path="/values/")
    s.add({"requests": 1})  # never raises: the increments stay pending
    s.add({"requests": 1})
    assert s.pending
    s.add({"requests": 1})
    assert not s.pending
    assert stats(kv).read() == {"requests": 4.0}


def test_retried_writes_never_double_count(kv: KVStandIn) -> None:
    s = stats(kv, flush_every=0, policy=RetryPolicy(attempts=3))
    kv.fail(503, None, times=2, path="/values/")
    s.add({"requests": 1})
    assert kv.counts["put"] == 1 and kv.counts["failed"] == 2
    assert stats(kv).read() == {"requests": 1.0}


def test_reset_counts_only_what_comes_after(kv: KVStandIn) -> None:
    a, b = stats(kv, flush_every=0), stats(kv, flush_every=0)
    a.add({"requests": 5})
    b.add({"requests": 7, "misses": 2})
    a.reset()
    assert a.read() == {}
    assert stats(kv).read() == {}
    b.add({"requests": 1})  # b never heard of the reset
    a.add({"misses": 3})
    assert stats(kv).read() == {"requests": 1.0, "misses": 3.0}
    assert a.read() == {"requests": 1.0, "misses": 3.0}


def test_a_chosen_writer_id_resumes_its_earlier_totals(kv: KVStandIn) -> None:
    first = stats(kv, writer_id="host-1", flush_every=0)
    first.add({"requests": 3})
    again = stats(kv, writer_id="host-1", flush_every=0)  # e.g. after a restart
    again.add({"requests": 2})
    assert doc(kv, "stats:w:host-1")["totals"] == {"requests": 5.0}
    assert stats(kv).read() == {"requests": 5.0}


def test_non_finite_values_are_refused(kv: KVStandIn) -> None:
    s = stats(kv, flush_every=0)
    with pytest.raises(StatsError):
        s.add({"latency": float("nan")})
    assert kv.counts["put"] == 0


@pytest.mark.parametrize(("status", "code"), [(401, 10000), (500, 10001), (403, 10000)])
def test_read_failures_are_stats_errors(kv: KVStandIn, status: int, code: int) -> None:
    kv.fail(status, code, "nope", times=10, path="/keys")
    with pytest.raises(StatsError, match=str(code)):
        stats(kv, policy=RetryPolicy(attempts=1)).read()


def test_wrong_token_is_a_stats_error(kv: KVStandIn) -> None:
    client = httpx.Client(transport=kv.transport())
    s = KVStats(client, kv.account_id, kv.namespace_id, "wrong", BASE, background=False)
    with pytest.raises(StatsError, match="Authentication error"):
        s.read()


def test_open_breaker_makes_kv_trouble_cheap(kv: KVStandIn) -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=30, clock=clock)
    s = stats(kv, flush_every=0, policy=RetryPolicy(attempts=1), breaker=breaker, clock=clock)
    kv.fail(503, None, times=100, path="/values/")
    for _ in range(10):
        s.add({"requests": 1})
    assert kv.counts["failed"] == 2  # then the circuit opened and nothing else was sent
    kv.clear_failures()
    clock.now += 31
    s.add({"requests": 1})
    assert stats(kv).read() == {"requests": 11.0}


def test_unreadable_values_are_stats_errors(kv: KVStandIn) -> None:
    big = {f"counter-{i:03d}-with-a-long-name": 1.0 for i in range(60)}
    stats(kv, writer_id="w", flush_every=0).add(big)
    kv._history["stats:w:w"][-1] = kv._history["stats:w:w"][-1].__class__(
        time.time(), b"not json", {"v": 1}
    )
    with pytest.raises(StatsError, match="unreadable"):
        stats(kv).read()


@pytest.mark.parametrize(
    "kwargs",
    [{"flush_every": -1.0}, {"flush_every": float("inf")}, {"writer_id": "a/b"}, {"writer_id": ""}],
)
def test_configuration_errors(kv: KVStandIn, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        stats(kv, **kwargs)


def test_namespace_id_must_be_an_id(kv: KVStandIn) -> None:
    client = httpx.Client(transport=kv.transport())
    with pytest.raises(ConfigError, match="CLOUDFLARE_KV_NAMESPACE_ID"):
        KVStats(client, kv.account_id, "../x", kv.token, BASE)


def test_an_add_during_a_put_stays_pending_until_written(kv: KVStandIn) -> None:
    """An increment made while this writer's PUT is in flight is not in that PUT's snapshot: it
    must stay pending (and be written next), never be marked written with it."""
    clock = Clock()
    inner = kv.transport()
    during: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and not during:
            during.append(True)
            s.add({"requests": 1})  # not due (flush_every): stays in memory
        return inner.handle_request(request)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    s = KVStats(
        client,
        kv.account_id,
        kv.namespace_id,
        kv.token,
        BASE,
        flush_every=10,
        background=False,
        clock=clock,
    )
    s.add({"requests": 1})
    assert doc(kv, s.key)["totals"] == {"requests": 1.0}
    assert s.pending
    s.flush()
    assert doc(kv, s.key)["totals"] == {"requests": 2.0} and not s.pending


def test_many_tenants_and_models_are_counted_exactly(kv: KVStandIn) -> None:
    """Per-tenant counters outgrow KV's 1,024 bytes of metadata at once (one tenant and one
    model already take ~1.9 KB): each writer's totals are then read from its value (one GET per
    writer), which holds up to 25 MiB (~44,000 tenant x model pairs per writer)."""
    from promptcache import PromptCache
    from promptcache._types import ChatRequest, Message
    from promptcache.adapters.memory import MemoryStore
    from tests.unit.fakes import FakeEmbedder, FakeLLM

    tenants = [f"tenant|{i}%" for i in range(60)]
    writers = [stats(kv, flush_every=0) for _ in range(3)]
    caches = [
        PromptCache(store=MemoryStore(), embedder=FakeEmbedder(), stats=w, llm=FakeLLM())
        for w in writers
    ]
    for n, tenant in enumerate(tenants):
        for model in range(4):
            for cache in caches[: 1 + n % 3]:
                prompt = (Message("user", f"{tenant} asks model {model}"),)
                cache.chat(ChatRequest(messages=prompt, model=f"@cf/m-{model}", tenant=tenant))
    listed = kv.dispatch(
        "GET",
        f"/client/v4/accounts/{kv.account_id}/storage/kv/namespaces/{kv.namespace_id}/keys",
        {"Authorization": f"Bearer {kv.token}"},
        b"",
    )
    for item in listed.json_body["result"]:
        if item["name"].startswith(writers[0].writer_prefix):
            assert set(item["metadata"]) == {"v"}  # too big: the totals are in the value only
            assert "t|tenant%7C2%25|requests" in doc(kv, item["name"])["totals"]  # escaped
    reader = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=stats(kv), llm=FakeLLM()
    )
    report = reader.report(tenants=tenants)
    assert report["requests"] == sum(4 * (1 + n % 3) for n in range(len(tenants)))
    assert set(report["tenants"]) == set(tenants)
    for n, tenant in enumerate(tenants):
        own = reader.tenant_report(tenant)
        assert own is not None and own["requests"] == 4 * (1 + n % 3)
        assert own["misses"] == 4 * (1 + n % 3)  # each writer's own memory store: all misses
        assert sorted(own["models"]) == [f"@cf/m-{m}" for m in range(4)]
        assert all(m["requests"] == 1 + n % 3 for m in own["models"].values())
