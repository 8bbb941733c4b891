"""One contract, every index choice: the semantic tier answers the same through the in-process
index (``process``), Redis's query engine (``redis``, HNSW and FLAT; a real Redis 8 with
RediSearch) and Upstash Vector (``upstash-vector``, the SDK against the REST stand-in over the
same real query engine). Each case goes through PromptCache's public methods, as the server
does; the entries live in one memory store, the vectors where the index keeps them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from promptcache import (
    LLM,
    ChatRequest,
    Completion,
    Index,
    Message,
    PromptCache,
    Tier,
    Usage,
)
from promptcache._tally import Guard
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.adapters.redis_index import RedisIndex
from promptcache.adapters.upstash_vector import UpstashVectorIndex
from tests.unit.fakes import FakeEmbedder, blend, unit

KINDS = [
    "process",
    pytest.param("redis-hnsw", marks=pytest.mark.integration),
    pytest.param("redis-flat", marks=pytest.mark.integration),
    pytest.param("upstash-vector", marks=pytest.mark.integration),
]
BASE = unit("base")
NEAR = blend(BASE, unit("near"), 0.95)  # a paraphrase: cosine 0.95 to BASE
FAR = blend(BASE, unit("far"), 0.80)  # below the 0.9 threshold


class Clock:
    """Wall-clock seconds a test moves by hand. Redis expires keys at real time: the clock
    starts in the future so that nothing expires before a test says so."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    kind: str
    clock: Clock
    store: MemoryStore
    _index: Callable[[], Index | None]
    caches: list[PromptCache] = field(default_factory=list)

    def cache(
        self,
        embedder: FakeEmbedder | None = None,
        llm: LLM | None = None,
        guards: Sequence[Guard] = (),
    ) -> PromptCache:
        """A PromptCache as another process would have (its own index state, same backends)."""
        cache = PromptCache(
            store=self.store,
            index=self._index(),
            embedder=embedder or FakeEmbedder(),
            stats=MemoryStats(),
            llm=llm,
            guards=guards,
            clock=self.clock,
            ttl_seconds=0,
        )
        self.caches.append(cache)
        return cache


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    clock = Clock()
    store = MemoryStore(clock=clock)
    clients: list[httpx.Client] = []
    indexes: list[RedisIndex] = []
    if request.param == "process":
        make: Callable[[], Index | None] = lambda: None  # noqa: E731
    elif request.param.startswith("redis-"):
        server = request.getfixturevalue("redis_server")
        request.getfixturevalue("redis_client")  # an empty Redis
        algorithm = request.param.removeprefix("redis-")

        def make() -> Index:
            indexes.append(RedisIndex(server.client(), algorithm=algorithm))
            return indexes[-1]

    else:
        standin = request.getfixturevalue("upstash_vector")

        def make() -> Index:
            client = httpx.Client(timeout=10.0)
            clients.append(client)
            return UpstashVectorIndex(client, standin.url, standin.token)

    yield Backend(request.param, clock, store, make)
    for client in clients:
        client.close()
    for index in indexes:
        index.close()


def ask(prompt: str, *, tenant: str = "t", model: str = "m", ttl: int | None = None) -> ChatRequest:
    return ChatRequest(messages=(Message("user", prompt),), model=model, tenant=tenant, ttl=ttl)


def keep(cache: PromptCache, prompt: str, vector: np.ndarray, **kw: object) -> str:
    """Store an answer to ``prompt`` with ``vector`` as its embedding; returns the entry id."""
    completion = Completion(f"answer: {prompt}", "m", Usage(1, 2))
    return cache.store_answer(ask(prompt, **kw), completion, vector=vector).id  # type: ignore[arg-type]


def semantic(cache: PromptCache, prompt: str, **kw: object) -> tuple[str, float] | None:
    hit, _ = cache.lookup(ask(prompt, **kw))  # type: ignore[arg-type]
    if hit is None:
        return None
    assert hit.tier is Tier.SEMANTIC, hit
    return hit.entry.id, hit.similarity


def embedder(**vectors: np.ndarray) -> FakeEmbedder:
    return FakeEmbedder({k.replace("_", " "): v for k, v in vectors.items()})


# ---------------------------------------------------------------------------------------------
def test_the_nearest_entry_at_or_above_the_threshold_answers_with_its_cosine(
    backend: Backend,
) -> None:
    cache = backend.cache(embedder(near_question=NEAR, far_question=FAR))
    entry_id = keep(cache, "stored question", BASE)
    found = semantic(cache, "near question")
    assert found is not None and found[0] == entry_id
    assert found[1] == pytest.approx(0.95, abs=1e-4)  # the cosine, whatever the engine reports
    assert semantic(cache, "far question") is None  # 0.80 < 0.9


def test_the_best_of_several_candidates_wins(backend: Backend) -> None:
    cache = backend.cache(embedder(question=BASE))
    keep(cache, "a", blend(BASE, unit("a"), 0.91))
    best = keep(cache, "b", blend(BASE, unit("b"), 0.99))
    keep(cache, "c", blend(BASE, unit("c"), 0.95))
    found = semantic(cache, "question")
    assert found is not None and found[0] == best
    assert found[1] == pytest.approx(0.99, abs=1e-4)


def test_a_guard_rejecting_the_best_lets_the_next_answer(backend: Backend) -> None:
    def numbers(q: str, c: str) -> str | None:
        return "numbers differ" if ("2" in q) != ("2" in c) else None

    cache = backend.cache(embedder(question_2=BASE), guards=(numbers,))
    keep(cache, "best", blend(BASE, unit("best"), 0.99))
    second = keep(cache, "second 2", blend(BASE, unit("second"), 0.93))
    found = semantic(cache, "question 2")
    assert found is not None and found[0] == second


def test_namespaces_never_meet(backend: Backend) -> None:
    cache = backend.cache(embedder(question=BASE))
    keep(cache, "stored", BASE, tenant="t1", model="m1")
    assert semantic(cache, "question", tenant="t2", model="m1") is None
    assert semantic(cache, "question", tenant="t1", model="m2") is None
    assert semantic(cache, "question", tenant="t1", model="m1") is not None


def test_another_process_finds_what_one_stored(backend: Backend) -> None:
    writer = backend.cache()
    reader = backend.cache(embedder(question=NEAR))
    assert semantic(reader, "question") is None  # loaded (process) or asked (server) once
    entry_id = keep(writer, "stored", BASE)
    found = semantic(reader, "question")
    assert found is not None and found[0] == entry_id


def test_an_expired_entry_is_never_found(backend: Backend) -> None:
    cache = backend.cache(embedder(question=NEAR))
    keep(cache, "short lived", BASE, ttl=60)
    assert semantic(cache, "question") is not None
    backend.clock.now += 61
    assert semantic(cache, "question") is None
    assert semantic(backend.cache(embedder(question=NEAR)), "question") is None


def test_a_replaced_entry_answers_with_its_new_vector(backend: Backend) -> None:
    cache = backend.cache(embedder(question=NEAR, other=unit("other")))
    first = keep(cache, "stored", BASE)
    cache.forget("t", first)
    second = keep(cache, "stored", unit("other"))
    assert semantic(cache, "question") is None
    found = semantic(cache, "other")
    assert found is not None and found[0] == second


def test_forget_removes_the_entry_from_every_process(backend: Backend) -> None:
    one, two = backend.cache(embedder(question=NEAR)), backend.cache(embedder(question=NEAR))
    entry_id = keep(one, "stored", BASE)
    assert semantic(two, "question") is not None
    assert one.forget("t", entry_id) is not None
    assert semantic(one, "question") is None
    assert semantic(two, "question") is None


def test_a_vector_whose_entry_is_gone_is_dropped(backend: Backend) -> None:
    cache = backend.cache(embedder(question=NEAR))
    gone = keep(cache, "gone", BASE)
    kept = keep(cache, "kept", blend(BASE, unit("kept"), 0.93))
    backend.store.delete(gone)  # behind the cache's back: the store no longer has it
    found = semantic(cache, "question")
    assert found is not None and found[0] == kept


def test_clear_empties_the_index(backend: Backend) -> None:
    cache = backend.cache(embedder(question=NEAR))
    keep(cache, "stored", BASE)
    assert cache.clear() == 1
    assert semantic(cache, "question") is None
    assert semantic(backend.cache(embedder(question=NEAR)), "question") is None


def test_the_exact_tier_needs_no_index(backend: Backend) -> None:
    cache = backend.cache()
    entry_id = keep(cache, "stored", BASE)
    hit, vector = cache.lookup(ask("  stored "))
    assert hit is not None and hit.tier is Tier.EXACT and hit.entry.id == entry_id
    assert vector is None


def test_chat_stores_a_miss_and_answers_a_paraphrase_from_it(backend: Backend) -> None:
    from tests.unit.fakes import FakeLLM

    llm = FakeLLM()
    cache = backend.cache(embedder(how_do_i_reset_it=BASE, how_can_i_reset_it=NEAR), llm)
    miss = cache.chat(ask("how do i reset it"))
    hit = cache.chat(ask("how can i reset it"))
    assert miss.tier is Tier.MISS and hit.tier is Tier.SEMANTIC
    assert hit.entry_id == miss.entry_id and hit.response == miss.response and llm.calls == 1


def test_entries_stored_through_the_process_index_are_found_after_reindex(
    backend: Backend,
) -> None:
    """Switching from ``process`` to a server-side index: ``reindex`` copies every live entry's
    vector from the store's logs (the process index needs none: it reads them itself)."""
    from promptcache._indexes import Reindexed, reindex

    before = PromptCache(
        store=backend.store,
        embedder=FakeEmbedder(),
        stats=MemoryStats(),
        clock=backend.clock,
        ttl_seconds=0,
    )
    kept = keep(before, "stored", BASE)
    other = keep(before, "stored", BASE, tenant="t2")
    keep(before, "brief", blend(BASE, unit("brief"), 0.99), ttl=60)
    gone = keep(before, "gone", blend(BASE, unit("gone"), 0.98))
    before.forget("t", gone)
    before.store_answer(ask("x" * 3000), Completion("long", "m", Usage()))  # no vector
    backend.clock.now += 61  # "brief" has expired
    if backend.kind != "process":
        index = backend._index()
        assert index is not None
        for _ in range(2):  # idempotent
            assert reindex(backend.store, index, backend.clock()) == Reindexed(2, 2, 1)
        namespace = before.entry_namespace(ask("stored"))
        everything = index.search(namespace, BASE, k=10, min_score=-1.0, now=0.0)
        assert [i for i, _ in everything] == [kept]  # neither the expired nor the forgotten
    after = backend.cache(embedder(question=NEAR))
    found = semantic(after, "question")
    assert found is not None and found[0] == kept
    found = semantic(after, "question", tenant="t2")
    assert found is not None and found[0] == other
    assert semantic(after, "question", tenant="t3") is None
