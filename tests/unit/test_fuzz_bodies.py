"""Property-based fuzzing of the request bodies, through the handlers in-process: generated JSON
(arbitrary nested values with unpaired surrogates, huge and non-finite numbers, NaN/Infinity
literals, deep nesting, wrong types for every field) sent to ``POST /chat``, ``POST
/v1/chat/completions`` and ``POST /v1/messages``, plain and streamed (buffered
``lambda_handler`` and the live ``stream_handler``), and the admin routes (``/admin/flush``,
``/admin/forget``, the query of ``GET /admin/entries``; with the admin key and a tenant's).
Never a 5xx; every 4xx is a JSON error body in the face's own shape (Anthropic's on
``/v1/messages``); a rejected request changes neither the store's entry count nor the stats,
and asks no model.

``TEST_FUZZ_EXAMPLES`` sets the examples per route (default 200: six properties, about 25 s here).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptcache import PromptCache, runtime
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.routes import ANTHROPIC, face_of
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.unit.fakes import FakeEmbedder, FakeLLM

EXAMPLES = int(os.environ.get("TEST_FUZZ_EXAMPLES") or 200)
ADMIN_KEY = "admin-secret"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory")
    monkeypatch.setenv("PROMPTCACHE_API_KEYS", "secret-key:acme")
    monkeypatch.setenv("PROMPTCACHE_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.delenv("PROMPTCACHE_RATE_LIMIT_PER_MINUTE", raising=False)
    runtime.reset()
    llm = FakeLLM()
    cache = PromptCache(store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)
    monkeypatch.setattr(runtime, "cache", lambda: cache)
    chat = importlib.reload(importlib.import_module("promptcache_handlers.chat"))
    yield {"chat": chat, "llm": llm, "cache": cache}
    monkeypatch.undo()
    runtime.reset()


# ---------------------------------------------------------------- what is sent
SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d"])
PLAIN = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "hi", "user", "system", "assistant", "developer", "tool", "text"]),
)
TEXT = st.one_of(
    PLAIN,
    PLAIN,
    PLAIN,
    st.tuples(st.text(max_size=5), SURROGATES, st.text(max_size=5)).map("".join),
)
NUMBERS = st.one_of(
    st.integers(min_value=-3, max_value=10),
    st.integers(min_value=-(10**600), max_value=10**600),
    st.sampled_from([10**400, -(10**400), 2**63, 2**1024]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: a plausible one (mostly), or anything at all."""
    return st.one_of(good, good, VALUES)


#: Written into the body as is: what json.dumps of a value cannot spell.
RAW = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "-0.0", "1e400", "-1e400", "1E999"]),
    st.integers(min_value=1, max_value=3_000).map(lambda d: "[" * d + "]" * d),
    st.integers(min_value=1, max_value=3_000).map(lambda d: '{"a":' * d + "1" + "}" * d),
)


ARGUMENTS = st.one_of(
    TEXT,
    st.sampled_from(['{"city": "Paris"}', "{}", "not json", "[" * 3000 + "]" * 3000]),
)
TOOL_CALL = st.one_of(
    st.fixed_dictionaries(
        {
            "id": field(st.sampled_from(["call_1", "call_2", ""])),
            "type": field(st.just("function")),
            "function": field(
                st.fixed_dictionaries(
                    {"name": field(st.sampled_from(["f", "g"])), "arguments": field(ARGUMENTS)}
                )
            ),
        }
    ),
    VALUES,
)
IMAGE = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["image_url", "input_audio", "file"]),
        "image_url": st.fixed_dictionaries({"url": field(TEXT)}),
    }
)


def message(content: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    role = st.one_of(
        st.sampled_from(["user", "system", "assistant", "developer", "tool", "function"]), VALUES
    )
    part = st.fixed_dictionaries({"type": st.one_of(st.just("text"), VALUES), "text": content})
    parts = st.lists(st.one_of(part, IMAGE), max_size=3)
    return st.one_of(
        st.fixed_dictionaries({"role": role, "content": st.one_of(content, st.lists(part))}),
        st.fixed_dictionaries(
            {"role": role, "content": st.one_of(content, parts, st.none())},
            optional={
                "tool_calls": field(st.lists(TOOL_CALL, max_size=3)),
                "tool_call_id": field(st.sampled_from(["call_1", "call_2", "x"])),
                "name": field(st.sampled_from(["f", "bot"])),
                "function_call": VALUES,
            },
        ),
        VALUES,
    )


PROMPT = field(TEXT)
MESSAGES = field(st.lists(message(TEXT), min_size=1, max_size=3))
COMMON = {
    "model": field(st.sampled_from(["gpt-4o-mini", "m", " "])),
    "temperature": field(NUMBERS),
    "max_tokens": field(NUMBERS),
}


def one_field(base: dict[str, Any], fields: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A valid body with one field drawn from its strategy: most of these are answered (200)."""
    pairs = st.sampled_from(sorted(fields)).flatmap(
        lambda name: fields[name].map(lambda value: {**base, name: value})
    )
    questions = st.sampled_from(["What is 2+2?", "Name a colour", "Say hi"])
    return st.tuples(pairs, questions).map(lambda p: _ask(p[0], p[1]))


def _ask(body: dict[str, Any], question: str) -> dict[str, Any]:
    if body.get("prompt") == "?":
        body["prompt"] = question
    if body.get("input") == "?":
        body["input"] = question
    if body.get("messages") == [{"role": "user", "content": "?"}]:
        body["messages"] = [{"role": "user", "content": question}]
    return body


CHAT_OPTIONAL = {
    **COMMON,
    "threshold": field(NUMBERS),
    "ttl": field(NUMBERS),
    "cache": field(st.sampled_from(["use", "skip", "refresh"])),
}
CHAT_BODIES = st.one_of(
    one_field({"prompt": "?"}, CHAT_OPTIONAL),
    st.fixed_dictionaries({"prompt": PROMPT}, optional=CHAT_OPTIONAL),
    st.fixed_dictionaries({"messages": MESSAGES}, optional=CHAT_OPTIONAL),
    st.fixed_dictionaries({}, optional={"prompt": PROMPT, "messages": MESSAGES, **CHAT_OPTIONAL}),
)
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "cache": field(st.sampled_from(["use", "skip", "refresh"])),
        "threshold": field(NUMBERS),
        "ttl": field(NUMBERS),
    },
)
V1_OPTIONAL = {
    **COMMON,
    "max_completion_tokens": field(NUMBERS),
    "n": field(st.integers(min_value=-1, max_value=10)),
    "stream": field(st.booleans()),
    "stream_options": field(st.fixed_dictionaries({"include_usage": field(st.booleans())})),
    "promptcache": field(OPTIONS),
    "top_p": field(NUMBERS),
    "tools": field(
        st.lists(
            st.fixed_dictionaries(
                {
                    "type": field(st.just("function")),
                    "function": field(
                        st.fixed_dictionaries(
                            {"name": field(st.sampled_from(["f", "g"]))},
                            optional={"parameters": VALUES},
                        )
                    ),
                }
            ),
            max_size=2,
        )
    ),
    "functions": VALUES,
    "tool_choice": field(st.sampled_from(["auto", "none", "required"])),
    "parallel_tool_calls": field(st.booleans()),
    "response_format": field(
        st.fixed_dictionaries(
            {"type": field(st.sampled_from(["text", "json_object", "json_schema"]))},
            optional={"json_schema": field(st.fixed_dictionaries({"name": field(TEXT)}))},
        )
    ),
    "stop": field(st.one_of(TEXT, st.lists(TEXT, max_size=3))),
    "seed": field(NUMBERS),
    "frequency_penalty": field(NUMBERS),
    "presence_penalty": field(NUMBERS),
    "logit_bias": field(st.dictionaries(TEXT, NUMBERS, max_size=2)),
    "logprobs": field(st.booleans()),
    "top_logprobs": field(NUMBERS),
    "reasoning_effort": field(st.sampled_from(["low", "high"])),
    "verbosity": field(TEXT),
    "modalities": field(st.lists(st.sampled_from(["text", "audio"]), max_size=2)),
    "audio": VALUES,
    "user": field(TEXT),
    "store": field(st.booleans()),
    "service_tier": field(TEXT),
    "prompt_cache_key": field(TEXT),
    "safety_identifier": field(TEXT),
    "metadata": VALUES,
    "a_future_field": VALUES,
}
V1_BODIES = st.one_of(
    one_field({"messages": [{"role": "user", "content": "?"}]}, V1_OPTIONAL),
    st.fixed_dictionaries({"messages": MESSAGES}, optional=V1_OPTIONAL),
)
#: Responses API input items: messages with parts, function calls and their outputs, reasoning,
#: and what the cache refuses (item references, built-in tools' items).
RESPONSE_PART = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["input_text", "output_text", "refusal"]), "text": field(TEXT)}
    ),
    st.fixed_dictionaries(
        {"type": st.just("input_image")},
        optional={"image_url": field(TEXT), "detail": field(TEXT), "file_id": field(TEXT)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("input_file")},
        optional={"file_id": field(TEXT), "file_data": field(TEXT), "file_url": field(TEXT)},
    ),
    VALUES,
)
RESPONSE_ITEM = st.one_of(
    st.fixed_dictionaries(
        {
            "role": field(st.sampled_from(["user", "system", "developer", "assistant"])),
            "content": field(st.one_of(TEXT, st.lists(RESPONSE_PART, max_size=3))),
        },
        optional={"type": field(st.just("message"))},
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call")},
        optional={
            "call_id": field(st.sampled_from(["call_1", "call_2"])),
            "name": field(st.sampled_from(["f", "g"])),
            "arguments": field(ARGUMENTS),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call_output")},
        optional={
            "call_id": field(st.sampled_from(["call_1", "call_2"])),
            "output": field(st.one_of(TEXT, st.lists(RESPONSE_PART, max_size=2))),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["reasoning", "item_reference", "web_search_call"])},
        optional={"id": field(TEXT), "summary": VALUES, "encrypted_content": field(TEXT)},
    ),
    VALUES,
)
RESPONSES_OPTIONAL = {
    "model": COMMON["model"],
    "temperature": field(NUMBERS),
    "max_output_tokens": field(NUMBERS),
    "instructions": field(TEXT),
    "stream": field(st.booleans()),
    "store": field(st.booleans()),
    "promptcache": field(OPTIONS),
    "top_p": field(NUMBERS),
    "previous_response_id": field(st.sampled_from(["resp_1", "", "resp_" + "0" * 32])),
    "tools": field(
        st.lists(
            st.fixed_dictionaries(
                {"type": field(st.sampled_from(["function", "web_search", "file_search"]))},
                optional={"name": field(st.sampled_from(["f", "g"])), "parameters": VALUES},
            ),
            max_size=2,
        )
    ),
    "tool_choice": field(
        st.one_of(
            st.sampled_from(["auto", "none", "required"]),
            st.fixed_dictionaries(
                {"type": field(st.sampled_from(["function", "allowed_tools", "file_search"]))},
                optional={"name": field(TEXT), "mode": field(TEXT), "tools": VALUES},
            ),
        )
    ),
    "parallel_tool_calls": field(st.booleans()),
    "text": field(
        st.fixed_dictionaries(
            {},
            optional={
                "format": field(
                    st.fixed_dictionaries(
                        {"type": field(st.sampled_from(["text", "json_object", "json_schema"]))},
                        optional={"name": field(TEXT), "schema": VALUES, "strict": VALUES},
                    )
                ),
                "verbosity": field(TEXT),
            },
        )
    ),
    "reasoning": field(st.fixed_dictionaries({}, optional={"effort": field(TEXT)})),
    "truncation": field(st.sampled_from(["auto", "disabled"])),
    "include": field(st.lists(st.sampled_from(["reasoning.encrypted_content", "x"]))),
    "background": field(st.booleans()),
    "user": field(TEXT),
    "metadata": VALUES,
    "service_tier": field(TEXT),
    "prompt": VALUES,
    "conversation": VALUES,
    "a_future_field": VALUES,
}
RESPONSES_BODIES = st.one_of(
    one_field({"input": "?"}, RESPONSES_OPTIONAL),
    st.fixed_dictionaries(
        {"input": field(st.one_of(TEXT, st.lists(RESPONSE_ITEM, min_size=1, max_size=4)))},
        optional=RESPONSES_OPTIONAL,
    ),
)


# ---------------------------------------------------------------- Anthropic's Messages bodies
TOOL_USE = st.fixed_dictionaries(
    {
        "type": st.just("tool_use"),
        "id": field(st.sampled_from(["toolu_1", "toolu_2", ""])),
        "name": field(st.sampled_from(["f", "g"])),
        "input": field(st.dictionaries(TEXT, SCALARS, max_size=2)),
    }
)
TOOL_RESULT = st.fixed_dictionaries(
    {
        "type": st.just("tool_result"),
        "tool_use_id": field(st.sampled_from(["toolu_1", "toolu_2", "x"])),
    },
    optional={
        "content": field(
            st.one_of(
                TEXT,
                st.lists(
                    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2
                ),
            )
        ),
        "is_error": field(st.booleans()),
    },
)
BLOCK = st.one_of(
    st.fixed_dictionaries(
        {"type": st.one_of(st.just("text"), VALUES), "text": TEXT},
        optional={"cache_control": field(st.just({"type": "ephemeral"}))},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("image"),
            "source": field(
                st.fixed_dictionaries(
                    {"type": field(st.sampled_from(["base64", "url", "file"]))},
                    optional={"media_type": field(TEXT), "data": field(TEXT), "url": field(TEXT)},
                )
            ),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["thinking", "redacted_thinking", "document"])},
        optional={"thinking": field(TEXT), "signature": field(TEXT), "data": field(TEXT)},
    ),
    TOOL_USE,
    TOOL_RESULT,
    VALUES,
)
TURN = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.one_of(st.sampled_from(["user", "assistant", "system", "tool"]), VALUES),
            "content": st.one_of(TEXT, st.lists(BLOCK, max_size=3)),
        }
    ),
    VALUES,
)
ANTHROPIC_TOOL = st.fixed_dictionaries(
    {"name": field(st.sampled_from(["f", "g"]))},
    optional={
        "type": field(st.sampled_from(["custom", "web_search_20250305", "bash_20250124"])),
        "description": field(TEXT),
        "input_schema": field(st.just({"type": "object", "properties": {}})),
        "cache_control": field(st.just({"type": "ephemeral"})),
    },
)
MESSAGES_OPTIONAL = {
    "model": field(st.sampled_from(["claude-x", "m", " "])),
    "system": field(st.one_of(TEXT, st.lists(BLOCK, max_size=2))),
    "temperature": field(NUMBERS),
    "top_p": field(NUMBERS),
    "top_k": field(NUMBERS),
    "stop_sequences": field(st.lists(TEXT, max_size=2)),
    "stream": field(st.booleans()),
    "tools": field(st.lists(ANTHROPIC_TOOL, max_size=2)),
    "tool_choice": field(
        st.fixed_dictionaries(
            {"type": field(st.sampled_from(["auto", "any", "tool", "none"]))},
            optional={
                "name": field(st.sampled_from(["f", "g"])),
                "disable_parallel_tool_use": field(st.booleans()),
            },
        )
    ),
    "thinking": field(
        st.fixed_dictionaries(
            {"type": field(st.sampled_from(["enabled", "disabled", "adaptive"]))},
            optional={"budget_tokens": field(NUMBERS)},
        )
    ),
    "metadata": field(st.fixed_dictionaries({}, optional={"user_id": field(TEXT)})),
    "service_tier": field(st.sampled_from(["auto", "standard_only"])),
    "promptcache": field(OPTIONS),
    "a_future_field": VALUES,
}
TOKENS = field(st.one_of(st.integers(min_value=1, max_value=4096), NUMBERS))
MESSAGES_BODIES = st.one_of(
    one_field(
        {"max_tokens": 64, "messages": [{"role": "user", "content": "?"}]}, MESSAGES_OPTIONAL
    ),
    st.fixed_dictionaries(
        {"max_tokens": TOKENS, "messages": field(st.lists(TURN, min_size=1, max_size=3))},
        optional=MESSAGES_OPTIONAL,
    ),
    st.fixed_dictionaries({}, optional={"messages": MESSAGES, "max_tokens": TOKENS}),
)


@st.composite
def wire(draw: st.DrawFn, bodies: st.SearchStrategy[Any]) -> bytes:
    """A body as sent: usually an object from ``bodies``, sometimes any JSON value; now and then
    one field (or the whole body) replaced by a raw fragment."""
    body = draw(st.one_of(bodies, bodies, bodies, bodies, VALUES))
    text = json.dumps(body)  # ensure_ascii: surrogates travel as \\uXXXX escapes; NaN as NaN
    if draw(st.integers(0, 5)) == 0:
        raw = draw(RAW)
        if isinstance(body, dict) and body and draw(st.booleans()):
            name = draw(st.sampled_from(sorted(body)))
            body[name] = "\x00fragment"
            text = json.dumps(body).replace(json.dumps("\x00fragment"), raw)
        else:
            text = raw
    return text.encode("ascii")


# ---------------------------------------------------------------- the property
def send(
    app: dict[str, Any],
    path: str,
    raw: bytes,
    live: bool,
    key: str = "secret-key",
    method: str = "POST",
) -> tuple[int, str, bytes]:
    event = to_event(
        method,
        path,
        {"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        raw,
    )
    module = app["chat"]
    if live:
        result, chunks = module.stream_handler(event, LocalContext("chat"))
    else:
        result, chunks = module.lambda_handler(event, LocalContext("chat")), None
    status, headers, payload = from_result(result)
    if chunks is not None:
        payload = b"".join(chunks)
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    return status, content_type, payload


def stored_entries(cache: PromptCache) -> frozenset[Any]:
    """Every entry of the cache's MemoryStore, expired or not (``count()`` skips the expired: a
    generated ``ttl`` of a second may expire an entry in the middle of a rejected request)."""
    store = cache.store
    assert isinstance(store, MemoryStore)
    return frozenset(store._entries.values())


def snapshot(app: dict[str, Any]) -> tuple[Any, ...]:
    cache: PromptCache = app["cache"]
    return stored_entries(cache), cache.stats.read(), app["llm"].calls


ANTHROPIC_ERRORS = {
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
}


def check_error(path: str, payload: bytes) -> dict[str, Any]:
    """A 4xx body in the shape of the path's face: Anthropic's (``type: error``, an error
    ``type`` of its list), or the others' (an error ``code``). Returns the error object."""
    body = json.loads(payload)
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"], body
    if face_of(path.split("?", 1)[0]) == ANTHROPIC:
        assert body["type"] == "error" and error["type"] in ANTHROPIC_ERRORS, body
        assert set(body) == {"type", "error"} and set(error) == {"type", "message"}, body
    else:
        assert isinstance(error["code"], str), body
    return dict(error)


def check(
    app: dict[str, Any],
    path: str,
    raw: bytes,
    live: bool = False,
    key: str = "secret-key",
    method: str = "POST",
) -> None:
    before = snapshot(app)
    status, content_type, payload = send(app, path, raw, live, key, method)
    assert status < 500, (status, raw[:300], payload[:300])
    if status >= 400:
        assert content_type == "application/json", (status, content_type)
        error = check_error(path, payload)
        assert snapshot(app) == before, (status, error, raw[:300])


@FUZZ
@given(raw=wire(CHAT_BODIES))
def test_chat_bodies(app: dict[str, Any], raw: bytes) -> None:
    check(app, "/chat", raw)


@FUZZ
@given(raw=wire(V1_BODIES))
def test_completion_bodies(app: dict[str, Any], raw: bytes) -> None:
    check(app, "/v1/chat/completions", raw)


@FUZZ
@given(raw=wire(V1_BODIES.map(lambda body: {**body, "stream": True})), live=st.booleans())
def test_streamed_completion_bodies(app: dict[str, Any], raw: bytes, live: bool) -> None:
    check(app, "/v1/chat/completions", raw, live)


@FUZZ
@given(raw=wire(MESSAGES_BODIES), live=st.booleans())
def test_messages_bodies(app: dict[str, Any], raw: bytes, live: bool) -> None:
    check(app, "/v1/messages", raw, live)


@FUZZ
@given(raw=wire(RESPONSES_BODIES), live=st.booleans())
def test_responses_bodies(app: dict[str, Any], raw: bytes, live: bool) -> None:
    check(app, "/v1/responses", raw, live)


ADMIN_FIELDS = st.sampled_from(["namespace", "model", "tenant", "prompt", "everything"])
ADMIN_BODIES = st.dictionaries(ADMIN_FIELDS, field(st.sampled_from(["acme", "m", "x", " "])))


@FUZZ
@given(
    raw=wire(ADMIN_BODIES),
    path=st.sampled_from(["/admin/flush", "/admin/forget"]),
    key=st.sampled_from([ADMIN_KEY, "secret-key"]),
)
def test_admin_bodies(app: dict[str, Any], raw: bytes, path: str, key: str) -> None:
    """The admin routes: never a 5xx; a rejected call (a tenant's key, a malformed body)
    removes nothing."""
    check(app, path, raw, key=key)


@FUZZ
@given(query=st.text(max_size=40), key=st.sampled_from([ADMIN_KEY, "secret-key"]))
def test_admin_listing_queries(app: dict[str, Any], query: str, key: str) -> None:
    target = "/admin/entries?" + query.encode("utf-8", "surrogatepass").decode("latin-1")
    check(app, target, b"", key=key, method="GET")
