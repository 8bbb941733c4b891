"""Counters per tenant: a tenant's key reads its own tenant's /stats and /v1/models only, the
admin key reads every tenant's. Through the Lambda handlers, in-process, and on the accounting."""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from moto import mock_aws

from promptcache import ConfigError, PromptCache, Settings, runtime
from promptcache._accounting import tenant_prefix
from promptcache._errors import Forbidden
from promptcache._types import ChatRequest, Message
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.http.wire import reader
from promptcache.routes import ROUTES
from promptcache.runtime import with_secrets
from promptcache.settings import key_digest
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.unit.fakes import FakeEmbedder, FakeLLM, blend, unit

KEYS = "ka:alpha,kb:beta,kg:gamma"
ADMIN = "admin-key"


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory")
    monkeypatch.setenv("PROMPTCACHE_MODEL", "default-model")
    monkeypatch.setenv("PROMPTCACHE_API_KEYS", KEYS)
    monkeypatch.setenv("PROMPTCACHE_ADMIN_KEY", ADMIN)
    runtime.reset()
    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=FakeLLM()
    )
    monkeypatch.setattr(runtime, "cache", lambda: cache)
    modules = {
        name: importlib.reload(importlib.import_module(f"promptcache_handlers.{name}"))
        for name in ("chat", "stats", "health")
    }
    yield modules
    monkeypatch.undo()
    runtime.reset()


def call(
    modules: dict[str, Any],
    name: str,
    method: str,
    path: str,
    auth: str | None,
    body: Any = None,
    extra: dict[str, str] | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **(extra or {})}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    raw = b"" if body is None else json.dumps(body).encode()
    event = to_event(method, path, headers, raw)
    status, _, payload = from_result(modules[name].lambda_handler(event, LocalContext(name)))
    return status, json.loads(payload) if payload else None


def traffic(modules: dict[str, Any]) -> None:
    """alpha: two answers of alpha-model; beta: one of beta-secret-model, on /v1."""
    for prompt in ("alpha one", "alpha one"):
        body = {"prompt": prompt, "model": "alpha-model"}
        assert call(modules, "chat", "POST", "/chat", "ka", body)[0] == 200
    body = {"model": "beta-secret-model", "messages": [{"role": "user", "content": "beta q"}]}
    assert call(modules, "chat", "POST", "/v1/chat/completions", "kb", body)[0] == 200


def model_ids(body: Any) -> list[str]:
    return [m["id"] for m in body["data"]]


def test_a_tenant_key_never_sees_another_tenants_counters_or_models(
    handlers: dict[str, Any],
) -> None:
    traffic(handlers)
    status, body = call(handlers, "stats", "GET", "/stats", "ka")
    assert status == 200 and body["tenant"] == "alpha"
    assert body["requests"] == 2 and body["misses"] == 1 and body["hits"]["exact"] == 1
    assert (
        list(body["models"]) == ["alpha-model"] and body["models"]["alpha-model"]["requests"] == 2
    )
    assert body["entries"] is None  # a store counts every tenant's entries together
    assert body["embedder"]["dim"] > 0 and "threshold" in body and "tenants" not in body
    assert "beta" not in json.dumps(body)
    status, body = call(handlers, "stats", "GET", "/stats?tenant=alpha", "ka")
    assert status == 200 and body["requests"] == 2
    status, body = call(handlers, "stats", "GET", "/stats?tenant=beta", "ka")
    assert status == 403 and body["error"]["code"] == "forbidden" and "requests" not in body
    status, body = call(handlers, "stats", "GET", "/stats?tenant=nobody", "ka")
    assert status == 403
    status, body = call(handlers, "chat", "GET", "/v1/models", "ka")
    assert status == 200 and model_ids(body) == ["default-model", "alpha-model"]

    status, body = call(handlers, "stats", "GET", "/stats", "kb")
    assert body["tenant"] == "beta" and body["requests"] == 1 and body["misses"] == 1
    assert list(body["models"]) == ["beta-secret-model"] and "alpha" not in json.dumps(body)
    status, body = call(handlers, "chat", "GET", "/v1/models", "kb")
    assert model_ids(body) == ["default-model", "beta-secret-model"]

    # a configured tenant with no traffic yet: zeros, its own name, nobody else's models
    status, body = call(handlers, "stats", "GET", "/stats", "kg")
    assert status == 200 and body["tenant"] == "gamma" and body["requests"] == 0
    assert body["models"] == {} and body["mean_latency_ms"] == {"hit": None, "miss": None}
    status, body = call(handlers, "chat", "GET", "/v1/models", "kg")
    assert model_ids(body) == ["default-model"]


def test_the_admin_key_reads_every_tenant(handlers: dict[str, Any]) -> None:
    traffic(handlers)
    status, body = call(handlers, "stats", "GET", "/stats", ADMIN)
    assert status == 200 and "tenant" not in body
    assert body["requests"] == 3 and body["entries"] == 2  # the overall report, as before
    assert set(body["models"]) == {"alpha-model", "beta-secret-model"}
    assert set(body["tenants"]) == {"alpha", "beta", "gamma"}
    assert body["tenants"]["alpha"]["requests"] == 2
    assert list(body["tenants"]["beta"]["models"]) == ["beta-secret-model"]
    assert body["tenants"]["gamma"]["requests"] == 0
    status, body = call(handlers, "stats", "GET", "/stats?tenant=beta", ADMIN)
    assert status == 200 and body["tenant"] == "beta" and body["requests"] == 1
    assert body["entries"] is None and list(body["models"]) == ["beta-secret-model"]
    status, body = call(handlers, "stats", "GET", "/stats?tenant=nobody", ADMIN)
    assert status == 404 and body["error"]["code"] == "not_found"
    assert "nobody" in body["error"]["message"]
    status, body = call(handlers, "chat", "GET", "/v1/models", ADMIN)
    assert model_ids(body) == ["default-model", "alpha-model", "beta-secret-model"]


def test_top_entries_series_and_since_are_the_callers_own(handlers: dict[str, Any]) -> None:
    traffic(handlers)
    body = {"model": "beta-secret-model", "messages": [{"role": "user", "content": "beta q"}]}
    assert call(handlers, "chat", "POST", "/v1/chat/completions", "kb", body)[0] == 200
    status, alpha = call(handlers, "stats", "GET", "/stats", "ka")
    assert [(e["prompt"], e["hits"]) for e in alpha["top_entries"]] == [("alpha one", 1)]
    assert sum(p["requests"] for p in alpha["series"]["points"]) == 2
    status, beta = call(handlers, "stats", "GET", "/stats", "kb")
    assert [e["prompt"] for e in beta["top_entries"]] == ["beta q"]
    beta_entry = beta["top_entries"][0]["id"]
    status, shown = call(handlers, "chat", "GET", f"/entries/{beta_entry}", "ka")
    assert status == 404  # alpha cannot read beta's top entry either
    status, admin = call(handlers, "stats", "GET", "/stats", ADMIN)
    assert {e["prompt"] for e in admin["top_entries"]} == {"alpha one", "beta q"}
    assert [e["id"] for e in admin["tenants"]["alpha"]["top_entries"]] == [
        e["id"] for e in alpha["top_entries"]
    ]
    for since in ("1800000000x", "nan", "inf", "0", "2001-01-01T00:00:00", "9" * 20):
        status, error = call(handlers, "stats", "GET", f"/stats?since={since}", "ka")
        assert status == 400 and "'since'" in error["error"]["message"], since
    now = runtime.cache().clock()
    status, recent = call(handlers, "stats", "GET", f"/stats?since={int(now) - 7200}", "ka")
    assert status == 200 and recent["series"]["step_s"] == 60
    assert sum(p["requests"] for p in recent["series"]["points"]) == 2
    iso = datetime.fromtimestamp(now - 3 * 86400, UTC).isoformat().replace("+00:00", "Z")
    status, daily = call(handlers, "stats", "GET", f"/stats?since={iso}&tenant=beta", ADMIN)
    assert status == 200 and daily["series"]["step_s"] == 3600
    assert sum(p["requests"] for p in daily["series"]["points"]) == 2


def test_no_route_shows_a_tenant_anything_of_another(handlers: dict[str, Any]) -> None:
    """Every route of ROUTES, called with alpha's key after beta's traffic: nothing of beta's
    (its model, its prompt, its entry, its name) in any answer."""
    body = {"model": "beta-secret-model", "messages": [{"role": "user", "content": "beta q"}]}
    assert call(handlers, "chat", "POST", "/v1/chat/completions", "kb", body)[0] == 200
    assert call(handlers, "chat", "POST", "/v1/chat/completions", "kb", body)[0] == 200
    _, beta = call(handlers, "stats", "GET", "/stats", "kb")
    beta_entry = beta["top_entries"][0]["id"]
    assert call(handlers, "chat", "POST", "/chat", "ka", {"prompt": "alpha one"})[0] == 200
    beta_says = {"model": "beta-secret-model", "input": "beta responds"}
    status, beta_response = call(handlers, "chat", "POST", "/v1/responses", "kb", beta_says)
    assert status == 200
    assert call(handlers, "chat", "POST", "/chat", "ka", {"prompt": "alpha one"})[0] == 200
    secrets = ("beta", beta_entry, beta_response["id"])
    bodies = {
        "/chat": {"prompt": "alpha asks"},
        "/v1/chat/completions": {"model": "m", "messages": [{"role": "user", "content": "a"}]},
        "/v1/messages": {
            "model": "m",
            "max_tokens": 9,
            "messages": [{"role": "user", "content": "a"}],
        },
        "/v1/responses": {"model": "m", "input": "a"},
    }
    for (method, template), module in ROUTES.items():
        secret_id = beta_response["id"] if template.startswith("/v1/responses/") else beta_entry
        path = template.replace("{id}", secret_id)
        headers = {"Content-Type": "application/json", "Authorization": "Bearer ka"}
        raw = json.dumps(bodies[path]).encode() if path in bodies else b""
        event = to_event(method, path, headers, raw)
        result = handlers[module].lambda_handler(event, LocalContext(module))
        status, _, payload = from_result(result)
        text = payload.decode("utf-8", "replace")
        if "{id}" in template and template.startswith(("/entries/", "/v1/responses/")):
            # the same 404 as for an id that never existed
            assert status == 404, (method, path, status)
            never_id = ("resp_" if template.startswith("/v1/responses/") else "") + "f" * 32
            never = to_event(method, template.replace("{id}", never_id), headers, raw)
            other = from_result(handlers[module].lambda_handler(never, LocalContext(module)))
            assert text.replace(secret_id, never_id) == other[2].decode(), (method, path)
            text = text.replace(secret_id, "")  # its own request's id, echoed
        for secret in secrets:
            assert secret not in text, (method, path, secret)
    # beta's entry is still there for beta (alpha's DELETE removed nothing)
    assert call(handlers, "chat", "GET", f"/entries/{beta_entry}", "kb")[0] == 200


def test_the_messages_face_reaches_no_other_tenants_entry(handlers: dict[str, Any]) -> None:
    """The same request on /v1/messages under two tenants' keys (Bearer or x-api-key): one entry
    each, never the other's answer; the same request on /v1/chat/completions shares the caller's
    own entry only."""
    ask = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "beta q"}]}
    status, beta = call(handlers, "chat", "POST", "/v1/messages", "kb", ask)
    assert status == 200 and beta["type"] == "message"
    status, again = call(handlers, "chat", "POST", "/v1/messages", None, ask, {"x-api-key": "kb"})
    assert status == 200 and again["content"] == beta["content"]
    status, alpha = call(handlers, "chat", "POST", "/v1/messages", None, ask, {"x-api-key": "ka"})
    assert status == 200 and alpha["content"] != beta["content"]  # alpha's own miss
    completion = {"model": "m", "max_tokens": 9, "messages": ask["messages"]}
    status, shared = call(handlers, "chat", "POST", "/v1/chat/completions", "ka", completion)
    assert shared["choices"][0]["message"]["content"] == alpha["content"][0]["text"]
    report = call(handlers, "stats", "GET", "/stats", ADMIN)[1]
    assert (
        report["tenants"]["beta"]["misses"] == 1 and report["tenants"]["beta"]["hits"]["exact"] == 1
    )
    assert (
        report["tenants"]["alpha"]["misses"] == 1
        and report["tenants"]["alpha"]["hits"]["exact"] == 1
    )
    both = {"x-api-key": "ka", "Authorization": "Bearer kb"}  # two tenants' keys: neither
    raw = to_event("POST", "/v1/messages", {"Content-Type": "application/json", **both}, b"{}")
    status, _, payload = from_result(handlers["chat"].lambda_handler(raw, LocalContext("chat")))
    assert status == 400 and json.loads(payload)["error"]["type"] == "invalid_request_error"


def test_no_tenant_reaches_another_tenants_kept_response(handlers: dict[str, Any]) -> None:
    """A kept response is its tenant's: another tenant's GET and ``previous_response_id`` get
    exactly the answers an id that never existed gets; the admin key reads it only for the
    tenant it names."""
    status, beta = call(handlers, "chat", "POST", "/v1/responses", "kb", {"input": "beta secret"})
    assert status == 200 and beta["store"] is True
    rid, never = beta["id"], "resp_" + "f" * 32

    def same(auth: str, extra: dict[str, str] | None = None) -> None:
        got = call(handlers, "chat", "GET", f"/v1/responses/{rid}", auth, extra=extra)
        unknown = call(handlers, "chat", "GET", f"/v1/responses/{never}", auth, extra=extra)
        assert got[0] == unknown[0] == 404
        assert json.dumps(got[1]).replace(rid, never) == json.dumps(unknown[1])
        follow = {"input": "and then?", "previous_response_id": rid}
        got = call(handlers, "chat", "POST", "/v1/responses", auth, follow, extra)
        follow["previous_response_id"] = never
        unknown = call(handlers, "chat", "POST", "/v1/responses", auth, follow, extra)
        assert got[0] == unknown[0] == 400
        assert got[1]["error"]["code"] == "previous_response_not_found"
        assert json.dumps(got[1]).replace(rid, never) == json.dumps(unknown[1])

    same("ka")
    same("kg")
    same(ADMIN, {"X-Promptcache-Tenant": "alpha"})
    status, kept = call(
        handlers,
        "chat",
        "GET",
        f"/v1/responses/{rid}",
        ADMIN,
        extra={"X-Promptcache-Tenant": "beta"},
    )
    assert status == 200 and kept == beta
    assert call(handlers, "chat", "GET", f"/v1/responses/{rid}", "kb") == (200, beta)
    follow = {"input": "and then?", "previous_response_id": rid}
    assert call(handlers, "chat", "POST", "/v1/responses", "kb", follow)[0] == 200


def test_the_admin_key_chats_only_for_a_named_tenant(handlers: dict[str, Any]) -> None:
    status, body = call(handlers, "chat", "POST", "/chat", ADMIN, {"prompt": "hi"})
    assert status == 422 and "X-Promptcache-Tenant" in body["error"]["message"]
    completion = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    # 422 on the native face, 400 on OpenAI's (OpenAI's status for a request it refuses)
    assert call(handlers, "chat", "POST", "/v1/chat/completions", ADMIN, completion)[0] == 400
    nobody = {"X-Promptcache-Tenant": "nobody"}
    assert call(handlers, "chat", "POST", "/chat", ADMIN, {"prompt": "hi"}, nobody)[0] == 422
    assert call(handlers, "stats", "GET", "/stats", ADMIN)[1]["requests"] == 0  # nothing counted
    as_alpha = {"X-Promptcache-Tenant": "alpha"}
    status, body = call(handlers, "chat", "POST", "/chat", ADMIN, {"prompt": "hi"}, as_alpha)
    assert status == 200 and body["tier"] == "miss"
    assert call(handlers, "chat", "POST", "/chat", "ka", {"prompt": "hi"})[1]["tier"] == "exact"


def test_the_admin_key_answers_no_entry_route(handlers: dict[str, Any]) -> None:
    assert call(handlers, "chat", "GET", "/entries/" + "0" * 32, ADMIN)[0] == 403
    assert call(handlers, "chat", "DELETE", "/entries/" + "0" * 32, ADMIN)[0] == 403
    assert call(handlers, "stats", "GET", "/stats", None)[0] == 401
    assert call(handlers, "stats", "GET", "/stats", "admin-key2")[0] == 403
    assert call(handlers, "stats", "GET", "/stats", ADMIN[:-1])[0] == 403
    assert call(handlers, "chat", "GET", "/v1/models", "wrong")[0] == 403


def test_without_api_keys_stats_and_models_are_as_before(
    handlers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMPTCACHE_API_KEYS")
    runtime.settings.cache_clear()
    body = {"prompt": "hello", "model": "some-model"}
    assert call(handlers, "chat", "POST", "/chat", None, body)[0] == 200
    for path in ("/stats", "/stats?tenant=other"):
        status, report = call(handlers, "stats", "GET", path, None)
        assert status == 200 and report["requests"] == 1 and report["entries"] == 1
        assert "tenant" not in report and "tenants" not in report
        assert list(report["models"]) == ["some-model"]
    _, models = call(handlers, "chat", "GET", "/v1/models", None)
    assert model_ids(models) == ["default-model", "some-model"]


# ---------------------------------------------------------------- the counters' keys
ODD_TENANTS = ["a", "a|b", "a%7Cb", "a%b", "|", "%", "%7C", "t|a|", "m|x|requests", "é:ü ,x", ""]


def request(tenant: str, model: str) -> ChatRequest:
    return ChatRequest(messages=(Message("user", f"q {tenant!r}"),), model=model, tenant=tenant)


def test_any_tenant_name_gets_its_own_counters() -> None:
    cache = PromptCache(  # a still clock: the reports' entry ages do not move between reads
        store=MemoryStore(),
        embedder=FakeEmbedder(),
        stats=MemoryStats(),
        llm=FakeLLM(),
        clock=lambda: 1_800_000_000.0,
    )
    for n, tenant in enumerate(ODD_TENANTS):
        for _ in range(n + 1):
            cache.chat(request(tenant, f"model|{n}"))
    report = cache.report(tenants=[])
    assert set(report["tenants"]) == set(ODD_TENANTS)
    assert report["requests"] == sum(range(1, len(ODD_TENANTS) + 1))
    for n, tenant in enumerate(ODD_TENANTS):
        own = cache.tenant_report(tenant)
        assert own is not None and own["tenant"] == tenant and own["requests"] == n + 1
        assert list(own["models"]) == [f"model|{n}"] and own["misses"] == 1
        assert report["tenants"][tenant] == {
            k: v
            for k, v in own.items()
            if k not in ("tenant", "entries", "threshold", "embedder", "series", "latency_ms")
        }
        assert cache.models(tenant) == [f"model|{n}"]
    assert cache.tenant_report("a|") is None and cache.tenant_report("b", ["b"]) is not None
    assert cache.models() == sorted(f"model|{n}" for n in range(len(ODD_TENANTS)))
    prefixes = {tenant_prefix(t) for t in ODD_TENANTS}
    assert len(prefixes) == len(ODD_TENANTS)
    assert all(p.count("|") == 2 for p in prefixes)  # t|, and the one closing the tenant


# ---------------------------------------------------------------- the admin key's settings
def test_the_admin_key_must_differ_from_the_tenant_keys() -> None:
    with pytest.raises(ConfigError, match="ADMIN_KEY"):
        Settings.from_env({"PROMPTCACHE_API_KEYS": "k1:a", "PROMPTCACHE_ADMIN_KEY": "k1"})
    settings = Settings.from_env({"PROMPTCACHE_API_KEYS": "k1:a", "PROMPTCACHE_ADMIN_KEY": "k2"})
    assert settings.admin_key == key_digest("k2")
    assert "k2" not in repr(settings) and "k1" not in repr(settings)


@mock_aws
def test_the_admin_key_comes_from_ssm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/pc/a1/api-keys", Value="k1:alpha", Type="SecureString")
    ssm.put_parameter(Name="/pc/a1/admin-key", Value="root\n", Type="SecureString")
    env = {
        "PROMPTCACHE_API_KEYS_SSM_PARAMETER": "/pc/a1/api-keys",
        "PROMPTCACHE_ADMIN_KEY_SSM_PARAMETER": "/pc/a1/admin-key",
    }
    settings = with_secrets(Settings.from_env(env))
    assert settings.admin_key == key_digest("root")
    assert dict(settings.api_keys) == {key_digest("k1"): "alpha"}
    direct = with_secrets(Settings.from_env({**env, "PROMPTCACHE_ADMIN_KEY": "direct"}))
    assert direct.admin_key == key_digest("direct")
    ssm.put_parameter(Name="/pc/a1/clash", Value="k1", Type="SecureString")
    with pytest.raises(ConfigError, match="ADMIN_KEY"):
        with_secrets(
            Settings.from_env({**env, "PROMPTCACHE_ADMIN_KEY_SSM_PARAMETER": "/pc/a1/clash"})
        )
    with pytest.raises(ConfigError, match="/pc/a1/absent"):
        with_secrets(
            Settings.from_env({**env, "PROMPTCACHE_ADMIN_KEY_SSM_PARAMETER": "/pc/a1/absent"})
        )


def test_health_details_need_the_admin_key(handlers: dict[str, Any]) -> None:
    for auth, detailed in ((None, False), ("wrong-key", False), (ADMIN, True), ("ka", False)):
        status, body = call(handlers, "health", "GET", "/health", auth)
        assert status == 200
        assert ("detail" in body["dependencies"]["store"]) is detailed, auth


# ---------------------------------------------------------------- threshold overrides
LOWER = {"prompt": "How do I reset my password?", "threshold": 0.1}
LOWER_V1 = {
    "model": "default-model",
    "messages": [{"role": "user", "content": "How do I reset my password?"}],
    "promptcache": {"threshold": 0.1},
}


@pytest.mark.parametrize(("path", "body"), [("/chat", LOWER), ("/v1/chat/completions", LOWER_V1)])
def test_a_tenant_key_may_only_raise_the_threshold(
    handlers: dict[str, Any], path: str, body: dict[str, Any]
) -> None:
    """A lower threshold would serve the nearest stored answer to anything: the cache as an
    oracle. Refused (422 on the native face, 400 on OpenAI's, naming the field and the
    configured threshold), nothing answered."""
    plain = {"prompt": "Something stored"}
    assert call(handlers, "chat", "POST", "/chat", "ka", plain)[0] == 200
    before = call(handlers, "stats", "GET", "/stats", ADMIN)[1]
    status, error = call(handlers, "chat", "POST", path, "ka", body)
    assert status == (422 if path == "/chat" else 400)
    if path != "/chat":
        assert error["error"]["param"] == "promptcache.threshold"
    assert "'threshold' 0.1 is below this cache's threshold 0.9" in error["error"]["message"]
    after = call(handlers, "stats", "GET", "/stats", ADMIN)[1]
    assert after["requests"] == before["requests"] and after["entries"] == before["entries"] == 1
    higher = {**body, "threshold": 0.95} if path == "/chat" else body | {"promptcache": {}}
    assert call(handlers, "chat", "POST", path, "ka", higher)[0] == 200
    as_configured = {**body, "threshold": 0.9} if path == "/chat" else higher
    assert call(handlers, "chat", "POST", path, "ka", as_configured)[0] == 200


@pytest.mark.parametrize(("path", "body"), [("/chat", LOWER), ("/v1/chat/completions", LOWER_V1)])
def test_the_admin_key_may_lower_it(
    handlers: dict[str, Any], path: str, body: dict[str, Any]
) -> None:
    embedder = runtime.cache().embedder
    assert isinstance(embedder, FakeEmbedder)
    far = blend(unit("something stored"), unit("x"), 0.5)  # similarity 0.5 to the stored one
    embedder.fixed["how do i reset my password?"] = far
    assert call(handlers, "chat", "POST", "/chat", "ka", {"prompt": "Something stored"})[0] == 200
    assert call(handlers, "chat", "POST", path, "ka", body)[0] == (422 if path == "/chat" else 400)
    as_alpha = {"X-Promptcache-Tenant": "alpha"}
    assert call(handlers, "chat", "POST", path, ADMIN, body, as_alpha)[0] == 200
    report = call(handlers, "stats", "GET", "/stats", "ka")[1]
    assert report["hits"]["semantic"] == 1 and report["misses"] == 1  # the only stored answer


# ---------------------------------------------------------------- the key's one canonical form
def test_one_canonical_authorization_on_the_lambda_path(handlers: dict[str, Any]) -> None:
    """API Gateway v2 puts repeated headers in the event joined with commas: a 400; a key with
    whitespace around or inside it: a 401; a key differing in case: unknown (403)."""
    joined = {"Authorization": "Bearer kb,Bearer ka"}
    status, body = call(handlers, "chat", "POST", "/chat", None, {"prompt": "hi"}, joined)
    assert status == 400 and "one Authorization header" in body["error"]["message"]
    for header in ("Bearer  ka", "Bearer ka\t", "Bearer k a", "Bearer \u00a0ka"):
        status, body = call(
            handlers, "chat", "POST", "/chat", None, {"prompt": "hi"}, {"Authorization": header}
        )
        assert status == 401 and "whitespace" in body["error"]["message"], header
    assert call(handlers, "chat", "POST", "/chat", "KA", {"prompt": "hi"})[0] == 403
    assert call(handlers, "stats", "GET", "/stats", ADMIN)[1]["requests"] == 0
    assert call(handlers, "chat", "POST", "/chat", "ka", {"prompt": "hi"})[0] == 200
    scheme = {"Authorization": "bearer ka"}  # the scheme is case-insensitive (RFC 9110)
    assert call(handlers, "chat", "POST", "/chat", None, {"prompt": "hi"}, scheme)[0] == 200


def test_keys_configured_as_digests_authenticate(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = hashlib.sha256(b"secret-alpha").hexdigest()
    settings = Settings.from_env({"PROMPTCACHE_API_KEYS": f"sha256:{digest}:alpha"})
    event = to_event("GET", "/stats", {"Authorization": "Bearer secret-alpha"}, b"")
    assert reader(APIGatewayProxyEventV2(event), settings) == "alpha"
    wrong = to_event("GET", "/stats", {"Authorization": f"Bearer sha256:{digest}"}, b"")
    with pytest.raises(Forbidden):  # the digest itself is no key
        reader(APIGatewayProxyEventV2(wrong), settings)
