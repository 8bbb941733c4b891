"""The exact key keeps what can change an answer apart and merges only what cannot
(docs/how-it-works.md, "Exact keys and the guards"): each row of the hostile-input table,
through the whole cache."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache import ChatRequest, Message, PromptCache, Tier, _keys
from promptcache._keys import KEY_VERSION, canonical, exact_key, namespace, normalize
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.guards import default_guards
from tests.unit.fakes import FakeEmbedder, FakeLLM

#: Pairs a folding key merged (one answer served for both); each must get its own answer.
DISTINCT = [
    ("What is 10²?", "What is 102?"),
    ("What does 'ABC' stand for?", "What does 'abc' stand for?"),
    ('Is "Apple" a fruit here?', 'Is "apple" a fruit here?'),
    ("Spell Maße", "Spell Masse"),
    ("What does `git log -S` do?", "What does `git log -s` do?"),
    (
        "Output?\n```python\nfor i in range(2):\n    print(i)\nprint('done')\n```",
        "Output?\n```python\nfor i in range(2):\n    print(i)\n    print('done')\n```",
    ),
    (
        "What does this print?\nfor i in range(2):\n    print(i)\nprint('done')",
        "What does this print?\nfor i in range(2):\n    print(i)\n    print('done')",
    ),
    ("Is `a  b` a valid name?", "Is `a b` a valid name?"),
    ('How long is "a  b"?', 'How long is "a b"?'),
    ("Who is the US president?", "Who is the us president?"),
]

#: Variants that cannot change the answer: the same exact key.
SAME = [
    ("How do I reset my password?", "  How do I   reset my\tpassword?  \n"),
    ("Explain this:\n\nfirst\nsecond", "Explain this:\r\n\r\n\r\n\r\nfirst   \r\nsecond"),
    ("Caf\u00e9 hours?", unicodedata.normalize("NFD", "Caf\u00e9 hours?")),
    ("Fix:\n```\nif x:\n    y()\n```", "    Fix:\n    ```\n    if x:\n        y()\n    ```\n"),
    ("Is 'a  b' ok?", "Is  'a  b'   ok?"),
]


def key(prompt: str) -> str:
    return exact_key("t:e:8:ns", prompt)


@pytest.mark.parametrize(("a", "b"), DISTINCT)
def test_meaning_bearing_differences_get_distinct_keys(a: str, b: str) -> None:
    assert key(a) != key(b)


@pytest.mark.parametrize(("a", "b"), SAME)
def test_harmless_variants_share_the_key(a: str, b: str) -> None:
    assert key(a) == key(b)
    assert canonical(a) == canonical(b)


def cache_seeing_no_difference() -> tuple[PromptCache, FakeLLM]:
    """An embedder that cannot tell the pairs apart (it reads the folded form): only the exact
    key and the guards keep them apart."""
    llm = FakeLLM()
    cache = PromptCache(
        store=MemoryStore(),
        embedder=FakeEmbedder(),
        stats=MemoryStats(),
        llm=llm,
        guards=default_guards(),
    )
    return cache, llm


def ask(prompt: str) -> ChatRequest:
    return ChatRequest(messages=(Message("user", prompt),), model="m")


@pytest.mark.parametrize(("a", "b"), [pair for pair in DISTINCT if "US" not in pair[0]])
def test_each_gets_its_own_answer_even_when_the_embedder_sees_one_text(a: str, b: str) -> None:
    cache, llm = cache_seeing_no_difference()
    assert normalize(a) == normalize(b) or "`" in a or '"' in a  # the embedder's view: one text
    first = cache.chat(ask(a))
    second = cache.chat(ask(b))
    assert first.tier is Tier.MISS and second.tier is Tier.MISS and llm.calls == 2
    assert second.response.endswith(b) and first.entry_id != second.entry_id
    assert cache.chat(ask(a)).entry_id == first.entry_id  # each is its own exact hit
    assert cache.chat(ask(b)).entry_id == second.entry_id


@pytest.mark.parametrize(("a", "b"), SAME)
def test_harmless_variants_are_exact_hits(a: str, b: str) -> None:
    cache, llm = cache_seeing_no_difference()
    first = cache.chat(ask(a))
    again = cache.chat(ask(b))
    assert again.tier is Tier.EXACT and again.entry_id == first.entry_id and llm.calls == 1


def test_case_outside_quotes_is_left_to_the_semantic_tier() -> None:
    cache, llm = cache_seeing_no_difference()
    first = cache.chat(ask("How do I reset my password?"))
    again = cache.chat(ask("how do i RESET my password?"))
    assert again.tier is Tier.SEMANTIC and again.entry_id == first.entry_id and llm.calls == 1


def test_the_key_version_is_part_of_the_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries keyed by an older version are never reached: a miss, not a wrong hit."""
    now = namespace(ask("x"), "e", 8)
    monkeypatch.setattr(_keys, "KEY_VERSION", KEY_VERSION - 1)
    assert namespace(ask("x"), "e", 8) != now


_TEXT = st.lists(
    st.sampled_from(list("aB ²ß\t\n\r'\"`~é") + ["```", "    ", "\u0301"]), max_size=40
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_canonical_is_idempotent_and_ignores_outer_whitespace(text: str) -> None:
    once = canonical(text)
    assert canonical(once) == once
    assert canonical(f" \n{text}\n  ") == once
