"""Tools, structured outputs and every sampling field in the key: what is keyed, by position, and
what the entries stored before they existed keep."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from promptcache import CacheMode, ChatRequest, Message, PromptCache, Tier
from promptcache._accounting import bypass_label
from promptcache._keys import KEY_VERSION, canonical, namespace, text_key
from promptcache._query import Query
from promptcache._types import Completion, Entry, ToolCall, Usage
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.adapters.sqlite import SQLiteStore
from promptcache.adapters.upstash import UpstashStore
from tests.unit.fakes import FakeEmbedder, FakeLLM, blend, unit

TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]


def query(request: ChatRequest) -> Query:
    return Query.of(request, embedder_id="fake", dim=8, semantic_max_chars=2000)


def ask(*messages: Message, **options: Any) -> ChatRequest:
    return ChatRequest(messages=messages, model="m", options=options)


def old_namespace(request: ChatRequest) -> str:
    """The namespace as the code before tools computed it (its exact formula)."""
    context = [[m.role, canonical(m.content)] for m in request.context]
    params = {"temperature": request.temperature, "max_tokens": request.max_tokens}
    payload = {"model": request.model, "params": params, "context": context, "v": KEY_VERSION}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return f"{request.tenant}:fake:8:{hashlib.sha256(raw.encode()).hexdigest()[:24]}"


def test_a_plain_request_keeps_the_key_it_had() -> None:
    request = ChatRequest(
        messages=(Message("system", "Be brief."), Message("user", "What is  2+2?")),
        model="m",
        max_tokens=20,
        forward={"user": "u-1", "metadata": {"a": 1}},  # identify/bill: never keyed
    )
    q = query(request)
    assert q.namespace == old_namespace(request) == namespace(request, "fake", 8)
    assert q.key == text_key(old_namespace(request), canonical("What is  2+2?"))


@pytest.mark.parametrize(
    "options",
    [
        {"tools": TOOLS},
        {"tool_choice": "required"},
        {"response_format": {"type": "json_object"}},
        {"stop": ["\n"]},
        {"seed": 1},
        {"top_p": 0.5},
        {"presence_penalty": 0.1},
        {"logit_bias": {"1": 2}},
        {"reasoning_effort": "low"},
        {"a_future_field": True},
    ],
)
def test_every_option_is_keyed(options: dict[str, Any]) -> None:
    plain = query(ask(Message("user", "hi")))
    other = query(ask(Message("user", "hi"), **options))
    assert other.namespace != plain.namespace
    assert query(ask(Message("user", "hi"), **options)).key == other.key  # deterministic


def test_different_stop_or_seed_is_another_key() -> None:
    base = query(ask(Message("user", "hi"), seed=1, stop=["x"])).key
    assert query(ask(Message("user", "hi"), seed=2, stop=["x"])).key != base
    assert query(ask(Message("user", "hi"), seed=1, stop=["y"])).key != base


def call_turn(*ids: str, args: str = '{"city": "Paris"}') -> Message:
    calls = tuple(ToolCall("weather", args, i) for i in ids)
    return Message("assistant", "", tool_calls=calls)


def loop(ids: tuple[str, ...], results: tuple[str, ...]) -> ChatRequest:
    tools = tuple(Message("tool", r, tool_call_id=i) for i, r in zip(ids, results, strict=True))
    return ask(Message("user", "Weather?"), call_turn(*ids), *tools, tools=TOOLS)


def test_tool_calls_are_keyed_by_position_not_id() -> None:
    a = query(loop(("call_a", "call_b"), ("12C", "15C")))
    b = query(loop(("call_x", "call_y"), ("12C", "15C")))
    assert (a.namespace, a.key) == (b.namespace, b.key)
    swapped = ask(
        Message("user", "Weather?"),
        call_turn("p", "q"),
        Message("tool", "12C", tool_call_id="q"),  # answers the second call now
        Message("tool", "15C", tool_call_id="p"),
        tools=TOOLS,
    )
    assert query(swapped).key != a.key


def test_tool_results_and_arguments_are_keyed() -> None:
    base = query(loop(("c",), ("12C",)))
    assert query(loop(("c",), ("13C",))).key != base.key
    spaced = ask(
        Message("user", "Weather?"),
        call_turn("c", args='{ "city":"Paris" }'),  # the same JSON, other layout
        Message("tool", "12C", tool_call_id="c"),
        tools=TOOLS,
    )
    assert query(spaced).key == base.key
    other = ask(
        Message("user", "Weather?"),
        call_turn("c", args='{"city": "Rome"}'),
        Message("tool", "12C", tool_call_id="c"),
        tools=TOOLS,
    )
    assert query(other).namespace != base.namespace


def test_parts_are_keyed_by_a_hash_and_exact_only() -> None:
    def image(url: str) -> Message:
        parts = (
            {"type": "text", "text": "What is it?"},
            {"type": "image_url", "image_url": {"url": url}},
        )
        return Message("user", "What is it?", parts=parts)

    a, b = (
        query(ask(image("data:image/png;base64,AAAA"))),
        query(ask(image("data:image/png;base64,BBBB"))),
    )
    assert a.key != b.key and not a.semantic and not b.semantic
    assert query(ask(image("data:image/png;base64,AAAA"))).key == a.key
    assert query(ask(Message("user", "What is it?"))).key != a.key


def test_tier_policy() -> None:
    assert query(ask(Message("user", "hi"))).semantic
    assert not query(ask(Message("user", "hi"), tools=TOOLS)).semantic
    assert not query(ask(Message("user", "hi"), response_format={"type": "json_object"})).semantic
    assert query(ask(Message("user", "hi"), response_format={"type": "text"})).semantic
    allowed = ChatRequest(
        messages=(Message("user", "hi"),), model="m", options={"tools": TOOLS}, semantic=True
    )
    assert query(allowed).semantic
    tool_last = ChatRequest(messages=loop(("c",), ("1",)).messages, model="m", semantic=True)
    assert not query(tool_last).semantic
    assert not query(ask(Message("user", "hi"), Message("assistant", "Hel"))).semantic


def old_row(request: ChatRequest) -> dict[str, Any]:
    """An entry as the code before tool calls stored it: no format, no tool calls, no finish
    reason, under the old namespace."""
    ns = old_namespace(request)
    return {
        "id": "e" * 32,
        "namespace": ns,
        "exact_key": text_key(ns, canonical(request.prompt)),
        "prompt": canonical(request.prompt),
        "response": "100 C at sea level.",
        "model": "m",
        "usage": [3, 5],
        "created_at": 1.0,
        "expires_at": None,
    }


WATER = ChatRequest(messages=(Message("user", "What is the boiling point of water?"),), model="m")


def test_an_entry_stored_in_the_old_format_is_read_and_served(tmp_path: Path) -> None:
    """A SQLite row written by the code before tool calls is still the exact answer."""
    store = SQLiteStore(tmp_path / "c.sqlite3")
    row = old_row(WATER)
    store.put(Entry.from_json(row), None)  # the key tables, then the row as the old code wrote it
    with sqlite3.connect(tmp_path / "c.sqlite3") as db:
        db.execute("UPDATE entries SET data = ? WHERE id = ?", (json.dumps(row), row["id"]))
    llm = FakeLLM()
    cache = PromptCache(store=store, embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)
    result = cache.chat(WATER)
    assert (result.tier, result.response, llm.calls) == (Tier.EXACT, "100 C at sea level.", 0)
    assert result.tool_calls == () and result.finish_reason == "stop"


def test_an_upstash_entry_in_the_old_format_is_read() -> None:
    raw = json.dumps({"v": 1, "dim": 8, "entry": old_row(WATER)}).encode()
    entry, dim = UpstashStore._unwrap(raw)
    assert dim == 8 and entry.response == "100 C at sea level." and entry.tool_calls == ()
    assert entry.finish_reason == "stop"


def test_the_stored_answer_format_round_trips_tool_calls() -> None:
    entry = Entry(
        id="x",
        namespace="n",
        exact_key="k",
        prompt="p",
        response="",
        model="m",
        usage=Usage(1, 2),
        created_at=1.0,
        expires_at=None,
        tool_calls=(ToolCall("f", '{"a":1}'), ToolCall("g", "{}", "", "function_call")),
        finish_reason="tool_calls",
    )
    data = json.loads(json.dumps(entry.to_json()))
    assert data["format"] == 3 and "thinking" not in data  # written only when there is some
    assert Entry.from_json(data) == entry


def test_the_stored_answer_format_round_trips_reasoning_blocks_as_they_are() -> None:
    blocks = (
        {"type": "thinking", "thinking": "Let me see: 2 + 2.", "signature": "c2lnbmF0dXJl"},
        {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
    )
    entry = Entry(
        "x", "n", "k", "p", "4", "m", Usage(1, 2), 1.0, None, thinking=blocks, stop_sequence="5"
    )
    data = json.loads(json.dumps(entry.to_json()))
    assert data["thinking"] == [dict(b) for b in blocks] and data["stop_sequence"] == "5"
    assert Entry.from_json(data) == entry


class ToolLLM(FakeLLM):
    def generate(self, request: ChatRequest) -> Completion:
        self.calls += 1
        call = ToolCall("weather", '{"city": "Paris"}', f"call_upstream_{self.calls}")
        return Completion("", request.model, Usage(5, 6), "tool_calls", (call,))


def test_a_tool_call_answer_is_stored_without_its_id_and_replayed() -> None:
    llm = ToolLLM()
    cache = PromptCache(store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)
    request = ask(Message("user", "Weather in Paris?"), tools=TOOLS)
    miss = cache.chat(request)
    assert miss.tier is Tier.MISS and miss.tool_calls[0].id == "call_upstream_1"
    assert miss.finish_reason == "tool_calls"
    hit = cache.chat(request)
    assert hit.tier is Tier.EXACT and llm.calls == 1
    assert hit.tool_calls == (ToolCall("weather", '{"city": "Paris"}'),)  # no id: fresh ones go out
    assert hit.finish_reason == "tool_calls"


def test_a_request_bypass_is_forwarded_and_not_stored() -> None:
    llm = FakeLLM()
    store = MemoryStore()
    cache = PromptCache(store=store, embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)
    request = ChatRequest(messages=(Message("user", "hi"),), model="m", bypass="logprobs")
    first, second = cache.chat(request), cache.chat(request)
    assert first.tier is second.tier is Tier.BYPASS and first.bypass_reason == "logprobs"
    assert llm.calls == 2 and store.count() == 0
    assert cache.report()["bypass_reasons"] == {"logprobs": 2}
    skip = ChatRequest(messages=(Message("user", "hi"),), model="m", cache=CacheMode.SKIP)
    assert cache.chat(skip).bypass_reason == "cache=skip"
    assert cache.report()["bypass_reasons"] == {"cache=skip": 1, "logprobs": 2}


def test_bypass_labels_are_a_closed_set() -> None:
    assert bypass_label("store_error: connection refused at 10.0.0.1") == "store_error"
    assert bypass_label("oversize") == "oversize" and bypass_label(None) == "unknown"


def test_arguments_too_deep_for_json_are_keyed_as_text() -> None:
    deep = "[" * 5000 + "]" * 5000
    a = query(
        ask(Message("user", "x"), call_turn("c", args=deep), Message("tool", "1", tool_call_id="c"))
    )
    b = query(
        ask(Message("user", "x"), call_turn("c", args=deep), Message("tool", "1", tool_call_id="c"))
    )
    assert a.key == b.key


def test_requests_are_counted_by_kind() -> None:
    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=ToolLLM()
    )
    cache.chat(ask(Message("user", "a"), tools=TOOLS))
    cache.chat(ask(Message("user", "a"), tools=TOOLS))  # a hit counts too
    cache.chat(ask(Message("user", "b"), response_format={"type": "json_object"}))
    cache.chat(ask(Message("user", "c")))
    cache.chat(ask(Message("user", "d"), response_format={"type": "text"}))
    assert cache.report()["kinds"] == {"structured": 1, "text": 2, "tools": 2}


def test_a_last_turn_of_another_role_never_shares_a_users_key() -> None:
    context = (Message("system", "Be brief."),)
    user = query(ask(*context, Message("user", "Hello")))
    prefill = query(ask(*context, Message("assistant", "Hello")))
    system = query(ask(*context, Message("system", "Hello")))
    assert len({user.key, prefill.key, system.key}) == 3


def test_the_semantic_tier_answers_a_tools_request_only_when_allowed() -> None:
    base = unit("base")
    embedder = FakeEmbedder(
        {
            "what is the weather in paris?": base,
            "how is the weather in paris?": blend(base, unit("other"), 0.97),
            "how's the weather in paris?": blend(base, unit("third"), 0.97),
        }
    )
    llm = ToolLLM()
    cache = PromptCache(store=MemoryStore(), embedder=embedder, stats=MemoryStats(), llm=llm)

    def tools_request(text: str, semantic: bool) -> ChatRequest:
        return ChatRequest(
            messages=(Message("user", text),),
            model="m",
            options={"tools": TOOLS},
            semantic=semantic,
        )

    cache.chat(tools_request("What is the weather in Paris?", True))
    allowed = cache.chat(tools_request("How is the weather in Paris?", True))
    assert allowed.tier is Tier.SEMANTIC and allowed.tool_calls[0].name == "weather"
    assert cache.chat(tools_request("How's the weather in Paris?", False)).tier is Tier.MISS
    assert llm.calls == 2
