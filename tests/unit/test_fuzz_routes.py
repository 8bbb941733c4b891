"""Property-based fuzzing of every route at once, through the handlers in-process (no sockets:
the per-request cost is the handler's, about a millisecond here). Each generated example is one
batch: a body (from the body fuzz's strategies), an entry id, a query string and a set of
credentials, sent to every route of ``ROUTES`` (``POST /chat``, ``POST /v1/chat/completions``,
``POST /v1/messages`` and ``POST /v1/responses`` buffered and live-streamed, ``GET
/v1/responses/{id}``, ``POST /v1/messages/count_tokens``, ``GET`` and ``DELETE /entries/{id}``,
``GET /stats``, ``GET /health``, ``GET /v1/models``, ``/metrics``, the dashboard, the admin API),
under two of the credentials (a tenant's key, the other tenant's, the admin key, a wrong key,
none, a malformed header, a key as ``x-api-key``, both headers). Never a 5xx; every 4xx is a JSON
error naming the problem, in the shape of the path's face; a rejected request changes neither
the stored entries nor the counters and asks no model.

``TEST_FUZZ_BATCHES`` sets the examples (default 560, what CI runs: 42 requests each, 23,520
requests, about 35 s here); the test asserts how many requests it sent.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptcache import ChatRequest, Message, PromptCache, runtime
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.routes import ROUTES, route_path
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.unit.fakes import FakeEmbedder, FakeLLM
from tests.unit.test_fuzz_bodies import (
    CHAT_BODIES,
    MESSAGES_BODIES,
    RESPONSES_BODIES,
    TEXT,
    V1_BODIES,
    VALUES,
    check_error,
    stored_entries,
    wire,
)

BATCHES = int(os.environ.get("TEST_FUZZ_BATCHES") or 560)
KEYS = {"alpha": "key-alpha", "beta": "key-beta"}
ADMIN = "key-admin"


@pytest.fixture(scope="module")
def app() -> Iterator[dict[str, Any]]:
    patch = pytest.MonkeyPatch()
    patch.setenv("PROMPTCACHE_STORE", "memory")
    patch.setenv("PROMPTCACHE_API_KEYS", ",".join(f"{k}:{t}" for t, k in KEYS.items()))
    patch.setenv("PROMPTCACHE_ADMIN_KEY", ADMIN)
    patch.delenv("PROMPTCACHE_RATE_LIMIT_PER_MINUTE", raising=False)
    runtime.reset()
    llm = FakeLLM()
    cache = PromptCache(store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)
    patch.setattr(runtime, "cache", lambda: cache)
    handlers = {
        name: importlib.reload(importlib.import_module(f"promptcache_handlers.{name}"))
        for name in sorted(set(ROUTES.values()))
    }
    # Each rejected request is logged with its traceback by the tracer: quiet here (it is the
    # costliest part of a rejected request, and pytest would keep every record).
    quiet = logging.getLogger("aws_lambda_powertools.tracing.tracer")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    stored = {
        t: cache.chat(
            ChatRequest(messages=(Message("user", f"{t}'s question"),), model="m", tenant=t)
        )
        for t in KEYS
    }
    sent: Counter[str] = Counter()
    yield {"handlers": handlers, "cache": cache, "llm": llm, "stored": stored, "sent": sent}
    quiet.setLevel(level)
    patch.undo()
    runtime.reset()


CREDENTIALS = st.sampled_from(
    [
        {"Authorization": "Bearer key-alpha"},
        {"Authorization": "Bearer key-beta"},
        {"Authorization": f"Bearer {ADMIN}"},
        {"Authorization": "Bearer wrong"},
        {},
        {"Authorization": "key-alpha"},
        {"Authorization": "Bearer  key-alpha "},
        {"Authorization": "bearer key-alpha"},
        {"x-api-key": "key-alpha"},
        {"x-api-key": "key-beta", "anthropic-version": "2023-06-01"},
        {"x-api-key": "key-alpha", "Authorization": "Bearer key-beta"},
        {"x-api-key": "key-alpha", "Authorization": "Bearer key-alpha"},
    ]
)
SEGMENT = st.one_of(
    st.sampled_from(["alpha", "beta", "missing", "0" * 32, "", "..", "%00", "a" * 300]),
    st.text(max_size=40),
)
QUERY = st.one_of(
    st.just(""),
    st.dictionaries(st.sampled_from(["tenant", "t", "details", ""]), TEXT, max_size=3).map(
        lambda q: urlencode(q, encoding="utf-8", errors="surrogatepass")
    ),
    st.text(max_size=30).map(lambda q: quote(q, safe="=&", errors="surrogatepass")),
)
BATCH = st.fixed_dictionaries(
    {
        "body": wire(st.one_of(CHAT_BODIES, V1_BODIES, RESPONSES_BODIES)),
        "messages": wire(MESSAGES_BODIES),
        "entry": SEGMENT,
        "query": QUERY,
        "who": st.lists(CREDENTIALS, min_size=2, max_size=2),
        "stream": st.booleans(),
        "odd": VALUES.map(lambda v: json.dumps(v).encode("ascii")),
    }
)


def snapshot(app: dict[str, Any]) -> tuple[Any, ...]:
    """What a rejected request must leave as it was: the stored entries (all of them, expired or
    not: a generated ``ttl`` may expire one during a request), the counters, the model's calls."""
    cache: PromptCache = app["cache"]
    return stored_entries(cache), cache.stats.read(), app["llm"].calls


def send(
    app: dict[str, Any],
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    live: bool = False,
) -> None:
    path = target.split("?", 1)[0]
    template = route_path(path)
    route = ROUTES.get((method, template or ""), "chat")
    module = app["handlers"][route]
    before = snapshot(app)
    event = to_event(method, target, {"Content-Type": "application/json", **headers}, body)
    if live:
        result, chunks = module.stream_handler(event, LocalContext(route))
    else:
        result, chunks = module.lambda_handler(event, LocalContext(route)), None
    status, out_headers, payload = from_result(result)
    if chunks is not None:
        payload = b"".join(chunks)
    app["sent"][f"{method} {template}"] += 1
    assert status < 500, (status, method, target, headers, body[:200], payload[:300])
    if status >= 400:
        content_type = next((v for k, v in out_headers if k.lower() == "content-type"), "")
        assert content_type == "application/json", (status, target, content_type)
        error = check_error(path, payload)
        assert snapshot(app) == before, (status, error, method, target, body[:200])


@settings(
    max_examples=BATCHES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=BATCH)
def test_every_route_under_generated_requests(app: dict[str, Any], batch: dict[str, Any]) -> None:
    entry = quote(batch["entry"], safe="", errors="surrogatepass")
    ids = [entry] + [r.entry_id or "" for r in app["stored"].values()]
    query = f"?{batch['query']}" if batch["query"] else ""
    for headers in batch["who"]:
        send(app, "POST", "/chat", headers, batch["body"])
        send(app, "POST", "/v1/chat/completions", headers, batch["body"])
        send(app, "POST", "/v1/chat/completions", headers, batch["odd"], live=batch["stream"])
        send(app, "POST", "/v1/messages", headers, batch["messages"], live=batch["stream"])
        send(app, "POST", "/v1/messages", headers, batch["body"])
        send(app, "POST", "/v1/messages/count_tokens", headers, batch["messages"])
        send(app, "GET", f"/entries/{ids[0]}{query}", headers, b"")
        send(app, "GET", f"/entries/{ids[1 + len(headers) % 2]}", headers, b"")
        send(app, "DELETE", f"/entries/{entry}{query}", headers, batch["odd"])
        send(app, "GET", f"/stats{query}", headers, b"")
        send(app, "GET", f"/health{query}", headers, b"")
        send(app, "GET", f"/v1/models{query}", headers, b"")
        send(app, "POST", "/v1/responses", headers, batch["body"], live=batch["stream"])
        send(app, "GET", f"/v1/responses/{entry}{query}", headers, b"")
        send(app, "GET", f"/metrics{query}", headers, b"")
        for page in ("/dashboard", "/dashboard.js", "/dashboard.css"):
            send(app, "GET", f"{page}{query}", headers, b"")
        send(app, "GET", f"/admin/entries{query}", headers, b"")
        send(app, "POST", "/admin/flush", headers, batch["odd"])
        send(app, "POST", "/admin/forget", headers, batch["body"])


def test_the_fuzz_sent_enough_requests_over_every_route(app: dict[str, Any]) -> None:
    """Runs after the fuzz (same module fixture): every route was sent its share."""
    sent = app["sent"]
    assert sum(sent.values()) >= 42 * BATCHES, (sum(sent.values()) / BATCHES, sent)
    routes = {f"{m} {p}" for m, p in ROUTES}
    assert routes <= set(sent), (routes, sent)
