"""GET /metrics: Prometheus text exposition, read back with prometheus_client's own parser; the
admin key only when API keys are configured."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from promptcache import runtime
from promptcache.http.prometheus import render
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.unit.test_tenants import ADMIN, call, handlers, traffic  # noqa: F401 - the fixture


def scrape(modules: dict[str, Any], auth: str | None) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    event = to_event("GET", "/metrics", headers, b"")
    status, head, payload = from_result(modules["stats"].lambda_handler(event, LocalContext("s")))
    content_type = next(v for k, v in head if k.lower() == "content-type")
    return status, content_type, payload.decode()


def samples(text: str) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, []).extend(family.samples)
    return out


def value(found: dict[str, list[Sample]], family: str, name: str, **labels: str) -> float:
    hits = [
        s.value
        for s in found[family]
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(hits)


def test_metrics_parse_and_equal_the_stats(handlers: dict[str, Any]) -> None:  # noqa: F811
    traffic(handlers)
    status, content_type, text = scrape(handlers, ADMIN)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    found = samples(text)
    _, stats = call(handlers, "stats", "GET", "/stats", ADMIN)
    requests = "promptcache_cache_requests"  # the parser strips _total off counter families
    for tenant in ("alpha", "beta"):
        own = stats["tenants"][tenant]
        for tier, expected in (
            ("exact", own["hits"]["exact"]),
            ("semantic", own["hits"]["semantic"]),
            ("miss", own["misses"]),
            ("bypass", own["bypasses"]),
        ):
            shown = value(found, requests, requests + "_total", tenant=tenant, tier=tier)
            assert shown == expected, (tenant, tier)
        _, detail = call(handlers, "stats", "GET", f"/stats?tenant={tenant}", ADMIN)
        hist = detail["latency_ms"]  # a tenant's histograms come with ?tenant=
        lookup = "promptcache_cache_lookup_duration_seconds"
        assert value(found, lookup, lookup + "_count", tenant=tenant) == hist["lookup"]["count"]
        saved = "promptcache_cache_tokens_saved"
        assert value(found, saved, saved + "_total", tenant=tenant) == own["tokens_saved"]
        op = "gen_ai_client_operation_duration_seconds"
        assert value(found, op, op + "_count", tenant=tenant) == hist["model"]["count"]
        usage = "gen_ai_client_token_usage"
        assert (
            value(found, usage, usage + "_count", tenant=tenant, gen_ai_token_type="input")
            == (own["misses"])
        )
    assert value(found, requests, requests + "_total", model="alpha-model") == 2
    assert value(found, "promptcache_cache_entries", "promptcache_cache_entries") == 2
    embed = "promptcache_embedding_duration_seconds"
    assert {f.name for f in text_string_to_metric_families(text)} >= {
        requests,
        embed,
        "gen_ai_client_operation_duration_seconds",
        "gen_ai_client_token_usage",
        "promptcache_cache_request_duration_seconds",
        "promptcache_cache_rejections",
    }
    buckets = [
        s for s in found[embed] if s.name == embed + "_bucket" and s.labels["tenant"] == "alpha"
    ]
    assert buckets[-1].labels["le"] == "+Inf"
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)  # cumulative


def test_metrics_need_the_admin_key(handlers: dict[str, Any]) -> None:  # noqa: F811
    traffic(handlers)
    status, content_type, text = scrape(handlers, "ka")
    assert status == 403 and content_type == "application/json" and "admin key" in text
    assert "alpha" not in text and "beta" not in text
    assert scrape(handlers, None)[0] == 401
    assert scrape(handlers, "wrong")[0] == 403


def test_without_api_keys_metrics_are_open(
    handlers: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMPTCACHE_API_KEYS")
    runtime.settings.cache_clear()
    assert call(handlers, "chat", "POST", "/chat", None, {"prompt": "open"})[0] == 200
    status, _, text = scrape(handlers, None)
    assert status == 200
    found = samples(text)
    name = "promptcache_cache_requests"
    assert value(found, name, name + "_total", tenant="default", tier="miss") == 1


def test_label_values_are_escaped() -> None:
    counters = {'m|we"ird\\\nmodel|hits.exact': 2.0, "hits.exact": 2.0, "rejected.numbers": 1.0}
    text = render({'ten"ant\\\n': counters}, None)
    found = samples(text)
    [sample] = [s for s in found["promptcache_cache_requests"] if s.labels["tier"] == "exact"]
    assert sample.labels == {"tenant": 'ten"ant\\\n', "model": 'we"ird\\\nmodel', "tier": "exact"}
    assert sample.value == 2
    assert "promptcache_cache_entries" not in found
    rejected = found["promptcache_cache_rejections"]
    assert rejected[0].labels["guard"] == "numbers" and rejected[0].value == 1
