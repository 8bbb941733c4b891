"""UpstashStore through the REST stand-in and a real redis-server: round trips, chunked cold
loads, generations under concurrent writers and compaction, real TTLs, errors, stats, runtime."""

from __future__ import annotations

import base64
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import numpy as np
import pytest
import redis

from promptcache import (
    ChatRequest,
    ConfigError,
    Message,
    PromptCache,
    Settings,
    StatsError,
    StoreError,
    Tier,
)
from promptcache.adapters.memory import MemoryStats
from promptcache.adapters.upstash import UpstashStats, UpstashStore, decode_records
from tests.support.entries import make_entry
from tests.support.upstash_standin import Requests, UpstashStandIn
from tests.unit.fakes import FakeEmbedder, FakeLLM, blend, unit

pytestmark = pytest.mark.integration

NS = "default:fake:8:upstash"
MakeStore = Callable[..., UpstashStore]


entry = functools.partial(make_entry, ns=NS)


# ------------------------------------------------------------------------------- round trips
def test_each_operation_is_one_round_trip(
    upstash: UpstashStandIn, make_upstash_store: MakeStore
) -> None:
    store = make_upstash_store()
    rt = Requests(upstash)
    first = store.sync(NS, "key-a", None)
    assert rt.take() == {"/pipeline": 1}  # cold: the generation guess was right
    a = entry("a")
    store.put(a, unit("a"))
    assert rt.take() == {"/multi-exec": 1}
    result = store.sync(NS, "key-a", first.cursor)
    assert rt.take() == {"/pipeline": 1}
    assert result.exact == a and [r.entry_id for r in result.records] == [a.id]
    assert store.get(a.id) == a
    assert rt.take() == {"/": 1}
    assert store.count() == 1
    assert rt.take() == {"/": 1}
    # a process that never synced this namespace first learns its generation
    make_upstash_store().put(entry("b"), unit("b"))
    assert rt.take() == {"/pipeline": 1, "/multi-exec": 1}


def test_requests_through_the_core(upstash: UpstashStandIn, make_upstash_store: MakeStore) -> None:
    """Exact hit: 1 Redis round trip, no embedding. Semantic hit: 1 embedding, 2 round trips.
    Miss: its sync, the fill lock (SET NX), entry + vector + exact key + TTL in one transaction,
    and the lock's release (one EVAL)."""
    base = unit("reset password")
    embedder = FakeEmbedder(
        {
            "how do i reset my password?": base,
            "how can i reset my password?": blend(base, unit("x"), 0.95),
        }
    )
    cache = PromptCache(
        store=make_upstash_store(), embedder=embedder, stats=MemoryStats(), llm=FakeLLM(),
        ttl_seconds=600,
    )  # fmt: skip

    def ask(prompt: str) -> tuple[Tier, Counter[str], int]:
        rt, calls = Requests(upstash), embedder.calls
        rt.take()
        result = cache.chat(ChatRequest(messages=(Message("user", prompt),), model="m"))
        return result.tier, rt.take(), embedder.calls - calls

    assert ask("How do I reset my password?") == (
        Tier.MISS,
        {"/pipeline": 1, "/": 2, "/multi-exec": 1},
        1,
    )
    assert ask("How do I reset my password?") == (Tier.EXACT, {"/pipeline": 1}, 0)
    assert ask("How can I reset my password?") == (Tier.SEMANTIC, {"/pipeline": 1, "/": 1}, 1)


def test_cold_load_reads_in_chunks(upstash: UpstashStandIn, make_upstash_store: MakeStore) -> None:
    writer = make_upstash_store()
    written = [entry(f"p{i}") for i in range(200)]
    for e in written:
        writer.put(e, unit(e.id))
    reader = make_upstash_store(chunk_bytes=4096)  # 8-d records are 104 base64 chars: 39 a chunk
    upstash.reset_counters()
    rt = Requests(upstash)
    result = reader.sync(NS, None, None)
    assert [r.entry_id for r in result.records] == [e.id for e in written]
    np.testing.assert_array_equal(result.records[7].vector, unit(written[7].id))
    assert rt.take() == {"/pipeline": 1, "/": 5}  # 200 records = 5 full chunks + 1 short
    assert upstash.bytes_out < 200 * 104 * 4 / 3 + 6 * 400  # log bytes + per-request overhead

    big = make_upstash_store(chunk_bytes=4096)  # 768-d records (4,156 chars) exceed a chunk
    wide = [entry(f"w{i}", ns="default:fake:768:wide") for i in range(3)]
    for e in wide:
        big.put(e, unit(e.id, dim=768))
    loaded = make_upstash_store(chunk_bytes=4096).sync("default:fake:768:wide", None, None)
    assert [r.entry_id for r in loaded.records] == [e.id for e in wide]


def test_steady_state_sync_moves_only_new_records(
    upstash: UpstashStandIn, make_upstash_store: MakeStore
) -> None:
    store = make_upstash_store()
    for i in range(50):
        store.put(entry(f"p{i}"), unit(str(i)))
    cursor = store.sync(NS, None, None).cursor
    upstash.reset_counters()
    idle = store.sync(NS, "key-none", cursor)
    assert idle.records == () and upstash.bytes_out < 200
    store.put(entry("new"), unit("new"))
    upstash.reset_counters()
    one = store.sync(NS, None, idle.cursor)
    assert len(one.records) == 1 and upstash.bytes_out < 400  # one 104-char record, base64'd


# ------------------------------------------------------------------------------- generations
def test_a_writer_behind_a_compaction_appends_again(
    upstash: UpstashStandIn, make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    stale = make_upstash_store()
    before = stale.sync(NS, None, None)  # learns generation 0.0
    other = make_upstash_store()
    kept, dropped = entry("kept"), entry("dropped")
    other.put(kept, unit("kept"))
    other.put(dropped, unit("dropped"))
    other.delete(dropped.id)
    assert other.compact() == 2  # the deleted vector and its tombstone

    late = entry("late")
    rt = Requests(upstash)
    stale.put(late, unit("late"))  # appends to the old generation's log, then to the new one
    assert rt.take() == {"/multi-exec": 2}
    after = make_upstash_store().sync(NS, None, None)
    assert [r.entry_id for r in after.records] == [kept.id, late.id]
    assert len(redis_client.keys("pc:log:*")) == 1  # the stale key it recreated is gone
    resumed = stale.sync(NS, None, before.cursor)
    assert resumed.reset is True
    assert [r.entry_id for r in resumed.records] == [kept.id, late.id]


def test_compaction_loses_the_race_then_retries(
    make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    store = make_upstash_store()
    a, b = entry("a"), entry("b")
    store.put(a, unit("a"))
    store.put(b, unit("b"))
    store.delete(b.id)
    nsid = store.namespace_id(NS)
    real_write = store._write_log

    def write_then_interfere(key: str, records, dim: int) -> None:  # type: ignore[no-untyped-def]
        real_write(key, records, dim)
        if not getattr(write_then_interfere, "done", False):
            write_then_interfere.done = True  # type: ignore[attr-defined]
            # meanwhile another compactor switched to its own generation
            redis_client.rename(f"pc:log:{nsid}:0.0", f"pc:log:{nsid}:0.someone-else")
            redis_client.set(f"pc:gen:{nsid}", "someone-else")

    store._write_log = write_then_interfere  # type: ignore[method-assign]
    assert store.compact() == 2
    assert [r.entry_id for r in make_upstash_store().sync(NS, None, None).records] == [a.id]
    assert len(redis_client.keys("pc:log:*")) == 1  # the loser's staging log was dropped


def test_compaction_writes_the_live_log_in_chunks(
    upstash: UpstashStandIn, make_upstash_store: MakeStore
) -> None:
    store = make_upstash_store(chunk_bytes=4096)  # 39 8-d records a request
    written = [entry(f"p{i}") for i in range(120)]
    for e in written:
        store.put(e, unit(e.id))
    store.delete(written[0].id)
    rt = Requests(upstash)
    assert store.compact() == 2
    assert rt.take()["/multi-exec"] == 4  # 119 live records in 4 APPENDs
    reloaded = make_upstash_store().sync(NS, None, None).records
    assert [r.entry_id for r in reloaded] == [e.id for e in written[1:]]


def test_concurrent_writers_racing_compaction(make_upstash_store: MakeStore) -> None:
    writers, per_writer = 4, 60
    live: set[str] = set()
    deleted: set[str] = set()
    lock = threading.Lock()
    done = threading.Event()
    errors: list[BaseException] = []

    def write(i: int) -> None:
        store = make_upstash_store()
        try:
            for j in range(per_writer):
                e = entry(f"w{i}-{j}")
                store.put(e, unit(e.id))
                with lock:
                    live.add(e.id)
                if j % 5 == 4:
                    assert store.delete(e.id) is True
                    with lock:
                        live.discard(e.id)
                        deleted.add(e.id)
        except BaseException as exc:
            errors.append(exc)

    compactions = 0

    def compact() -> None:
        nonlocal compactions
        store = make_upstash_store()
        try:
            while not done.is_set():
                store.compact()
                compactions += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    compactor = threading.Thread(target=compact)
    compactor.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    compactor.join()
    assert errors == []
    assert compactions >= 2

    records = make_upstash_store().sync(NS, None, None).records
    vectors = Counter(r.entry_id for r in records if r.vector is not None)
    assert set(vectors) >= live  # nothing lost
    assert max(vectors.values()) == 1  # nothing twice
    final = {}
    for r in records:
        final[r.entry_id] = r.vector is not None
    assert {i for i, alive in final.items() if alive} == live
    make_upstash_store().compact()
    clean = make_upstash_store().sync(NS, None, None).records
    assert sorted(r.entry_id for r in clean) == sorted(live)
    assert all(r.vector is not None for r in clean)


# ------------------------------------------------------------------------------- Redis facts
def test_key_layout_and_record_format(
    make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    store = make_upstash_store()
    e = entry("layout", ttl=600)
    store.put(e, unit("layout"))
    nsid = store.namespace_id(NS)
    assert sorted(k.decode() for k in redis_client.keys("*")) == sorted(
        [f"pc:e:{e.id}", f"pc:x:{nsid}:{e.exact_key}", "pc:ids", "pc:nss", f"pc:log:{nsid}:0.0"]
    )
    assert redis_client.get(f"pc:e:{e.id}") == redis_client.get(f"pc:x:{nsid}:{e.exact_key}")
    log = redis_client.get(f"pc:log:{nsid}:0.0")
    assert len(base64.b64decode(log)) % 3 == 0 and b"=" not in log
    (record,), used, _ = decode_records(log)
    assert used == len(log) and record.entry_id == e.id and record.expires_at == e.expires_at
    np.testing.assert_array_equal(record.vector, unit("layout"))
    assert redis_client.zscore("pc:ids", e.id) == e.expires_at


def test_redis_expires_entries_with_px(
    make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    store = make_upstash_store()
    e = entry("fleeting", ttl=0.3)
    store.put(e, unit("fleeting"))
    nsid = store.namespace_id(NS)
    assert 0 < redis_client.pttl(f"pc:e:{e.id}") <= 300
    assert 0 < redis_client.pttl(f"pc:x:{nsid}:{e.exact_key}") <= 300
    deadline = time.monotonic() + 3.0
    while redis_client.exists(f"pc:e:{e.id}", f"pc:x:{nsid}:{e.exact_key}"):
        assert time.monotonic() < deadline, "Redis did not expire the entry"
        time.sleep(0.05)
    assert store.get(e.id) is None and store.sync(NS, e.exact_key, None).exact is None
    assert store.count() == 0
    assert store.compact() == 1
    assert redis_client.zcard("pc:ids") == 0


def test_a_corrupt_log_is_a_store_error(
    make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    store = make_upstash_store()
    store.put(entry("a"), unit("a"))
    redis_client.append(f"pc:log:{store.namespace_id(NS)}:0.0", "AAAA")  # not a whole record
    with pytest.raises(StoreError, match="ends inside a record"):
        make_upstash_store().sync(NS, None, None)
    redis_client.set(f"pc:log:{store.namespace_id(NS)}:0.0", "B" * 200)
    with pytest.raises(StoreError, match="corrupt vector log"):
        make_upstash_store().sync(NS, None, None)


def test_clear_keeps_the_stats(make_upstash_store: MakeStore, upstash: UpstashStandIn) -> None:
    with httpx.Client() as client:
        stats = UpstashStats(client, upstash.url, upstash.token)
        stats.add({"requests": 2})
        store = make_upstash_store()
        store.put(entry("a"), unit("a"))
        assert store.clear() == 1
        assert stats.read() == {"requests": 2.0}


def keys(redis_client: redis.Redis, prefix: str) -> set[str]:
    return {k.decode() for k in redis_client.keys("*") if k.decode().startswith(prefix)}


def test_clear_keeps_the_stats_under_another_prefix(
    make_upstash_store: MakeStore, upstash: UpstashStandIn, redis_client: redis.Redis
) -> None:
    """The stats hash is a key of the store's layout: with any prefix, clear() removes entries,
    logs, locks and windows but keeps it; a store under another prefix is left alone."""
    prefix = "tenant*[7]:"  # glob characters too: clear() matches this prefix only
    with httpx.Client() as client:
        stats = UpstashStats(client, upstash.url, upstash.token, prefix=prefix)
        stats.add({"requests": 3})
        store = make_upstash_store(prefix=prefix)
        neighbour = make_upstash_store(prefix="tenant7:")
        a, b = entry("a"), entry("b")
        store.put(a, unit("a"))
        store.try_lock("fill:a", "token", 60)
        store.count_window("rate:t:1", "rate:t:0", 60)
        neighbour.put(b, unit("b"))
        before = keys(redis_client, prefix)
        assert {f"{prefix}e:{a.id}", f"{prefix}lock:fill:a", f"{prefix}window:rate:t:1"} <= before
        assert store.clear() == 1
        assert stats.read() == {"requests": 3.0}
        assert keys(redis_client, prefix) == {f"{prefix}epoch", f"{prefix}stats"}
        assert store.get(a.id) is None and store.count() == 0
        assert neighbour.get(b.id) == b and neighbour.count() == 1
        assert UpstashStats(client, upstash.url, upstash.token).read() == {}  # not in pc:stats


def test_plain_json_responses_work_too(make_upstash_store: MakeStore) -> None:
    store = make_upstash_store(base64_responses=False)
    e = entry("caf\u00e9 \u2615")
    store.put(e, unit("x"))
    assert store.get(e.id) == e
    assert store.sync(NS, e.exact_key, None).records[0].entry_id == e.id
    store.ping()


# ------------------------------------------------------------------------------- errors
def test_failures_are_store_errors(upstash: UpstashStandIn, make_upstash_store: MakeStore) -> None:
    with httpx.Client() as client:
        bad = UpstashStore(client, upstash.url, "wrong-token")
        for call in (
            lambda: bad.sync(NS, "k", None), lambda: bad.get("x"), bad.count, bad.ping,
            lambda: bad.put(entry("a"), unit("a")), lambda: bad.delete("x"), bad.clear,
        ):  # fmt: skip
            with pytest.raises(StoreError, match="401") as info:
                call()
            assert isinstance(info.value.__cause__, httpx.HTTPStatusError)

    store = make_upstash_store()
    upstash.inject(503, '{"error":"service unavailable"}')
    with pytest.raises(StoreError, match="503") as info:
        store.get("x")
    assert isinstance(info.value.__cause__, httpx.HTTPStatusError)

    with httpx.Client() as client:
        from tests.support.serve import free_port

        gone = UpstashStore(client, f"http://127.0.0.1:{free_port()}", "t")
        with pytest.raises(StoreError) as info:
            gone.ping()
        assert isinstance(info.value.__cause__, httpx.ConnectError)


# ------------------------------------------------------------------------------- stats, runtime
def test_stats_lose_no_update(upstash: UpstashStandIn) -> None:
    with httpx.Client() as client:
        stats = UpstashStats(client, upstash.url, upstash.token)

        def add() -> None:
            for _ in range(100):
                stats.add({"requests": 1, "latency_ms.hit": 0.25, "zero": 0})

        threads = [threading.Thread(target=add) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert stats.read() == {"requests": 1600.0, "latency_ms.hit": 400.0}
        stats.reset()
        assert stats.read() == {}
        with pytest.raises(StatsError):
            UpstashStats(client, upstash.url, "wrong").read()


def test_runtime_builds_the_upstash_backend(upstash: UpstashStandIn) -> None:
    from promptcache import runtime

    env = {
        "UPSTASH_REDIS_REST_URL": upstash.url + "/",
        "UPSTASH_REDIS_REST_TOKEN": upstash.token,
        "PROMPTCACHE_UPSTASH_CHUNK_BYTES": "65536",
    }
    settings = Settings.from_env(env)
    assert settings.store == "upstash" and settings.upstash_chunk_bytes == 65536
    store, stats = runtime.STORES[settings.store](settings)
    assert isinstance(store, UpstashStore) and isinstance(stats, UpstashStats)
    assert runtime.STATS["store"](settings, store, stats) is stats
    try:
        store.ping()
        stats.add({"requests": 1})
        assert stats.read() == {"requests": 1.0}
    finally:
        store._rest._client.close()  # the runtime's client lives as long as the process
    with pytest.raises(ConfigError, match="UPSTASH_REDIS_REST_TOKEN"):
        runtime.STORES["upstash"](Settings.from_env({"UPSTASH_REDIS_REST_URL": upstash.url}))


def test_identical_misses_in_two_processes_make_one_model_call(
    upstash: UpstashStandIn, make_upstash_store: MakeStore
) -> None:
    """Two caches on the same Upstash (two Lambda containers): the fill lock makes one of them
    ask the model; the other waits for its entry and answers it as an exact hit."""

    llm = FakeLLM(delay=0.5)
    caches = [
        PromptCache(
            store=make_upstash_store(),
            embedder=FakeEmbedder(),
            stats=MemoryStats(),
            llm=llm,
            fill_lock_ttl=10,
        )  # fmt: skip
        for _ in range(2)
    ]
    barrier = threading.Barrier(2)
    tiers: list[Tier] = []

    def ask(cache: PromptCache) -> None:
        barrier.wait()
        request = ChatRequest(messages=(Message("user", "what is a fill lock?"),), model="m")
        tiers.append(cache.chat(request).tier)

    threads = [threading.Thread(target=ask, args=(c,)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert llm.calls == 1
    assert sorted(t.value for t in tiers) == ["exact", "miss"]
