"""Bounded memory: live namespaces per process (least recently used index dropped, entries kept
in the store, reloaded on next use) and entries per namespace (least recently hit deleted)."""

from __future__ import annotations

import os

from promptcache import Bounds, ChatRequest, Message, PromptCache, Tier
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.index import VectorIndex
from tests.unit.fakes import FakeEmbedder, FakeLLM, unit

CHURN = int(os.environ.get("TEST_NAMESPACE_CHURN", "5000"))


def req(prompt: str, model: str = "m") -> ChatRequest:
    return ChatRequest(messages=(Message("user", prompt),), model=model)


def cache(bounds: Bounds, store: MemoryStore | None = None) -> tuple[PromptCache, FakeLLM]:
    llm = FakeLLM()
    built = PromptCache(
        store=store or MemoryStore(),
        embedder=FakeEmbedder(),
        stats=MemoryStats(),
        llm=llm,
        bounds=bounds,
    )
    return built, llm


def live(c: PromptCache) -> int:
    return len(c._indexes)


def test_churning_distinct_models_keeps_live_namespaces_under_the_cap() -> None:
    store = MemoryStore()
    c, llm = cache(Bounds(namespaces=32), store)
    for i in range(CHURN):
        assert c.chat(req("what is a monad?", model=f"model-{i}")).tier is Tier.MISS
        assert live(c) <= 32
    assert live(c) == 32
    assert store.count() == CHURN  # entries stay stored: only the in-memory indexes went
    assert llm.calls == CHURN


def test_an_evicted_namespace_reloads_from_the_store_on_next_use() -> None:
    c, llm = cache(Bounds(namespaces=2))
    c.chat(req("how do i reset my password?", model="a"))
    paraphrase = "how do i reset my password please?"
    c.embedder.fixed[paraphrase] = unit("how do i reset my password?")  # type: ignore[attr-defined]
    namespace_a = next(iter(c._indexes._namespaces))
    for other in ("b", "c", "d"):
        c.chat(req("hello", model=other))
    assert namespace_a not in c._indexes._namespaces and live(c) == 2
    calls = llm.calls
    hit = c.chat(req(paraphrase, model="a"))  # the semantic tier needs the reloaded index
    assert hit.tier is Tier.SEMANTIC and llm.calls == calls
    assert live(c) <= 2


def test_a_full_namespace_evicts_its_least_recently_hit_entries_first() -> None:
    store = MemoryStore()
    c, llm = cache(Bounds(entries=3), store)
    first = c.chat(req("q0"))
    for i in range(1, 3):
        c.chat(req(f"q{i}"))
    assert c.chat(req("q0")).tier is Tier.EXACT  # q0 used most recently: q1 is the oldest now
    c.chat(req("q3"))  # stored: 4 > 3, one goes
    c.chat(req("q4"))  # the sync of this request sees q3 arrive and evicts q1
    c.chat(req("q5"))  # ... and q2
    assert store.get(first.entry_id or "") is not None
    assert c.chat(req("q0")).tier is Tier.EXACT
    calls = llm.calls
    assert c.chat(req("q1")).tier is Tier.MISS  # evicted: asked again
    assert llm.calls == calls + 1
    assert store.count() <= 4  # the bound, plus the answer stored by the last request


def test_a_semantic_hit_counts_as_use() -> None:
    store = MemoryStore()
    c, _ = cache(Bounds(entries=2), store)
    base = c.chat(req("how do i reset my password?"))
    c.embedder.fixed["reset the password, how?"] = unit("how do i reset my password?")  # type: ignore[attr-defined]
    c.chat(req("other question"))
    assert c.chat(req("reset the password, how?")).tier is Tier.SEMANTIC
    c.chat(req("third question"))
    c.chat(req("fourth question"))
    assert store.get(base.entry_id or "") is not None  # hit last, so kept over "other question"


def test_a_bounded_namespace_that_turns_over_keeps_its_index_small() -> None:
    c, _ = cache(Bounds(entries=10))
    for i in range(3000):
        c.chat(req(f"question {i}"))
    state = c._indexes._namespaces[next(iter(c._indexes._namespaces))]
    assert len(state.index) <= 11
    assert state.index._size <= 1024 + 11  # removed rows were compacted away


def test_compacting_an_index_keeps_its_live_rows_searchable() -> None:
    index = VectorIndex(8, capacity=4)
    vectors = {f"e{i}": unit(f"v{i}") for i in range(3000)}
    index.add(list(vectors), __import__("numpy").stack(list(vectors.values())))
    for i in range(2900):
        index.remove(f"e{i}")
    index.compact_if_sparse()
    assert index._size == 100 and len(index) == 100
    for i in range(2900, 3000, 7):
        assert index.search(vectors[f"e{i}"], k=1)[0][0] == f"e{i}"
    assert index.search(vectors["e5"], k=1, min_score=0.999) == []


def test_stats_list_the_busiest_models_and_tenants_and_sum_the_rest() -> None:
    from promptcache._accounting import LISTED

    c, _ = cache(Bounds(namespaces=8))
    models = LISTED + 150
    for i in range(models):
        for _ in range(2 if i < 10 else 1):  # the first ten models are the busiest
            c.chat(req(f"q{i}", model=f"model-{i}"))
    for t in range(LISTED + 20):
        c.chat(ChatRequest(messages=(Message("user", "hi"),), model="m", tenant=f"t{t}"))
    report = c.report(tenants=[])
    assert len(report["models"]) == LISTED
    assert {f"model-{i}" for i in range(10)} <= set(report["models"])
    other = report["other_models"]
    assert other["models"] == models + 1 - LISTED
    listed = sum(m["requests"] for m in report["models"].values())
    assert listed + other["requests"] == report["requests"]  # nothing lost from the totals
    assert len(report["tenants"]) == LISTED
    assert report["other_tenants"]["tenants"] == LISTED + 21 - LISTED
    in_tenants = sum(t["requests"] for t in report["tenants"].values())
    assert in_tenants + report["other_tenants"]["requests"] == report["requests"]
    assert len(__import__("json").dumps(report)) < 200_000
