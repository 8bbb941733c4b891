"""One contract, every Store: the same cases run against memory, SQLite and Upstash (through the
REST stand-in in front of a real redis-server)."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from promptcache import Documents, Entry, LogRecord, Store
from promptcache._types import ToolCall
from promptcache.adapters.memory import MemoryStore
from promptcache.adapters.sqlite import SQLiteStore
from tests.support import entries

DIM = 8
NS = "tenant:fake:8:contract"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    name: str
    clock: Clock
    _open: Callable[[], Store]
    _opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        """A handle on the same data, as another process would have."""
        store = self._open()
        self._opened.append(store)
        return store


@pytest.fixture(params=["memory", "sqlite", pytest.param("upstash", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    clock = Clock()
    if request.param == "memory":
        shared = MemoryStore(clock=clock)
        b = Backend("memory", clock, lambda: shared)
    elif request.param == "sqlite":
        path = tmp_path / "contract.sqlite3"
        b = Backend("sqlite", clock, lambda: SQLiteStore(path, clock=clock))
    else:
        make = request.getfixturevalue("make_upstash_store")
        b = Backend("upstash", clock, lambda: make(clock=clock, chunk_bytes=4096))
    yield b
    for store in b._opened:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def vec(seed: str) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(seed)) % 2**32)
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def make_entry(
    clock: Clock, prompt: str, *, ns: str = NS, ttl: float | None = None, key: str | None = None
) -> Entry:
    """The tests' one factory (tests/support/entries.py) at the contract's clock, with an answer
    that is not ASCII: every store keeps UTF-8 as it is."""
    return entries.make_entry(
        prompt, ns=ns, ttl=ttl, now=clock(), key=key, response=f"answer to {prompt} \u2713"
    )


def put(store: Store, entry: Entry) -> np.ndarray:
    v = vec(entry.id)
    store.put(entry, v)
    return v


def replay(records: tuple[LogRecord, ...] | list[LogRecord]) -> dict[str, LogRecord]:
    """What an index holds after applying records in order."""
    live: dict[str, LogRecord] = {}
    for r in records:
        if r.vector is None:
            live.pop(r.entry_id, None)
        else:
            live[r.entry_id] = r
    return live


# ---------------------------------------------------------------------------------------------
def test_put_then_get(backend: Backend) -> None:
    store = backend.open()
    entry = make_entry(backend.clock, "hello", ttl=3600)
    put(store, entry)
    assert store.get(entry.id) == entry
    assert backend.open().get(entry.id) == entry
    assert store.get(uuid.uuid4().hex) is None


def test_an_answer_with_tool_calls_and_reasoning_blocks_reads_back_whole(
    backend: Backend,
) -> None:
    store = backend.open()
    entry = dataclasses.replace(
        make_entry(backend.clock, "what is 2 + 2?", ttl=3600),
        tool_calls=(ToolCall("add", '{"a": 2, "b": 2}'),),
        finish_reason="tool_calls",
        thinking=({"type": "thinking", "thinking": "add them", "signature": "c2ln"},),
        stop_sequence="\n\n",
    )
    put(store, entry)
    assert backend.open().get(entry.id) == entry


def test_exact_lookup_rides_on_sync(backend: Backend) -> None:
    store = backend.open()
    entry = make_entry(backend.clock, "hello")
    put(store, entry)
    assert store.sync(NS, entry.exact_key, None).exact == entry
    assert store.sync(NS, "key-other", None).exact is None
    assert store.sync("tenant:fake:8:elsewhere", entry.exact_key, None).exact is None
    assert store.sync(NS, None, None).exact is None


def test_entry_without_vector_is_exact_only(backend: Backend) -> None:
    store = backend.open()
    entry = make_entry(backend.clock, "no vector")
    store.put(entry, None)
    result = store.sync(NS, entry.exact_key, None)
    assert result.exact == entry
    assert result.records == ()
    assert store.delete(entry.id) is True
    assert store.sync(NS, entry.exact_key, None).exact is None


def test_sync_is_incremental(backend: Backend) -> None:
    store = backend.open()
    first = store.sync(NS, None, None)
    assert first.reset is True
    assert first.records == ()

    a = make_entry(backend.clock, "a", ttl=60)
    va = put(store, a)
    one = store.sync(NS, None, first.cursor)
    assert one.reset is False
    assert [r.entry_id for r in one.records] == [a.id]
    np.testing.assert_array_equal(one.records[0].vector, va)
    assert one.records[0].expires_at == a.expires_at

    b, c = make_entry(backend.clock, "b"), make_entry(backend.clock, "c")
    put(store, b)
    put(store, c)
    put(store, make_entry(backend.clock, "other namespace", ns="tenant:fake:8:other"))
    two = store.sync(NS, None, one.cursor)
    assert [r.entry_id for r in two.records] == [b.id, c.id]
    assert two.records[0].expires_at is None

    idle = store.sync(NS, None, two.cursor)
    assert idle.records == ()
    assert idle.reset is False
    assert idle.cursor == two.cursor

    fresh = backend.open().sync(NS, None, None)
    assert fresh.reset is True
    assert [r.entry_id for r in fresh.records] == [a.id, b.id, c.id]


def test_delete_appends_a_tombstone(backend: Backend) -> None:
    store = backend.open()
    a, b = make_entry(backend.clock, "a"), make_entry(backend.clock, "b")
    put(store, a)
    put(store, b)
    before = store.sync(NS, None, None)

    assert store.delete(a.id) is True
    assert store.delete(a.id) is False
    assert store.delete(uuid.uuid4().hex) is False
    assert store.get(a.id) is None

    after = store.sync(NS, a.exact_key, before.cursor)
    assert after.exact is None
    assert [(r.entry_id, r.vector) for r in after.records] == [(a.id, None)]
    assert set(replay(backend.open().sync(NS, None, None).records)) == {b.id}


def test_replacing_an_answer_keeps_the_newer_exact_key(backend: Backend) -> None:
    """cache=refresh stores the new answer, then deletes the old one."""
    store = backend.open()
    old = make_entry(backend.clock, "q", key="key-q")
    put(store, old)
    new = make_entry(backend.clock, "q", key="key-q")
    put(store, new)
    assert store.delete(old.id) is True
    assert store.sync(NS, "key-q", None).exact == new
    assert set(replay(store.sync(NS, None, None).records)) == {new.id}


def test_ttl_expiry(backend: Backend) -> None:
    store = backend.open()
    short = make_entry(backend.clock, "short", ttl=10)
    forever = make_entry(backend.clock, "forever")
    put(store, short)
    put(store, forever)
    assert store.count() == 2
    records = store.sync(NS, None, None).records
    assert {r.entry_id: r.expires_at for r in records} == {
        short.id: short.expires_at,
        forever.id: None,
    }

    backend.clock.advance(11)
    assert store.get(short.id) is None
    assert store.sync(NS, short.exact_key, None).exact is None
    assert store.count() == 1
    assert store.get(forever.id) == forever


def test_count(backend: Backend) -> None:
    store = backend.open()
    assert store.count() == 0
    entries = [make_entry(backend.clock, f"p{i}") for i in range(5)]
    for e in entries:
        put(store, e)
    assert store.count() == 5
    store.delete(entries[0].id)
    assert backend.open().count() == 4


def test_entries_pages_newest_first_skipping_the_expired(backend: Backend) -> None:
    store = backend.open()
    assert store.entries(0, 10) == []
    made = []
    for i in range(5):  # equal TTLs: creation order is expiry order, on every backend
        made.append(make_entry(backend.clock, f"p{i}", ttl=3600, ns=f"{NS}{i % 2}"))
        put(store, made[-1])
        backend.clock.advance(1)
    newest = list(reversed(made))
    other = backend.open()
    assert other.entries(0, 2) == newest[:2]
    assert other.entries(2, 2) == newest[2:4]
    assert other.entries(4, 2) == newest[4:]
    assert other.entries(5, 2) == [] and other.entries(0, 0) == []
    store.delete(made[4].id)
    assert other.entries(0, 10) == newest[1:]
    short = make_entry(backend.clock, "short", ttl=1)
    put(store, short)
    backend.clock.advance(2)
    assert short not in other.entries(0, 10) and len(other.entries(0, 10)) == 4


def test_clear_starts_a_new_generation(backend: Backend) -> None:
    store = backend.open()
    a, b = make_entry(backend.clock, "a"), make_entry(backend.clock, "b", ns="tenant:fake:8:two")
    put(store, a)
    put(store, b)
    reader = backend.open()
    before = reader.sync(NS, None, None)
    assert len(before.records) == 1

    assert store.clear() == 2
    after = reader.sync(NS, a.exact_key, before.cursor)
    assert after.reset is True
    assert after.records == ()
    assert after.exact is None
    assert after.cursor.generation != before.cursor.generation
    assert store.count() == 0
    assert store.get(a.id) is None

    c = make_entry(backend.clock, "c")
    put(store, c)
    assert [r.entry_id for r in reader.sync(NS, None, after.cursor).records] == [c.id]


def test_compaction_reloads_the_live_set(backend: Backend) -> None:
    store = backend.open()
    compact = getattr(store, "compact", None)
    if compact is None:
        pytest.skip(f"{backend.name} store keeps no log to compact")
    a, b = make_entry(backend.clock, "a"), make_entry(backend.clock, "b")
    c, d = make_entry(backend.clock, "c", ttl=5), make_entry(backend.clock, "d")
    vectors = {e.id: put(store, e) for e in (a, b, c, d)}
    store.delete(b.id)
    backend.clock.advance(6)
    reader = backend.open()
    before = reader.sync(NS, None, None)
    assert len(before.records) == 5  # four vectors and a tombstone

    compact()
    after = reader.sync(NS, d.exact_key, before.cursor)
    assert after.reset is True
    assert after.exact == d
    assert sorted(r.entry_id for r in after.records) == sorted([a.id, d.id])
    for r in after.records:
        assert r.vector is not None
        np.testing.assert_array_equal(r.vector, vectors[r.entry_id])

    e = make_entry(backend.clock, "e")
    put(store, e)
    assert [r.entry_id for r in reader.sync(NS, None, after.cursor).records] == [e.id]
    assert store.get(a.id) == a


def test_concurrent_writers_lose_nothing(backend: Backend) -> None:
    writers, per_writer = 6, 40
    stores = [backend.open() for _ in range(writers)]
    written: list[list[str]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(i: int) -> None:
        try:
            start.wait()
            for j in range(per_writer):
                e = make_entry(backend.clock, f"w{i}-{j}")
                put(stores[i], e)
                written[i].append(e.id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    ids = [r.entry_id for r in backend.open().sync(NS, None, None).records]
    expected = {i for w in written for i in w}
    assert len(ids) == len(expected) == writers * per_writer  # every entry exactly once
    assert set(ids) == expected
    assert backend.open().count() == writers * per_writer


def test_count_window_counts_across_handles_and_expires(backend: Backend) -> None:
    """Rate-limit windows: every handle (process) adds to one counter, which starts at 1, reads
    its predecessor, and is gone once its ttl has passed (real time for Redis, the clock for the
    others: both advance here)."""
    a, b = backend.open(), backend.open()
    assert a.count_window("rate:t:101", "rate:t:100", ttl=0.3) == (1, 0)
    assert b.count_window("rate:t:101", "rate:t:100", ttl=0.3) == (2, 0)
    assert a.count_window("rate:t:102", "rate:t:101", ttl=0.3) == (1, 2)
    assert b.count_window("rate:u:101", "rate:u:100", ttl=0.3) == (1, 0)  # another tenant
    backend.clock.advance(0.35)
    time.sleep(0.35)
    assert a.count_window("rate:t:101", "rate:t:100", ttl=0.3) == (1, 0)  # expired: anew
    assert b.count_window("rate:t:103", "rate:t:102", ttl=0.3) == (1, 0)


def test_count_window_loses_no_count_under_concurrency(backend: Backend) -> None:
    stores = [backend.open() for _ in range(4)]

    def hammer(store: Store) -> None:
        for _ in range(25):
            store.count_window("rate:t:7", "rate:t:6", ttl=60.0)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].count_window("rate:t:7", "rate:t:6", ttl=60.0) == (201, 0)


# ---------------------------------------------------------------- kept documents
def test_a_kept_document_reads_back_whole_from_every_handle(backend: Backend) -> None:
    """Documents (the Responses face's kept responses): JSON in, the same JSON out, from any
    process; a name never kept is None; keeping again replaces."""
    a, b = backend.open(), backend.open()
    assert isinstance(a, Documents) and isinstance(b, Documents)
    document = {
        "response": {"id": "resp_1", "output": [{"type": "message", "text": "héllo ✓"}]},
        "turns": [["user", "hi", None], ["assistant", "", [["f", '{"x": 1}', "call_1"]]]],
        "n": 1.5,
        "none": None,
    }
    a.put_document("resp:t:1", document, 60.0)
    assert b.get_document("resp:t:1") == document
    assert b.get_document("resp:t:2") is None
    a.put_document("resp:t:1", {"v": 2}, None)
    assert b.get_document("resp:t:1") == {"v": 2}


def test_a_kept_document_expires_and_clear_forgets_it(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    assert isinstance(a, Documents) and isinstance(b, Documents)
    a.put_document("short", {"x": 1}, 0.3)
    a.put_document("long", {"x": 2}, 3600.0)
    a.put_document("forever", {"x": 3}, None)
    backend.clock.advance(0.35)
    time.sleep(0.35)  # Redis expires keys on its own clock
    assert b.get_document("short") is None
    assert b.get_document("long") == {"x": 2}
    backend.clock.advance(7200.0)
    assert b.get_document("long") is None or backend.name == "upstash"  # Redis: real time only
    assert b.get_document("forever") == {"x": 3}
    b.clear()
    assert a.get_document("forever") is None
