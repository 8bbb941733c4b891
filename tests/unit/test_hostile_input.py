"""Hostile request bodies through the handlers in-process: never a 5xx, always a JSON 4xx naming
the problem, and nothing stored or counted. Also the rate limit's Retry-After and what /health
shows to callers without a key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from promptcache import runtime
from promptcache.http.ratelimit import RateLimiter, retry_after
from promptcache.http.wire import MAX_JSON_DEPTH
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.unit.test_handlers import call, handlers  # noqa: F401  (the fixture)

CHAT = ("chat", "POST", "/chat")
V1 = ("chat", "POST", "/v1/chat/completions")
HUGE = int("1" + "0" * 400)  # 1e400 written as an integer ("HUGE" in the cases below)


def post(h: dict[str, Any], route: tuple[str, str, str], body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()  # ensure_ascii: \\ud800
    status, _, payload = call(h, *route, raw)
    return status, payload


def error(h: dict[str, Any], route: tuple[str, str, str], body: Any, status: int) -> str:
    got, payload = post(h, route, body)
    assert got == status, (got, payload)
    assert set(payload["error"]) >= {"code", "message"}
    message: str = payload["error"]["message"]
    message.encode("utf-8")  # the message never repeats what it refuses
    return message


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------- 1: unpaired surrogates
@pytest.mark.parametrize(
    ("route", "body", "where"),
    [
        (CHAT, {"prompt": "hi \ud800"}, "'prompt'"),
        (CHAT, {"prompt": "hi", "model": "m\udfff"}, "'model'"),
        (CHAT, {"messages": user("\ud800")}, "'messages[0].content'"),
        (CHAT, {"prompt": "hi", "\ud800": 1}, "a field name in the body"),
        (CHAT, {"prompt": "hi", "cache": "\ud800"}, "'cache'"),
        (V1, {"messages": user("a\ud800b")}, "'messages[0].content'"),
        (
            V1,
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
            "'messages[0].content[0].text'",
        ),
        (V1, {"messages": user("hi"), "model": "\ud800"}, "'model'"),
        (
            V1,
            {"messages": user("hi"), "promptcache": {"\udc00": 1}},
            "a field name in 'promptcache'",
        ),
        (V1, {"messages": user("hi"), "tools": [{"\ud800": "x"}]}, "a field name in 'tools[0]'"),
        (V1, {"messages": user("hi"), "metadata": {"k": ["\ud800"]}}, "'metadata.k[0]'"),
    ],
)
def test_unpaired_surrogates_are_a_400_naming_the_field(
    handlers: dict[str, Any],  # noqa: F811
    route: tuple[str, str, str],
    body: Any,
    where: str,
) -> None:
    message = error(handlers, route, body, 400)
    assert "unpaired surrogate" in message and where in message, message
    assert handlers["llm"].calls == 0


def test_a_paired_surrogate_escape_is_an_ordinary_character(
    handlers: dict[str, Any],  # noqa: F811
) -> None:
    status, body = post(handlers, CHAT, b'{"prompt": "smile \\ud83d\\ude00"}')
    assert status == 200 and body["tier"] == "miss"


# ---------------------------------------------------------------- 2: numbers
@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        (CHAT, "threshold", "HUGE"),
        (CHAT, "threshold", "-HUGE"),
        (CHAT, "ttl", "HUGE"),
        (CHAT, "temperature", "HUGE"),
        (CHAT, "max_tokens", "HUGE"),
        (CHAT, "max_tokens", "-HUGE"),
        (V1, "temperature", "HUGE"),
        (V1, "max_tokens", "HUGE"),
        (V1, "max_completion_tokens", "HUGE"),
        (V1, "n", "HUGE"),
        (V1, "top_logprobs", "HUGE"),
        (V1, "top_p", "HUGE"),
        (V1, "promptcache.threshold", "HUGE"),
        (V1, "promptcache.ttl", "-HUGE"),
        (CHAT, "threshold", "1e400"),  # a float literal: infinity
        (CHAT, "temperature", "-1e400"),
        (V1, "promptcache.threshold", "1e400"),
    ],
)
def test_huge_numbers_are_a_422_or_openais_400(
    handlers: dict[str, Any],  # noqa: F811
    route: tuple[str, str, str],
    field: str,
    value: Any,
) -> None:
    body: dict[str, Any] = {"prompt": "hi"} if route is CHAT else {"messages": user("hi")}
    if field.startswith("promptcache."):
        body["promptcache"] = {field.split(".")[1]: "__N__"}
    else:
        body[field] = "__N__"
    literal = {"HUGE": str(HUGE), "-HUGE": str(-HUGE)}.get(value, value)
    raw = json.dumps(body).replace('"__N__"', literal)
    message = error(handlers, route, raw.encode(), 422 if route is CHAT else 400)
    assert field.split(".")[-1] in message and len(message) < 300, message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("route", [CHAT, V1])
def test_nan_and_infinity_literals_are_a_400(
    handlers: dict[str, Any],  # noqa: F811
    route: tuple[str, str, str],
    literal: str,
) -> None:
    head = '{"prompt": "hi"' if route is CHAT else '{"messages": [{"role": "user", "content": "x"}]'
    message = error(handlers, route, f'{head}, "temperature": {literal}}}'.encode(), 400)
    assert literal in message and "not a JSON number" in message


def test_negative_zero_is_zero(handlers: dict[str, Any]) -> None:  # noqa: F811
    status, body = post(handlers, CHAT, b'{"prompt": "hi", "temperature": -0, "ttl": -0.0}')
    assert status == 200, body
    status, body = post(
        handlers, V1, b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -0.0}'
    )
    assert status == 200 and body["choices"][0]["message"]["content"], body


def test_integers_beyond_the_parser_limit_are_a_400(handlers: dict[str, Any]) -> None:  # noqa: F811
    error(handlers, CHAT, b'{"prompt": "hi", "ttl": 1' + b"0" * 5000 + b"}", 400)


# ---------------------------------------------------------------- 3: nesting
@pytest.mark.parametrize("route", [CHAT, V1])
@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_nesting_is_a_400(
    handlers: dict[str, Any],  # noqa: F811
    route: tuple[str, str, str],
    depth: int,
) -> None:
    raw = b'{"prompt": "hi", "x": ' + b"[" * depth + b"]" * depth + b"}"
    assert "nested too deeply" in error(handlers, route, raw, 400)


def test_nesting_below_the_limit_is_judged_by_its_fields(
    handlers: dict[str, Any],  # noqa: F811
) -> None:
    deep: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH - 1):  # with the body: MAX_JSON_DEPTH levels
        deep = {"k": deep}
    status, _ = post(handlers, V1, {"messages": user("hi"), "metadata": deep})
    assert status == 200
    message = error(handlers, V1, {"messages": user("hi"), "metadata": {"k": deep}}, 400)
    assert "nested too deeply" in message


# ---------------------------------------------------------------- 5: /health without a key
def test_health_details_only_with_the_admin_key(
    handlers: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROMPTCACHE_ADMIN_KEY", "admin-key")
    runtime.settings.cache_clear()
    for auth in (None, "wrong", "secret-key"):  # none, a wrong one, a tenant's
        status, _, body = call(handlers, "health", "GET", "/health", auth=auth)
        assert status == 200 and body["status"] in ("ok", "degraded")
        for name, dependency in body["dependencies"].items():
            assert set(dependency) == {"ok", "latency_ms"}, (auth, name)
    status, _, body = call(handlers, "health", "GET", "/health", auth="admin-key")
    assert status == 200
    assert set(body["dependencies"]["store"]) == {"ok", "latency_ms", "detail", "required"}
    assert body["dependencies"]["llm"]["detail"].startswith("configured")


def test_health_details_for_everyone_without_keys(
    handlers: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMPTCACHE_API_KEYS")
    runtime.settings.cache_clear()
    status, _, body = call(handlers, "health", "GET", "/health", auth=None)
    assert status == 200 and "detail" in body["dependencies"]["llm"]


# ---------------------------------------------------------------- 6: Retry-After
def test_a_429_says_when_to_retry(handlers: dict[str, Any]) -> None:  # noqa: F811
    for _ in range(5):
        assert call(handlers, "chat", "POST", "/chat", {"prompt": "hello"})[0] == 200
    for path, body in (("/chat", {"prompt": "x"}), ("/v1/chat/completions", {"messages": []})):
        status, headers, payload = call(handlers, "chat", "POST", path, body)
        assert status == 429 and payload["error"]["code"] == "rate_limited"
        assert 1 <= int(headers["retry-after"]) <= 120


class _Windows:
    def __init__(self, current: int, previous: int) -> None:
        self.counts = (current, previous)

    def count_window(self, current: str, previous: str, ttl: float) -> tuple[int, int]:
        self.counts = (self.counts[0] + 1, self.counts[1])
        return self.counts


def _admitted(windows: _Windows, per_minute: int, at: float) -> bool:
    probe = _Windows(*windows.counts)
    try:
        RateLimiter(per_minute, probe, clock=lambda: at).check("t")
    except Exception:
        return False
    return True


@pytest.mark.parametrize(
    ("current", "previous", "into", "per_minute"),
    [
        (6, 0, 10.0, 5),
        (3, 10, 15.0, 10),
        (1, 5, 0.5, 5),
        (5, 12, 30.0, 10),
        (10, 30, 59.0, 10),
        (11, 0, 5.0, 10),
        (1, 1, 0.0, 1),
    ],
)
def test_retry_after_is_when_the_window_has_room_again(
    current: int, previous: int, into: float, per_minute: int
) -> None:
    now = 60.0 * 1000 + into
    windows = _Windows(current - 1, previous)  # the refused request is counted (current)
    limiter = RateLimiter(per_minute, windows, clock=lambda: now)
    with pytest.raises(Exception) as refused:
        limiter.check("t")
    wait = refused.value.retry_after  # type: ignore[attr-defined]
    assert wait == retry_after(current, previous, into, per_minute) >= 1
    # one second earlier the next request is still refused (when waiting at all), then it fits;
    # past the minute's turn this minute's count becomes the previous one
    assert _admitted(_after(current, previous, into + wait), per_minute, now + wait)
    if wait > 1:
        assert not _admitted(_after(current, previous, into + wait - 1), per_minute, now + wait - 1)


def _after(current: int, previous: int, into: float) -> _Windows:
    """The two windows' counts ``into`` seconds after this minute began, with no more requests."""
    if into < 60:
        return _Windows(current, previous)
    return _Windows(0, current) if into < 120 else _Windows(0, 0)


def test_an_event_body_that_is_not_base64_or_not_text_is_a_400(
    handlers: dict[str, Any],  # noqa: F811
) -> None:
    for body, encoded in (("abc", True), ('{"prompt": "\ud800"}', False)):
        event = to_event(
            "POST",
            "/chat",
            {"Content-Type": "application/json", "Authorization": "Bearer secret-key"},
            b"",
        )
        event.update(body=body, isBase64Encoded=encoded)
        status, _, payload = from_result(
            handlers["modules"]["chat"].lambda_handler(event, LocalContext("chat"))
        )
        assert status == 400, payload
        assert json.loads(payload)["error"]["code"] == "bad_request"
