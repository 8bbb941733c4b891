"""The request as one value (promptcache._query.Query), built once per request."""

from __future__ import annotations

import pytest

from promptcache import CacheMode, ChatRequest, Message, PromptCache, _keys, _query, core
from promptcache._keys import canonical, exact_key, namespace, normalize
from promptcache._query import Query
from promptcache.adapters.memory import MemoryStats, MemoryStore
from tests.unit.fakes import FakeEmbedder, FakeLLM


def req(prompt: str, **kw: object) -> ChatRequest:
    return ChatRequest(messages=(Message("user", prompt),), model="m", **kw)  # type: ignore[arg-type]


def test_a_query_holds_what_the_tiers_derive_from_a_request() -> None:
    request = req("  How do I   RESET it? ", cache=CacheMode.REFRESH)
    q = Query.of(request, embedder_id="fake", dim=8, semantic_max_chars=2000)
    assert q.request is request and q.mode is CacheMode.REFRESH and q.model == "m"
    assert q.text == canonical(request.prompt) == "How do I RESET it?"
    assert q.folded == normalize(request.prompt) == "how do i reset it?"
    assert q.namespace == namespace(request, "fake", 8)
    assert q.key == exact_key(q.namespace, request.prompt)
    assert q.semantic
    assert not Query.of(request, embedder_id="fake", dim=8, semantic_max_chars=10).semantic
    with pytest.raises(AttributeError):
        q.text = "other"  # type: ignore[misc]


def test_a_request_is_normalized_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []

    def counting_canonical(text: str) -> str:
        seen.append(("canonical", text))
        return canonical(text)

    def counting_normalize(text: str) -> str:
        seen.append(("normalize", text))
        return normalize(text)

    for module in (_keys, _query, core):
        monkeypatch.setattr(module, "normalize", counting_normalize, raising=False)
        monkeypatch.setattr(module, "canonical", counting_canonical, raising=False)
    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=FakeLLM()
    )
    cache.chat(req("A  miss"))  # lookup (exact, embed, search), claim, answer, store
    assert seen == [("canonical", "A  miss"), ("normalize", "A miss")]
    seen.clear()
    assert "".join(cache.chat_stream(req("Another  miss")))
    assert seen == [("canonical", "Another  miss"), ("normalize", "Another miss")]
    seen.clear()
    cache.chat(req("A  miss", cache=CacheMode.REFRESH))
    assert seen == [("canonical", "A  miss"), ("normalize", "A miss")]
