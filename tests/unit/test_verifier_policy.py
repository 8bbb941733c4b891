"""The verifier model in the lookup (module ``_verify``): which candidates it sees, one call per
query, and fail closed."""

from __future__ import annotations

import numpy as np
import pytest

from promptcache import ChatRequest, Message, PromptCache, Tier, VerifierError
from promptcache._verify import ModelCheck
from promptcache.adapters.memory import MemoryStats, MemoryStore
from tests.unit.fakes import FakeEmbedder, FakeLLM, FakeVerifier, blend, unit

BASE = unit("capital")
VECTORS = {
    "stored question": BASE,
    "other stored question": blend(BASE, unit("o"), 0.93),
    "clear match": blend(BASE, unit("a"), 0.99),
    "borderline match": blend(BASE, unit("b"), 0.91),
    "below threshold": blend(BASE, unit("c"), 0.85),
    "far away": blend(BASE, unit("d"), 0.5),
}


def req(prompt: str) -> ChatRequest:
    return ChatRequest(messages=(Message("user", prompt),), model="m")


def cache_with(verifier: FakeVerifier, **policy: float) -> tuple[PromptCache, FakeLLM]:
    llm = FakeLLM()
    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(VECTORS), stats=MemoryStats(), llm=llm,
        threshold=0.9, verifier_model=ModelCheck(verifier, **policy),
    )  # fmt: skip
    cache.chat(req("stored question"))
    return cache, llm


def test_a_candidate_in_the_band_needs_the_verifier() -> None:
    verifier = FakeVerifier({("borderline match", "stored question"): 0.8})
    cache, _ = cache_with(verifier, cutoff=0.5, band=0.04)
    assert cache.chat(req("clear match")).tier is Tier.SEMANTIC  # 0.99 >= 0.94: not asked
    assert verifier.calls == []
    assert cache.chat(req("borderline match")).tier is Tier.SEMANTIC  # asked: 0.8 >= 0.5
    assert verifier.calls == [("borderline match", ("stored question",))]


def test_a_low_score_is_a_miss_and_the_cutoff_decides() -> None:
    verifier = FakeVerifier({("borderline match", "stored question"): 0.4})
    cache, llm = cache_with(verifier, cutoff=0.5)
    assert cache.chat(req("borderline match")).tier is Tier.MISS
    assert llm.calls == 2
    strict, _ = cache_with(FakeVerifier({("clear match", "stored question"): 0.6}), cutoff=0.7)
    assert strict.chat(req("clear match")).tier is Tier.MISS  # band 1: every candidate asked


def test_below_the_threshold_only_the_verifier_can_accept() -> None:
    table = {("below threshold", "stored question"): 0.9}
    no_floor, _ = cache_with(FakeVerifier(table), below=0.0)
    assert no_floor.chat(req("below threshold")).tier is Tier.MISS  # 0.85 < 0.9, never asked
    verifier = FakeVerifier(table)
    floor, _ = cache_with(verifier, below=0.1)
    hit = floor.chat(req("below threshold"))
    assert hit.tier is Tier.SEMANTIC and hit.similarity == pytest.approx(0.85, abs=1e-4)
    assert floor.chat(req("far away")).tier is Tier.MISS  # 0.5 < 0.8: not a candidate
    assert [q for q, _ in verifier.calls] == ["below threshold"]


def test_all_candidates_of_a_query_go_in_one_call_best_first() -> None:
    verifier = FakeVerifier({("borderline match", "other stored question"): 0.9})
    cache, _ = cache_with(verifier, below=0.2)
    other = cache.chat(req("other stored question"))  # asked itself (vs "stored question": 0.93)
    verifier.calls.clear()
    hit = cache.chat(req("borderline match"))
    assert len(verifier.calls) == 1
    query, candidates = verifier.calls[0]
    assert query == "borderline match" and set(candidates) == {
        "stored question",
        "other stored question",
    }
    assert candidates[0] == "stored question"  # the nearer one first
    assert hit.tier is Tier.SEMANTIC  # the first the verifier accepts
    assert hit.entry_id == other.entry_id


@pytest.mark.parametrize(
    "failure", [VerifierError("model is down"), RuntimeError("bug"), MemoryError()]
)
def test_a_failing_verifier_is_a_miss_never_a_hit_nor_an_error(failure: BaseException) -> None:
    verifier = FakeVerifier({("borderline match", "stored question"): 1.0})
    verifier.fail = failure  # type: ignore[assignment]
    cache, llm = cache_with(verifier)
    result = cache.chat(req("borderline match"))
    assert result.tier is Tier.MISS and llm.calls == 2 and not result.bypass_reason
    assert cache.chat(req("borderline match")).tier is Tier.EXACT  # the miss was stored


def test_a_verifier_answering_the_wrong_number_of_scores_is_a_miss() -> None:
    class Short(FakeVerifier):
        def scores(self, query: str, candidates):  # type: ignore[no-untyped-def,override]
            super().scores(query, candidates)
            return []

    cache, _ = cache_with(Short())
    assert cache.chat(req("borderline match")).tier is Tier.MISS


def test_the_guards_still_apply_to_every_candidate() -> None:
    verifier = FakeVerifier({("borderline match", "stored question"): 1.0})
    llm = FakeLLM()
    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(VECTORS), stats=MemoryStats(), llm=llm,
        threshold=0.9, guards=[lambda q, c: "no"], verifier_model=ModelCheck(verifier),
    )  # fmt: skip
    cache.chat(req("stored question"))
    assert cache.chat(req("borderline match")).tier is Tier.MISS
    assert verifier.calls == []  # rejected by the guard before the model


def test_the_lookup_counts_what_the_verifier_judged() -> None:
    verifier = FakeVerifier({("borderline match", "stored question"): 1.0})
    cache, _ = cache_with(verifier)
    from promptcache._accounting import Tally

    tally = Tally()
    hit, vector = cache._lookup(cache._query(req("borderline match")), tally)  # type: ignore[attr-defined]
    assert hit is not None and isinstance(vector, np.ndarray)
    assert tally.verdicts.judged == 1 and tally.verdicts.calls == 1 and tally.verdicts.failed == 0
