"""UpstashStore's segmented vector log, with tiny segments, through the REST stand-in and a real
redis-server: every record read back exactly once (cold and incrementally, across segment
boundaries), concurrent writers crossing boundaries, compaction, stale writers, clear, and the
round trips of the core's paths."""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import redis

from promptcache import ChatRequest, Message, PromptCache, Tier
from promptcache.adapters.memory import MemoryStats
from promptcache.adapters.upstash import SEGMENT_STRIDE, UpstashStore, decode_records
from tests.support.entries import make_entry
from tests.support.upstash_standin import Requests, UpstashStandIn
from tests.unit.fakes import FakeEmbedder, FakeLLM, blend, unit

pytestmark = pytest.mark.integration

NS = "default:fake:8:segments"
MakeStore = Callable[..., UpstashStore]
#: 8-d records are 104 base64 characters: 9 records (936 characters) a segment
TINY = 1000
PER_SEGMENT = 9
RECORD_CHARS = 104


entry = functools.partial(make_entry, ns=NS)


def segments(r: redis.Redis, nsid: str, generation: str) -> list[bytes]:
    """The log's segments as stored, in order, checked to be consecutive keys."""
    count = int(r.get(f"pc:seg:{nsid}:{generation}") or 0)
    keys = [f"pc:log:{nsid}:{generation}"] + [
        f"pc:log:{nsid}:{generation}:{s}" for s in range(1, count + 1)
    ]
    found = {k.decode() for k in r.keys(f"pc:log:{nsid}:*")}
    assert found == set(keys)
    return [r.get(k) or b"" for k in keys]


def ids(records: object) -> list[str]:
    return [r.entry_id for r in records]  # type: ignore[attr-defined]


def test_records_fill_segments_and_read_back_once(
    upstash: UpstashStandIn, make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    writer = make_upstash_store(segment_bytes=TINY)
    written = [entry(f"p{i}") for i in range(40)]
    for e in written:
        writer.put(e, unit(e.id))
    nsid = writer.namespace_id(NS)
    stored = segments(redis_client, nsid, "0.0")
    assert [len(s) for s in stored] == [PER_SEGMENT * RECORD_CHARS] * 4 + [4 * RECORD_CHARS]
    assert [r.entry_id for s in stored for r in decode_records(s)[0]] == [e.id for e in written]

    # a cold reader (39 records a chunk): one pipeline, then one GETRANGE per further segment
    reader = make_upstash_store(chunk_bytes=4096)
    rt = Requests(upstash)
    cold = reader.sync(NS, None, None)
    assert rt.take() == {"/pipeline": 1, "/": 4}
    assert ids(cold.records) == [e.id for e in written]
    np.testing.assert_array_equal(cold.records[30].vector, unit(written[30].id))
    assert cold.cursor.offset == 4 * SEGMENT_STRIDE + 4 * RECORD_CHARS
    assert reader.sync(NS, None, cold.cursor).records == ()

    # segments larger than a chunk: 50 records a segment, read 39 at a time
    wide = make_upstash_store(segment_bytes=50 * RECORD_CHARS)
    more = [entry(f"q{i}", ns="default:fake:8:wide") for i in range(120)]
    for e in more:
        wide.put(e, unit(e.id))
    rt.take()
    loaded = make_upstash_store(chunk_bytes=4096).sync("default:fake:8:wide", None, None)
    assert rt.take() == {"/pipeline": 1, "/": 4}  # 39+11 | 39+11 | 20 records
    assert ids(loaded.records) == [e.id for e in more]


def test_incremental_sync_across_segment_boundaries(
    upstash: UpstashStandIn, make_upstash_store: MakeStore
) -> None:
    writer = make_upstash_store(segment_bytes=TINY)
    every = make_upstash_store()  # syncs after each put
    batched = make_upstash_store()  # syncs after every 4 puts
    cursor = every.sync(NS, None, None).cursor
    batched_cursor = batched.sync(NS, None, None).cursor
    seen: list[str] = []
    seen_batched: list[str] = []
    written: list[str] = []
    for i in range(30):
        e = entry(f"p{i}")
        writer.put(e, unit(e.id))
        written.append(e.id)
        rt = Requests(upstash)
        result = every.sync(NS, None, cursor)
        # crossing into a new segment costs one more GETRANGE, once per segment
        crossed = i % PER_SEGMENT == 0 and i > 0
        assert rt.take() == ({"/pipeline": 1, "/": 1} if crossed else {"/pipeline": 1})
        assert ids(result.records) == [e.id] and result.reset is False
        cursor = result.cursor
        seen += ids(result.records)
        if i % 4 == 3:
            batch = batched.sync(NS, None, batched_cursor)
            batched_cursor = batch.cursor
            seen_batched += ids(batch.records)
    seen_batched += ids(batched.sync(NS, None, batched_cursor).records)
    assert seen == written and seen_batched == written
    assert divmod(cursor.offset, SEGMENT_STRIDE) == (3, 3 * RECORD_CHARS)


def test_concurrent_writers_across_segment_boundaries_lose_nothing(
    make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    writers, per_writer = 4, 30
    written: set[str] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []
    done = threading.Event()
    streamed: list[str] = []

    def write(i: int) -> None:
        store = make_upstash_store(segment_bytes=TINY)
        try:
            for j in range(per_writer):
                e = entry(f"w{i}-{j}")
                store.put(e, unit(e.id))
                with lock:
                    written.add(e.id)
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:  # an incremental reader while the writers cross boundaries
        store = make_upstash_store()
        try:
            cursor = None
            while True:
                finished = done.is_set()
                result = store.sync(NS, None, cursor)
                assert not result.reset or cursor is None
                cursor = result.cursor
                streamed.extend(ids(result.records))
                if finished:
                    return
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    assert errors == []

    nsid = UpstashStore.namespace_id(NS)
    stored = segments(redis_client, nsid, "0.0")
    total = writers * per_writer
    full, rest = divmod(total, PER_SEGMENT)
    assert [len(s) for s in stored] == [PER_SEGMENT * RECORD_CHARS] * full + (
        [rest * RECORD_CHARS] if rest else []
    )
    cold = make_upstash_store(chunk_bytes=4096).sync(NS, None, None).records
    assert sorted(ids(cold)) == sorted(written) and len(cold) == total
    assert sorted(streamed) == sorted(written) and len(streamed) == total


def test_deletes_and_compaction_across_segments(
    make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    store = make_upstash_store(segment_bytes=TINY)
    written = [entry(f"p{i}") for i in range(40)]
    for e in written:
        store.put(e, unit(e.id))
    for e in written[::4]:  # 10 tombstones, appended across the segments too
        assert store.delete(e.id) is True
    nsid = store.namespace_id(NS)
    assert len(segments(redis_client, nsid, "0.0")) == 6  # 50 records: 9 a segment
    reader = make_upstash_store()
    before = reader.sync(NS, None, None)
    assert len(before.records) == 50

    assert store.compact() == 20  # 10 vectors and their 10 tombstones
    generation = f"0.{redis_client.get(f'pc:gen:{nsid}').decode()}"
    live = [e.id for i, e in enumerate(written) if i % 4]
    stored = segments(redis_client, nsid, generation)  # the old log is gone, every segment
    assert [len(s) // RECORD_CHARS for s in stored] == [9, 9, 9, 3]
    assert redis_client.keys(f"pc:seg:{nsid}:0.0") == []
    for s in range(4):  # the switch made the staging keys permanent
        suffix = f":{s}" if s else ""
        assert redis_client.pttl(f"pc:log:{nsid}:{generation}{suffix}") == -1
    assert redis_client.pttl(f"pc:seg:{nsid}:{generation}") == -1
    resumed = reader.sync(NS, None, before.cursor)
    assert resumed.reset is True and ids(resumed.records) == live
    assert ids(make_upstash_store(chunk_bytes=4096).sync(NS, None, None).records) == live


def test_compaction_carries_over_records_appended_across_segments(
    make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    store = make_upstash_store(segment_bytes=TINY)
    written = [entry(f"p{i}") for i in range(12)]
    for e in written:
        store.put(e, unit(e.id))
    store.delete(written[0].id)
    other = make_upstash_store(segment_bytes=TINY)
    late = [entry(f"late{i}") for i in range(20)]
    real_write = store._write_log

    def write_then_append(key: str, records, dim: int) -> None:  # type: ignore[no-untyped-def]
        real_write(key, records, dim)
        for e in late:  # meanwhile, into the old log: across two more segments
            other.put(e, unit(e.id))

    store._write_log = write_then_append  # type: ignore[method-assign]
    assert store.compact() == 2
    nsid = store.namespace_id(NS)
    generation = f"0.{redis_client.get(f'pc:gen:{nsid}').decode()}"
    expected = [e.id for e in written[1:]] + [e.id for e in late]
    stored = segments(redis_client, nsid, generation)
    assert [len(s) // RECORD_CHARS for s in stored] == [9, 9, 9, 4]
    assert [r.entry_id for s in stored for r in decode_records(s)[0]] == expected
    assert ids(make_upstash_store().sync(NS, None, None).records) == expected


def test_a_losing_compaction_drops_every_staging_segment(
    make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    store = make_upstash_store(segment_bytes=TINY)
    written = [entry(f"p{i}") for i in range(30)]
    for e in written:
        store.put(e, unit(e.id))
    store.delete(written[0].id)
    rival = make_upstash_store(segment_bytes=TINY)
    real_write = store._write_log

    def write_then_lose(key: str, records, dim: int) -> None:  # type: ignore[no-untyped-def]
        real_write(key, records, dim)
        if not getattr(write_then_lose, "done", False):
            write_then_lose.done = True  # type: ignore[attr-defined]
            assert len(redis_client.keys("pc:seg:*")) == 2  # the staging log has 4 segments
            assert rival.compact() == 2  # ...and wins the switch

    store._write_log = write_then_lose  # type: ignore[method-assign]
    assert store.compact() == 0  # then finds nothing left to drop
    nsid = store.namespace_id(NS)
    generation = f"0.{redis_client.get(f'pc:gen:{nsid}').decode()}"
    stored = segments(redis_client, nsid, generation)  # no other log key is left
    assert [len(s) // RECORD_CHARS for s in stored] == [9, 9, 9, 2]
    assert [k.decode() for k in redis_client.keys("pc:seg:*")] == [f"pc:seg:{nsid}:{generation}"]


def test_a_stale_writer_leaves_no_old_segment_behind(
    make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    stale = make_upstash_store(segment_bytes=TINY)
    written = [entry(f"p{i}") for i in range(20)]
    for e in written:
        stale.put(e, unit(e.id))  # learns generation 0.0, three segments
    compactor = make_upstash_store(segment_bytes=TINY)
    compactor.delete(written[5].id)
    assert compactor.compact() == 2
    late = entry("late")
    stale.put(late, unit(late.id))  # into the old log first, then again into the new one
    nsid = stale.namespace_id(NS)
    generation = f"0.{redis_client.get(f'pc:gen:{nsid}').decode()}"
    segments(redis_client, nsid, generation)  # no key of generation 0.0 is left
    assert redis_client.keys(f"pc:seg:{nsid}:0.0") == []
    expected = [e.id for i, e in enumerate(written) if i != 5] + [late.id]
    assert ids(make_upstash_store().sync(NS, None, None).records) == expected


def test_clear_drops_every_segment(
    make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    store = make_upstash_store(segment_bytes=TINY)
    for i in range(25):
        e = entry(f"p{i}")
        store.put(e, unit(e.id))
    assert store.clear() == 25
    assert redis_client.keys("pc:log:*") == [] and redis_client.keys("pc:seg:*") == []
    e = entry("after")
    store.put(e, unit(e.id))
    assert ids(make_upstash_store().sync(NS, None, None).records) == [e.id]


def test_round_trips_through_the_core_with_tiny_segments(
    upstash: UpstashStandIn, make_upstash_store: MakeStore, redis_client: redis.Redis
) -> None:
    """Exact hit: 1 round trip; semantic hit: 2; a miss as many as with one-segment logs, with
    the log already spread over segments."""
    base = unit("reset password")
    fixed = {
        "how do i reset my password?": base,
        "how can i reset my password?": blend(base, unit("x"), 0.95),
    }

    def trips(segment_bytes: int, tenant: str) -> tuple[str, list[tuple[Tier, Counter[str]]]]:
        store = make_upstash_store(segment_bytes=segment_bytes)
        cache = PromptCache(
            store=store, embedder=FakeEmbedder(fixed), stats=MemoryStats(), llm=FakeLLM(),
            ttl_seconds=600,
        )  # fmt: skip

        def request(prompt: str) -> ChatRequest:
            return ChatRequest(messages=(Message("user", prompt),), model="m", tenant=tenant)

        ns = cache.entry_namespace(request("x"))
        for i in range(20):  # segments of 9, 9 and 2 records
            e = entry(f"filler {i}", ns=ns)
            store.put(e, unit(f"filler {i}"))  # not unit(e.id): a random one may match the prompt
        cache.chat(request("warm up"))
        out = []
        for prompt in ("How do I reset my password?",) * 2 + ("How can I reset my password?",):
            rt = Requests(upstash)
            result = cache.chat(request(prompt))
            out.append((result.tier, rt.take()))
        return ns, out

    ns, segmented = trips(TINY, "segmented")
    assert len(segments(redis_client, UpstashStore.namespace_id(ns), "0.0")) == 3
    assert segmented == trips(2**30, "whole")[1]
    assert [tier for tier, _ in segmented] == [Tier.MISS, Tier.EXACT, Tier.SEMANTIC]
    assert segmented[1][1] == {"/pipeline": 1}
    assert segmented[2][1] == {"/pipeline": 1, "/": 1}
