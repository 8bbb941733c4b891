"""The Lambda handlers, invoked in-process with API Gateway v2 events (no server)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from promptcache import PromptCache, runtime
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.unit.fakes import FakeEmbedder, FakeLLM


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory")
    monkeypatch.setenv("PROMPTCACHE_API_KEYS", "secret-key:acme")
    monkeypatch.setenv("PROMPTCACHE_RATE_LIMIT_PER_MINUTE", "5")
    runtime.reset()
    llm = FakeLLM()
    cache = PromptCache(store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)
    monkeypatch.setattr(runtime, "cache", lambda: cache)
    modules = {
        name: importlib.reload(importlib.import_module(f"promptcache_handlers.{name}"))
        for name in ("chat", "stats", "health")
    }
    yield {"modules": modules, "llm": llm, "cache": cache}
    monkeypatch.undo()
    runtime.reset()


def call(
    handlers: dict[str, Any],
    name: str,
    method: str,
    path: str,
    body: Any = None,
    auth: str | None = "secret-key",
    **headers: str,
) -> tuple[int, dict[str, str], Any]:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json", **headers}
    if auth:
        hdrs["Authorization"] = f"Bearer {auth}"
    event = to_event(method, path, hdrs, raw)
    status, header_list, payload = from_result(
        handlers["modules"][name].lambda_handler(event, LocalContext(name))
    )
    return status, {k.lower(): v for k, v in header_list}, json.loads(payload) if payload else None


def test_chat_round_trip(handlers: dict[str, Any]) -> None:
    status, headers, body = call(handlers, "chat", "POST", "/chat", {"prompt": "hello there"})
    assert status == 200 and body["tier"] == "miss" and headers["x-promptcache-tier"] == "miss"
    status, headers, body = call(handlers, "chat", "POST", "/chat", {"prompt": " hello  there"})
    assert body["tier"] == "exact" and headers["x-promptcache-entry"] == body["entry_id"]
    assert "x-promptcache-bypass" not in headers
    status, headers, body = call(
        handlers, "chat", "POST", "/chat", {"prompt": "hello there", "cache": "skip"}
    )
    assert body["tier"] == "bypass" and headers["x-promptcache-bypass"] == "cache=skip"


def test_auth(handlers: dict[str, Any]) -> None:
    status, _, body = call(handlers, "chat", "POST", "/chat", {"prompt": "x"}, auth=None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, _, body = call(handlers, "chat", "POST", "/chat", {"prompt": "x"}, auth="wrong")
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, _, _ = call(handlers, "stats", "GET", "/stats", auth=None)
    assert status == 401
    status, _, _ = call(handlers, "health", "GET", "/health", auth=None)
    assert status == 200  # health stays open for load balancers and uptime checks
    assert handlers["llm"].calls == 0


def test_tenants_do_not_share_entries(
    handlers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTCACHE_API_KEYS", "k1:alpha,k2:beta")
    runtime.settings.cache_clear()
    for name in ("chat",):
        importlib.reload(handlers["modules"][name])
    assert (
        call(handlers, "chat", "POST", "/chat", {"prompt": "shared?"}, auth="k1")[2]["tier"]
        == "miss"
    )
    assert (
        call(handlers, "chat", "POST", "/chat", {"prompt": "shared?"}, auth="k2")[2]["tier"]
        == "miss"
    )
    assert (
        call(handlers, "chat", "POST", "/chat", {"prompt": "shared?"}, auth="k1")[2]["tier"]
        == "exact"
    )


def test_rate_limit(handlers: dict[str, Any]) -> None:
    statuses = [call(handlers, "chat", "POST", "/chat", {"prompt": f"q{i}"})[0] for i in range(6)]
    assert statuses == [200] * 5 + [429]


def test_messages_and_validation(handlers: dict[str, Any]) -> None:
    ok = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    }
    assert call(handlers, "chat", "POST", "/chat", ok)[0] == 200
    last_not_user = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    }
    status, _, body = call(handlers, "chat", "POST", "/chat", last_not_user)
    assert status == 422 and "last message" in body["error"]["message"]
    status, _, body = call(handlers, "chat", "POST", "/chat", {"messages": [{"role": "user"}]})
    assert status == 422 and "messages[0].content" in body["error"]["message"]


def test_base64_body(handlers: dict[str, Any]) -> None:
    event = to_event(
        "POST",
        "/chat",
        {"content-type": "application/json", "authorization": "Bearer secret-key"},
        b"",
    )
    import base64

    event["body"] = base64.b64encode(b'{"prompt": "encoded"}').decode()
    event["isBase64Encoded"] = True
    status, _, payload = from_result(
        handlers["modules"]["chat"].lambda_handler(event, LocalContext("chat"))
    )
    assert status == 200 and json.loads(payload)["tier"] == "miss"


def test_stats_and_health_shapes(handlers: dict[str, Any]) -> None:
    call(handlers, "chat", "POST", "/chat", {"prompt": "hello"})
    status, _, body = call(handlers, "stats", "GET", "/stats")
    assert status == 200 and body["misses"] == 1 and body["tenant"] == "acme"
    assert body["entries"] is None  # a tenant's view: the store counts all tenants' entries
    status, _, body = call(handlers, "health", "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    assert set(body["dependencies"]) == {"store", "embedder", "stats", "llm"}


def test_delete_entry(handlers: dict[str, Any]) -> None:
    _, _, first = call(handlers, "chat", "POST", "/chat", {"prompt": "What is a  monad?"})
    entry = first["entry_id"]
    status, _, body = call(handlers, "chat", "GET", f"/entries/{entry}")
    assert status == 200
    assert body["id"] == entry and body["prompt"] == "What is a monad?"
    assert body["response"] == first["response"] and body["model"] == first["model"]
    assert body["usage"] == first["usage"] and body["expires_at"] > body["created_at"]
    status, _, body = call(handlers, "chat", "DELETE", f"/entries/{entry}")
    assert status == 200
    assert body == {"deleted": entry, "prompt": "What is a monad?", "model": first["model"]}
    status, _, body = call(handlers, "chat", "DELETE", f"/entries/{entry}")
    assert (
        status == 404 and body["error"]["code"] == "not_found" and entry in body["error"]["message"]
    )
    _, _, again = call(handlers, "chat", "POST", "/chat", {"prompt": "What is a monad?"})
    assert again["tier"] == "miss" and handlers["llm"].calls == 2


def test_delete_entry_failures(handlers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, first = call(handlers, "chat", "POST", "/chat", {"prompt": "keep me"})
    entry = first["entry_id"]
    status, _, body = call(handlers, "chat", "DELETE", f"/entries/{entry}", auth=None)
    assert status == 401
    status, _, body = call(handlers, "chat", "DELETE", "/entries/not-an-id")
    assert status == 400 and "32 hex characters" in body["error"]["message"]
    status, headers, body = call(handlers, "chat", "PUT", f"/entries/{entry}")
    assert status == 405 and headers["allow"] == "DELETE, GET"
    status, _, body = call(handlers, "chat", "GET", "/entries/not-an-id")
    assert status == 400 and "32 hex characters" in body["error"]["message"]
    status, _, body = call(handlers, "chat", "DELETE", "/entries")
    assert status == 404 and "DELETE /entries/{id}" in body["error"]["message"]

    def down(entry_id: str) -> None:
        raise OSError("store unreachable")

    monkeypatch.setattr(handlers["cache"].store, "get", down)
    for method in ("GET", "DELETE"):
        status, _, body = call(handlers, "chat", method, f"/entries/{entry}")
        assert status == 503 and body["error"]["code"] == "store_error"
    monkeypatch.undo()
    assert handlers["cache"].store.get(entry) is not None  # every failure left it in place


def test_delete_entry_of_another_tenant_is_not_found(
    handlers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTCACHE_API_KEYS", "k1:alpha,k2:beta")
    runtime.settings.cache_clear()
    importlib.reload(handlers["modules"]["chat"])
    _, _, first = call(handlers, "chat", "POST", "/chat", {"prompt": "mine"}, auth="k1")
    for method in ("GET", "DELETE"):
        status, _, _ = call(handlers, "chat", method, f"/entries/{first['entry_id']}", auth="k2")
        assert status == 404
    _, _, again = call(handlers, "chat", "POST", "/chat", {"prompt": "mine"}, auth="k1")
    assert again["tier"] == "exact"
