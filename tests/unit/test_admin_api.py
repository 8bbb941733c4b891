"""The admin API through the Lambda handlers: list recent entries (bounded, paginated), flush a
namespace, a model or a tenant, delete by prompt; for the admin key alone, and a rejected call
changes nothing."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from promptcache import PromptCache, _admin, runtime
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.unit.fakes import FakeEmbedder, FakeLLM

ADMIN = "admin-key"


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory")
    monkeypatch.setenv("PROMPTCACHE_MODEL", "m1")
    monkeypatch.setenv("PROMPTCACHE_API_KEYS", "ka:alpha,kb:beta")
    monkeypatch.setenv("PROMPTCACHE_ADMIN_KEY", ADMIN)
    runtime.reset()
    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=FakeLLM()
    )
    monkeypatch.setattr(runtime, "cache", lambda: cache)
    yield importlib.reload(importlib.import_module("promptcache_handlers.chat"))
    monkeypatch.undo()
    runtime.reset()


def call(
    module: Any, method: str, path: str, key: str | None, body: Any = None, query: str = ""
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    raw = b"" if body is None else json.dumps(body).encode()
    event = to_event(method, path + (f"?{query}" if query else ""), headers, raw)
    status, _, payload = from_result(module.lambda_handler(event, LocalContext("chat")))
    return status, json.loads(payload) if payload else None


def fill(chat: Any) -> None:
    """alpha: 3 prompts on m1, 1 on m2; beta: 2 on m1 (one the same text as alpha's)."""
    for key, prompt, model in [
        ("ka", "alpha one", "m1"),
        ("ka", "alpha two", "m1"),
        ("ka", "shared question", "m1"),
        ("ka", "alpha other model", "m2"),
        ("kb", "beta one", "m1"),
        ("kb", "shared question", "m1"),
    ]:
        assert call(chat, "POST", "/chat", key, {"prompt": prompt, "model": model})[0] == 200


def listed(chat: Any, query: str = "limit=100") -> list[dict[str, Any]]:
    status, body = call(chat, "GET", "/admin/entries", ADMIN, query=query)
    assert status == 200
    return list(body["entries"])


def test_recent_entries_newest_first_paginated_per_tenant(chat: Any) -> None:
    fill(chat)
    everything = listed(chat)
    assert [e["prompt"] for e in everything][:2] == ["shared question", "beta one"]
    assert len(everything) == 6 and {e["tenant"] for e in everything} == {"alpha", "beta"}
    seen, cursor = [], None
    while True:
        query = "limit=4" + (f"&cursor={cursor}" if cursor else "")
        status, page = call(chat, "GET", "/admin/entries", ADMIN, query=query)
        assert status == 200 and len(page["entries"]) <= 4
        seen += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["id"] for e in seen] == [e["id"] for e in everything]
    alpha = listed(chat, "tenant=alpha&limit=2")
    assert len(alpha) == 2 and all(e["tenant"] == "alpha" for e in alpha)


def test_flush_a_model_a_tenant_a_namespace_and_delete_by_prompt(chat: Any) -> None:
    fill(chat)
    status, body = call(chat, "POST", "/admin/flush", ADMIN, {"model": "m2"})
    assert status == 200 and body["deleted"] == 1
    assert "alpha other model" not in [e["prompt"] for e in listed(chat)]
    status, body = call(chat, "POST", "/admin/forget", ADMIN, {"prompt": " shared  question"})
    assert status == 200 and body["deleted"] == 2  # both tenants' answers to that prompt
    namespace = next(e["namespace"] for e in listed(chat) if e["prompt"] == "beta one")
    assert call(chat, "POST", "/admin/flush", ADMIN, {"namespace": namespace})[1]["deleted"] == 1
    assert call(chat, "POST", "/admin/flush", ADMIN, {"tenant": "alpha"})[1]["deleted"] == 2
    assert listed(chat) == []
    # removed everywhere: the same prompts are misses again, not hits of a removed entry
    _, again = call(chat, "POST", "/chat", "ka", {"prompt": "alpha one"})
    assert again["tier"] == "miss"


@pytest.mark.parametrize(
    ("method", "path", "key", "body", "query", "status"),
    [
        ("GET", "/admin/entries", None, None, "", 401),
        ("GET", "/admin/entries", "ka", None, "", 403),
        ("GET", "/admin/entries", "wrong", None, "", 403),
        ("POST", "/admin/flush", "ka", {"tenant": "beta"}, "", 403),
        ("POST", "/admin/forget", "kb", {"prompt": "alpha one"}, "", 403),
        ("POST", "/admin/flush", None, {"tenant": "beta"}, "", 401),
        ("GET", "/admin/entries", ADMIN, None, "limit=0", 422),
        ("GET", "/admin/entries", ADMIN, None, "limit=101", 422),
        ("GET", "/admin/entries", ADMIN, None, "cursor=-1", 422),
        ("GET", "/admin/entries", ADMIN, None, "limit=%C2%B2", 422),
        ("GET", "/admin/entries", ADMIN, None, "page=2", 422),
        ("POST", "/admin/flush", ADMIN, {}, "", 422),
        ("POST", "/admin/flush", ADMIN, {"tenant": ""}, "", 422),
        ("POST", "/admin/flush", ADMIN, {"tenant": 3}, "", 422),
        ("POST", "/admin/flush", ADMIN, {"everything": True}, "", 422),
        ("POST", "/admin/flush", ADMIN, {"prompt": "alpha one"}, "", 422),
        ("POST", "/admin/forget", ADMIN, {"tenant": "alpha"}, "", 422),
        ("POST", "/admin/forget", ADMIN, [], "", 422),
    ],
)
def test_rejected_calls_change_nothing(
    chat: Any, method: str, path: str, key: str | None, body: Any, query: str, status: int
) -> None:
    fill(chat)
    before = listed(chat)
    got, error = call(chat, method, path, key, body, query)
    assert got == status and set(error) == {"error"} and error["error"]["message"]
    assert listed(chat) == before


def test_without_an_admin_key_the_admin_api_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory")
    monkeypatch.delenv("PROMPTCACHE_API_KEYS", raising=False)
    monkeypatch.delenv("PROMPTCACHE_ADMIN_KEY", raising=False)
    runtime.reset()
    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=FakeLLM()
    )
    monkeypatch.setattr(runtime, "cache", lambda: cache)
    module = importlib.reload(importlib.import_module("promptcache_handlers.chat"))
    assert call(module, "POST", "/chat", None, {"prompt": "kept"})[0] == 200
    status, body = call(module, "POST", "/admin/flush", None, {"model": "m1"})
    assert status == 403 and "PROMPTCACHE_ADMIN_KEY" in body["error"]["message"]
    assert cache.store.count() == 1
    monkeypatch.undo()
    runtime.reset()


def test_listing_and_flushing_read_the_store_page_by_page(
    chat: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Store pages smaller than the entries (2 at a time): every entry listed once, in order,
    and a flush finds the matches on every page."""
    fill(chat)
    everything = listed(chat)
    monkeypatch.setattr(_admin, "_PAGE", 2)
    assert listed(chat) == everything
    alpha = [e for e in everything if e["tenant"] == "alpha"]
    assert listed(chat, "tenant=alpha&limit=3") == alpha[:3]
    _, page = call(chat, "GET", "/admin/entries", ADMIN, query="tenant=alpha&limit=3")
    _, rest = call(
        chat, "GET", "/admin/entries", ADMIN, query=f"tenant=alpha&cursor={page['next_cursor']}"
    )
    assert rest["entries"] == alpha[3:] and rest["next_cursor"] is None
    assert call(chat, "POST", "/admin/flush", ADMIN, {"model": "m1"})[1]["deleted"] == 5
    assert [e["prompt"] for e in listed(chat)] == ["alpha other model"]
