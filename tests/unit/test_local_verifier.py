"""The trained verifier with its real weights (promptcache/models/verifier.onnx)."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptcache import ChatRequest, ConfigError, Message, PromptCache, Tier, VerifierError
from promptcache._verify import ModelCheck
from promptcache.adapters import local_verifier
from promptcache.adapters.local_verifier import LocalVerifier
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.guards import default_guards, swap_guard
from tests.unit.fakes import FakeEmbedder, FakeLLM, blend, unit


@pytest.fixture(scope="module")
def verifier() -> LocalVerifier:
    return LocalVerifier()


def test_a_duplicate_scores_above_a_look_alike(verifier: LocalVerifier) -> None:
    dup, other = verifier.scores(
        "how do i reset my password?",
        ["what is the way to reset my password?", "how do i reset my router?"],
    )
    assert 0.0 <= other < 0.5 < dup <= 1.0


def test_exchanged_roles_are_the_swap_guards_to_reject(verifier: LocalVerifier) -> None:
    """The model does not tell exchanged roles apart (its training sets hold few such pairs: it
    scores this one as a duplicate), which is why the swapped-roles guard stays in the defaults
    with the model on: the guards screen every candidate before the model is asked."""
    query = "what is the cheapest flight from london to new york?"
    swapped = "what is the cheapest flight from new york to london?"
    (score,) = verifier.scores(query, [swapped])
    assert score >= 0.5
    assert swap_guard(query, swapped) is not None
    assert any(guard(query, swapped) is not None for guard in default_guards())


def test_one_call_scores_each_candidate_as_alone(verifier: LocalVerifier) -> None:
    query = "how can i learn python quickly?"
    cands = ["what is the fastest way to learn python?", "how can i learn java quickly?"]
    together = verifier.scores(query, cands)
    alone = [verifier.scores(query, [c])[0] for c in cands]
    # int8 activations are quantized per batch (padding included): close, not bit-equal
    assert together == pytest.approx(alone, abs=0.05)
    assert verifier.scores(query, []) == []


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    fake = tmp_path / "verifier.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(ConfigError, match="sha256"):
        LocalVerifier(model=fake)
    with pytest.raises(ConfigError, match="missing"):
        LocalVerifier(model=tmp_path / "absent.onnx")


def test_the_pinned_hash_is_the_shipped_file() -> None:
    import hashlib

    path = local_verifier.MODEL_DIR / local_verifier.MODEL_FILE
    assert hashlib.sha256(path.read_bytes()).hexdigest() == local_verifier.MODEL_SHA256


def test_a_run_past_its_timeout_raises_and_the_lookup_misses() -> None:
    slow = LocalVerifier(timeout=1e-6)
    with pytest.raises(VerifierError, match="took over"):
        slow.scores("how do i reset my password?", ["how can i reset my password?"] * 64)
    base = unit("password")
    embedder = FakeEmbedder(
        {
            "how do i reset my password?": base,
            "how can i reset my password?": blend(base, unit("x"), 0.95),
        }
    )
    llm = FakeLLM()
    cache = PromptCache(
        store=MemoryStore(), embedder=embedder, stats=MemoryStats(), llm=llm, threshold=0.9,
        verifier_model=ModelCheck(slow),
    )  # fmt: skip
    cache.chat(ChatRequest(messages=(Message("user", "how do i reset my password?"),), model="m"))
    again = ChatRequest(messages=(Message("user", "how can i reset my password?"),), model="m")
    result = cache.chat(again)
    assert result.tier is Tier.MISS and llm.calls == 2 and not result.bypass_reason


def test_the_deadline_holds_even_when_the_stop_timer_never_fires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a busy machine the timer thread may run after onnxruntime has finished: the answer
    # came too late all the same and is refused.
    class Late:
        def __init__(self, interval: float, function: object) -> None: ...

        def start(self) -> None: ...

        def cancel(self) -> None: ...

    late = LocalVerifier(timeout=1e-6)
    monkeypatch.setattr(local_verifier.threading, "Timer", Late)
    with pytest.raises(VerifierError, match="took over"):
        late.scores("how do i reset my password?", ["how can i reset my password?"])
    late.timeout = 60.0
    assert len(late.scores("how do i reset my password?", ["how can i reset it?"])) == 1
