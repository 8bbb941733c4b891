"""The Upstash key layout (adapters/upstash/_keys.py): one place names every key under the
prefix, and clear() keeps the stats hash because the stats write the layout's key."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from promptcache.adapters.upstash import KeyLayout, UpstashStats, UpstashStore

URL = "https://example-12345.upstash.io"


def test_every_key_is_under_the_prefix() -> None:
    keys = KeyLayout("t:")
    assert [
        keys.entry("ID"),
        keys.exact("N", "K"),
        keys.ids,
        keys.namespaces,
        keys.epoch,
        keys.gen("N"),
        keys.log("N", "E.G"),
        keys.log("N", "E.G", 2),
        keys.segments("N", "E.G"),
        keys.lock("fill:x"),
        keys.window("rate:t:1"),
        keys.stats,
    ] == [
        "t:e:ID",
        "t:x:N:K",
        "t:ids",
        "t:nss",
        "t:epoch",
        "t:gen:N",
        "t:log:N:E.G",
        "t:log:N:E.G:2",
        "t:seg:N:E.G",
        "t:lock:fill:x",
        "t:window:rate:t:1",
        "t:stats",
    ]
    assert KeyLayout().stats == "pc:stats"  # the default prefix


def test_segments_derive_from_segment_zero() -> None:
    keys = KeyLayout("p:")
    log = keys.log("N", "E.G")
    assert keys.segment(log, 0) == log and keys.segment(log, 3) == keys.log("N", "E.G", 3)
    assert keys.segments_of(log) == keys.segments("N", "E.G")


def test_clear_keeps_the_epoch_and_the_stats() -> None:
    keys = KeyLayout("t:")
    assert keys.kept_by_clear == {"t:epoch", "t:stats"}


@pytest.mark.parametrize(
    ("prefix", "pattern"), [("pc:", "pc:*"), ("a*b?[c]\\:", "a\\*b\\?\\[c\\]\\\\:*")]
)
def test_the_scan_pattern_matches_the_prefix_only(prefix: str, pattern: str) -> None:
    assert KeyLayout(prefix).pattern == pattern


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


@pytest.mark.parametrize("prefix", ["pc:", "tenant-7:"])
def test_the_stats_hash_is_the_one_clear_keeps(prefix: str) -> None:
    """Whatever the prefix, the key UpstashStats writes is one clear() leaves."""
    seen: list[list[str]] = []
    stored = [f"{prefix}e:a", f"{prefix}epoch", f"{prefix}stats", f"{prefix}lock:fill:x"]

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        commands = body if request.url.path == "/multi-exec" else [body]
        seen.extend(commands)
        if commands[0][0] == "SCAN":
            return httpx.Response(200, json={"result": [b64("0"), [b64(k) for k in stored]]})
        if request.url.path == "/multi-exec":
            return httpx.Response(200, json=[{"result": b64("1")}])
        return httpx.Response(200, json={"result": "OK"})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    UpstashStats(client, URL, "tok", prefix=prefix).add({"requests": 1})
    assert UpstashStore(client, URL, "tok", prefix=prefix).clear() == 1
    (stats_key,) = {c[3] for c in seen if c[0] == "EVAL" and "HINCRBYFLOAT" in c[1]}
    (unlinked,) = [c[1:] for c in seen if c[0] == "UNLINK"]
    assert stats_key == f"{prefix}stats" and stats_key not in unlinked
    assert unlinked == [f"{prefix}e:a", f"{prefix}lock:fill:x"]
