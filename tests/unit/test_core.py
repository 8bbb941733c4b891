from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from promptcache import (
    CacheMode,
    ChatRequest,
    Message,
    PromptCache,
    StoreError,
    Tier,
    UpstreamError,
    UpstreamNotConfigured,
)
from promptcache.adapters.memory import MemoryStats, MemoryStore
from tests.unit.fakes import FakeEmbedder, FakeLLM, blend, unit


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def req(prompt: str, **kw: object) -> ChatRequest:
    messages = kw.pop("messages", None) or (Message("user", prompt),)
    return ChatRequest(messages=messages, model=str(kw.pop("model", "m")), **kw)  # type: ignore[arg-type]


@pytest.fixture
def parts() -> tuple[PromptCache, FakeEmbedder, FakeLLM, MemoryStore, Clock]:
    clock = Clock()
    base = unit("reset password")
    embedder = FakeEmbedder(
        {
            "how do i reset my password?": base,
            "how can i reset my password?": blend(base, unit("x"), 0.95),
            "how do i reset my router?": blend(base, unit("y"), 0.80),
            "reset 2 passwords": blend(base, unit("z"), 0.97),
            "reset 3 passwords": blend(base, unit("w"), 0.97),
        }
    )
    llm = FakeLLM()
    store = MemoryStore(clock=clock)
    cache = PromptCache(
        store=store,
        embedder=embedder,
        stats=MemoryStats(),
        llm=llm,
        clock=clock,
        ttl_seconds=100,
        guards=[lambda q, c: "numbers differ" if ("2" in q) != ("2" in c) else None],
    )
    return cache, embedder, llm, store, clock


def test_tiers(parts) -> None:  # type: ignore[no-untyped-def]
    cache, embedder, llm, _, _ = parts
    miss = cache.chat(req("How do I reset my password?"))
    assert miss.tier is Tier.MISS and llm.calls == 1 and miss.entry_id
    calls = embedder.calls
    exact = cache.chat(req("  How do I   reset my password? "))
    assert exact.tier is Tier.EXACT and exact.similarity == 1.0 and exact.entry_id == miss.entry_id
    assert embedder.calls == calls  # exact tier: no embedding
    semantic = cache.chat(req("How can I reset my password?"))
    assert semantic.tier is Tier.SEMANTIC
    assert semantic.similarity == pytest.approx(0.95, abs=1e-5)
    assert semantic.response == miss.response and semantic.usage.total_tokens == 0
    assert cache.chat(req("How do I reset my router?")).tier is Tier.MISS
    assert llm.calls == 2
    report = cache.report()
    assert report["hits"] == {"exact": 1, "semantic": 1, "total": 2}
    assert report["misses"] == 2 and report["entries"] == 2
    assert report["tokens_saved"] == 60 and report["hit_rate"] == 0.5
    assert report["models"]["m"]["requests"] == 4


def test_threshold_override_per_request(parts) -> None:  # type: ignore[no-untyped-def]
    cache, *_ = parts
    cache.chat(req("How do I reset my password?"))
    assert cache.chat(req("How do I reset my router?", threshold=0.75)).tier is Tier.SEMANTIC
    assert cache.chat(req("How can I reset my password?", threshold=0.99)).tier is Tier.MISS


def test_guard_rejects_a_close_candidate(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, llm, _, _ = parts
    cache.chat(req("reset 3 passwords"))
    assert cache.chat(req("reset 2 passwords")).tier is Tier.MISS
    assert llm.calls == 2


def test_ttl_expiry(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, llm, _, clock = parts
    cache.chat(req("How do I reset my password?", ttl=10))
    clock.now += 9
    assert cache.chat(req("How can I reset my password?")).tier is Tier.SEMANTIC
    clock.now += 2
    assert cache.chat(req("How do I reset my password?")).tier is Tier.MISS
    assert llm.calls == 2


def test_forget_removes_an_entry_from_both_tiers(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, llm, store, _ = parts
    first = cache.chat(req("How do I reset my password?"))
    assert cache.chat(req("How can I reset my password?")).tier is Tier.SEMANTIC  # index loaded
    assert cache.entry("default", first.entry_id) == store.get(first.entry_id)
    removed = cache.forget("default", first.entry_id)
    assert removed is not None and removed.id == first.entry_id
    assert removed.prompt == "How do I reset my password?"
    assert store.get(first.entry_id) is None and cache.entry("default", first.entry_id) is None
    # the paraphrase no longer finds it (the in-process index dropped it), nor does the prompt
    assert cache.chat(req("How can I reset my password?")).tier is Tier.MISS
    again = cache.chat(req("How do I reset my password?"))  # matches the paraphrase's answer
    assert again.tier is Tier.SEMANTIC and again.entry_id != first.entry_id
    assert llm.calls == 2
    assert cache.forget("default", first.entry_id) is None  # already gone


def test_forget_only_within_the_tenant(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, _, store, _ = parts
    theirs = cache.chat(req("How do I reset my password?", tenant="acme:eu"))
    assert cache.forget("acme", theirs.entry_id) is None  # a tenant that is a prefix of theirs
    assert cache.forget("default", theirs.entry_id) is None
    assert cache.forget("acme:eu", "0" * 32) is None
    assert store.get(theirs.entry_id) is not None
    assert cache.entry("acme", theirs.entry_id) is None
    assert cache.forget("acme:eu", theirs.entry_id) is not None


def test_expired_entries_are_invisible(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, _, _, clock = parts
    entry_id = cache.chat(req("How do I reset my password?", ttl=10)).entry_id
    assert cache.entry("default", entry_id) is not None
    clock.now += 10
    assert cache.entry("default", entry_id) is None
    assert cache.forget("default", entry_id) is None


def test_forget_surfaces_a_store_failure(parts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cache, _, _, store, _ = parts
    entry_id = cache.chat(req("How do I reset my password?")).entry_id

    def down(entry_id: str) -> None:
        raise OSError("connection reset")

    monkeypatch.setattr(store, "get", down)
    with pytest.raises(StoreError, match="connection reset"):
        cache.forget("default", entry_id)
    monkeypatch.undo()
    assert store.get(entry_id) is not None  # nothing lost


def test_namespaces_separate_models_params_and_context(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, llm, _, _ = parts
    cache.chat(req("How do I reset my password?"))
    assert cache.chat(req("How do I reset my password?", model="other")).tier is Tier.MISS
    assert cache.chat(req("How do I reset my password?", temperature=0.7)).tier is Tier.MISS
    assert cache.chat(req("How do I reset my password?", max_tokens=5)).tier is Tier.MISS
    context = (
        Message("system", "You are a pirate."),
        Message("user", "How do I reset my password?"),
    )
    assert cache.chat(req("", messages=context)).tier is Tier.MISS
    assert cache.chat(req("", messages=context)).tier is Tier.EXACT
    assert llm.calls == 5


def test_cache_modes(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, llm, store, _ = parts
    first = cache.chat(req("How do I reset my password?"))
    skipped = cache.chat(req("How do I reset my password?", cache=CacheMode.SKIP))
    assert skipped.tier is Tier.BYPASS and skipped.bypass_reason == "cache=skip"
    assert store.count() == 1
    refreshed = cache.chat(req("How do I reset my password?", cache=CacheMode.REFRESH))
    assert refreshed.tier is Tier.MISS and refreshed.entry_id != first.entry_id
    assert store.count() == 1 and store.get(first.entry_id or "") is None
    again = cache.chat(req("How can I reset my password?"))
    assert again.entry_id == refreshed.entry_id  # the replaced entry never answers again
    assert llm.calls == 3


def test_single_flight(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, llm, _, _ = parts
    llm.delay = 0.2
    barrier = threading.Barrier(10)

    def one(_: int):  # type: ignore[no-untyped-def]
        barrier.wait()
        return cache.chat(req("How do I reset my password?"))

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(10)))
    assert llm.calls == 1
    assert sorted(r.tier.value for r in results).count("miss") == 1
    assert len({r.entry_id for r in results}) == 1


def test_single_flight_shares_failures(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, llm, store, _ = parts
    llm.delay, llm.fail = 0.2, UpstreamError("down")
    barrier = threading.Barrier(5)

    def one(_: int) -> str:
        barrier.wait()
        try:
            cache.chat(req("How do I reset my password?"))
        except UpstreamError as exc:
            return exc.code
        return "ok"

    with ThreadPoolExecutor(5) as pool:
        assert set(pool.map(one, range(5))) == {"upstream_error"}
    assert llm.calls == 1 and store.count() == 0


class BrokenStore(MemoryStore):
    def sync(self, *a, **k):  # type: ignore[no-untyped-def]
        raise StoreError("store is down")

    def put(self, *a, **k):  # type: ignore[no-untyped-def]
        raise StoreError("store is down")


def test_store_failure_bypasses() -> None:
    llm = FakeLLM()
    cache = PromptCache(store=BrokenStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)
    result = cache.chat(req("anything"))
    assert result.tier is Tier.BYPASS and "store is down" in (result.bypass_reason or "")
    assert result.response.startswith("answer 1")
    assert cache.report()["bypasses"] == 1


def test_store_failure_on_write_still_answers() -> None:
    class WriteBroken(MemoryStore):
        def put(self, *a, **k):  # type: ignore[no-untyped-def]
            raise StoreError("disk full")

    cache = PromptCache(
        store=WriteBroken(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=FakeLLM()
    )
    result = cache.chat(req("anything"))
    assert result.tier is Tier.BYPASS and "disk full" in (result.bypass_reason or "")


def test_embedder_failure_bypasses_but_exact_hits_still_work(parts) -> None:  # type: ignore[no-untyped-def]
    cache, embedder, llm, _, _ = parts
    cache.chat(req("How do I reset my password?"))
    embedder.fail = True
    assert cache.chat(req("How do I reset my password?")).tier is Tier.EXACT
    result = cache.chat(req("How can I reset my password?"))
    assert result.tier is Tier.BYPASS and "embedder" in (result.bypass_reason or "")
    assert llm.calls == 2


def test_upstream_failure_stores_nothing(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, llm, store, _ = parts
    llm.fail = UpstreamError("boom")
    with pytest.raises(UpstreamError):
        cache.chat(req("How do I reset my password?"))
    assert store.count() == 0


def test_no_upstream_configured_serves_hits_and_says_so(parts) -> None:  # type: ignore[no-untyped-def]
    first, embedder, _, store, clock = parts
    first.chat(req("How do I reset my password?"))
    cache = PromptCache(store=store, embedder=embedder, stats=MemoryStats(), clock=clock)
    assert cache.chat(req("How can I reset my password?")).tier is Tier.SEMANTIC
    with pytest.raises(UpstreamNotConfigured, match="^no LLM upstream is configured"):
        cache.chat(req("Something new"))
    with pytest.raises(UpstreamNotConfigured):
        cache.chat_stream(req("Something new"))
    hinted = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm_hint="set X_URL"
    )
    with pytest.raises(UpstreamNotConfigured, match="cannot be answered: set X_URL$"):
        hinted.chat(req("Something new"))
    llm = next(c for c in hinted.health()[1] if c.name == "llm")
    assert not llm.ok and llm.detail == "not configured: set X_URL"


def test_the_composition_root_names_the_settings_of_a_model() -> None:
    from promptcache import Settings, runtime

    env = {"PROMPTCACHE_STORE": "memory", "PROMPTCACHE_LLM": "none"}
    cache = runtime.build(Settings.from_env(env))
    with pytest.raises(UpstreamNotConfigured, match="set OPENAI_BASE_URL .* CLOUDFLARE_API_TOKEN"):
        cache.chat(req("Something new"))
    llm = next(c for c in cache.health()[1] if c.name == "llm")
    assert "OPENAI_BASE_URL" in llm.detail


def test_stats_failure_never_breaks_an_answer(parts) -> None:  # type: ignore[no-untyped-def]
    _, embedder, llm, store, _ = parts

    class BrokenStats(MemoryStats):
        def add(self, counters):  # type: ignore[no-untyped-def]
            raise RuntimeError("stats down")

    cache = PromptCache(store=store, embedder=embedder, stats=BrokenStats(), llm=llm)
    assert cache.chat(req("How do I reset my password?")).tier is Tier.MISS


def test_index_follows_deletes_from_other_writers(parts) -> None:  # type: ignore[no-untyped-def]
    cache, embedder, llm, store, clock = parts
    first = cache.chat(req("How do I reset my password?"))
    other = PromptCache(store=store, embedder=embedder, stats=MemoryStats(), llm=llm, clock=clock)
    assert other.chat(req("How can I reset my password?")).tier is Tier.SEMANTIC
    store.delete(first.entry_id or "")
    assert other.chat(req("How can I reset my password?")).tier is Tier.MISS


def test_health(parts) -> None:  # type: ignore[no-untyped-def]
    cache, embedder, *_ = parts
    ok, checks = cache.health()
    assert ok and {c.name for c in checks} == {"store", "embedder", "stats", "llm"}
    calls = embedder.calls
    cache.health()
    assert embedder.calls == calls  # a recent embedder probe is reused: health costs no embedding
    embedder.fail = True
    fresh = PromptCache(
        store=MemoryStore(), embedder=embedder, stats=MemoryStats(), probe_max_age=0.0
    )
    ok, checks = fresh.health()
    assert ok  # the cache can still answer exact hits
    assert not next(c for c in checks if c.name == "embedder").ok

    broken = PromptCache(store=BrokenStoreHealth(), embedder=embedder, stats=MemoryStats())
    assert broken.health()[0] is False


class BrokenStoreHealth(MemoryStore):
    def ping(self) -> None:
        raise StoreError("unreachable")


def test_store_answer_and_vectors_are_unit(parts) -> None:  # type: ignore[no-untyped-def]
    cache, *_ = parts
    from promptcache import Completion, Usage

    entry = cache.store_answer(
        req("How do I reset my password?"), Completion("stored", "m", Usage())
    )
    hit = cache.chat(req("How can I reset my password?"))
    assert hit.entry_id == entry.id and hit.response == "stored"
    assert np.isclose(np.linalg.norm(unit("a")), 1.0)


def test_prompts_longer_than_the_embedder_reads_use_the_exact_tier_only() -> None:
    class TruncatingEmbedder(FakeEmbedder):
        max_input_chars = 100

        def embed(self, texts):  # type: ignore[no-untyped-def]
            return super().embed([t[:100] for t in texts])  # sees only the first 100 characters

    embedder = TruncatingEmbedder()
    llm = FakeLLM()
    cache = PromptCache(store=MemoryStore(), embedder=embedder, stats=MemoryStats(), llm=llm)
    preamble = "Here is a long shared document. " * 10
    assert cache.chat(req(preamble + "Summarize it.")).tier is Tier.MISS
    assert cache.chat(req(preamble + "Translate it into French.")).tier is Tier.MISS
    assert cache.chat(req(preamble + "Summarize it.")).tier is Tier.EXACT
    assert embedder.calls == 0 and llm.calls == 2


def test_the_verifier_checks_only_borderline_candidates() -> None:
    base = unit("capital")
    embedder = FakeEmbedder(
        {
            "stored question": base,
            "clear match": blend(base, unit("a"), 0.99),
            "borderline match": blend(base, unit("b"), 0.91),
        }
    )
    seen: list[str] = []

    def strict(query: str, candidate: str) -> str:
        seen.append(query)
        return "verifier says no"

    cache = PromptCache(
        store=MemoryStore(), embedder=embedder, stats=MemoryStats(), llm=FakeLLM(),
        threshold=0.9, strict_guards=[strict], strict_guards_band=0.04,
    )  # fmt: skip
    cache.chat(req("stored question"))
    assert cache.chat(req("clear match")).tier is Tier.SEMANTIC  # 0.99 >= 0.9 + 0.04: not checked
    assert cache.chat(req("borderline match")).tier is Tier.MISS  # 0.91 < 0.94: checked, rejected
    assert seen == ["borderline match"]


@pytest.mark.parametrize("streamed", [False, True])
def test_identical_misses_in_two_caches_sharing_a_store_make_one_model_call(streamed: bool) -> None:
    """Two processes (two PromptCache objects) on one store: the fill lock in the store."""
    store, llm = MemoryStore(), FakeLLM(delay=0.3)
    caches = [
        PromptCache(store=store, embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)
        for _ in range(2)
    ]
    barrier = threading.Barrier(2)

    def ask(cache: PromptCache) -> tuple[str, str]:
        barrier.wait()
        request = req("what is a fill lock?")
        if not streamed:
            result = cache.chat(request)
            return result.tier.value, result.response
        stream = cache.chat_stream(request)
        return stream.tier.value, "".join(stream)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(ask, caches))
    assert llm.calls == 1
    assert sorted(tier for tier, _ in results) == ["exact", "miss"]
    assert results[0][1] == results[1][1]
    from promptcache._keys import exact_key, namespace

    request = req("what is a fill lock?")
    key = exact_key(namespace(request, "fake", 8), request.prompt)
    assert store.try_lock(f"fill:{key}", "someone-else", 1)  # released: no stale lock left


class StoreWithoutLocks:
    """Only the Store protocol (entries, exact keys, vector log): no Locks, no RateWindows."""

    def __init__(self, inner: MemoryStore) -> None:
        self.sync, self.get, self.put, self.delete = inner.sync, inner.get, inner.put, inner.delete
        self.count, self.clear, self.ping = inner.count, inner.clear, inner.ping


def test_fill_locks_default_to_the_store_and_may_live_elsewhere() -> None:
    store = MemoryStore()
    assert PromptCache(store=store, embedder=FakeEmbedder(), stats=MemoryStats()).locks is store
    bare = StoreWithoutLocks(store)
    alone = PromptCache(store=bare, embedder=FakeEmbedder(), stats=MemoryStats(), llm=FakeLLM())
    assert alone.locks is None  # each process answers its own misses
    assert alone.chat(req("no locks")).tier is Tier.MISS
    assert alone.chat(req("no locks")).tier is Tier.EXACT

    # two processes sharing a store without locks, and locks kept elsewhere: one model call
    locks, llm = MemoryStore(), FakeLLM(delay=0.3)
    caches = [
        PromptCache(store=bare, embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm, locks=locks)
        for _ in range(2)
    ]
    barrier = threading.Barrier(2)

    def ask(cache: PromptCache) -> str:
        barrier.wait()
        return cache.chat(req("where do the locks live?")).tier.value

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(ask, caches)) == ["exact", "miss"]
    assert llm.calls == 1
    assert caches[0].locks is locks  # locks given explicitly win over the store's own
