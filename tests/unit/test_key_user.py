"""PROMPTCACHE_KEY_USER: the end user (``user``, ``safety_identifier``) in the cache key, so one
end user's cached answer or tool call never reaches another; off by default, where they are
forwarded and not keyed and the entries stored before keep their keys."""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from promptcache import ChatRequest, PromptCache, Settings, runtime
from promptcache._errors import ConfigError
from promptcache._keys import KEY_VERSION, canonical, namespace
from promptcache._types import Completion, ToolCall, Usage
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.http.openai_request import parse_request
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.unit.fakes import FakeEmbedder

ON = Settings.from_env({"PROMPTCACHE_KEY_USER": "on"})
OFF = Settings.from_env({})
V1 = "/v1/chat/completions"


def body(question: str = "What is the weather in Paris?", **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": question}], **fields}


def old_namespace(request: ChatRequest) -> str:
    """The namespace as computed before the end user could be keyed (its exact formula)."""
    context = [[m.role, canonical(m.content)] for m in request.context]
    params = {"temperature": request.temperature, "max_tokens": request.max_tokens}
    payload = {"model": request.model, "params": params, "context": context, "v": KEY_VERSION}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return f"{request.tenant}:fake:8:{hashlib.sha256(raw.encode()).hexdigest()[:24]}"


def test_off_by_default() -> None:
    assert OFF.key_user is False and ON.key_user is True
    with pytest.raises(ConfigError, match="PROMPTCACHE_KEY_USER"):
        Settings.from_env({"PROMPTCACHE_KEY_USER": "yes"})


def test_the_end_user_fields_are_keyed_only_when_on() -> None:
    sent = body(user="alice", safety_identifier="sid-1", metadata={"a": "b"})
    off = parse_request(sent, OFF, "t").chat
    on = parse_request(sent, ON, "t").chat
    assert off.end_user == {}
    assert on.end_user == {"user": "alice", "safety_identifier": "sid-1"}
    # forwarded as sent either way; never in the keyed options
    for chat in (off, on):
        assert chat.forward == {
            "user": "alice",
            "safety_identifier": "sid-1",
            "metadata": {"a": "b"},
        }
        assert "user" not in chat.options and "safety_identifier" not in chat.options
    assert parse_request(body(), ON, "t").chat.end_user == {}


def test_off_keeps_the_namespace_entries_were_stored_under() -> None:
    """Off (and on, for a request naming no end user): the key is the one computed before the
    setting existed, so the entries stored then are still reached."""
    for settings, sent in ((OFF, body(user="alice")), (ON, body())):
        chat = parse_request(sent, settings, "t").chat
        assert namespace(chat, "fake", 8) == old_namespace(chat)
    alice = parse_request(body(user="alice"), ON, "t").chat
    assert namespace(alice, "fake", 8) != old_namespace(alice)


def test_each_identifier_separates_users() -> None:
    def ns(**fields: Any) -> str:
        return namespace(parse_request(body(**fields), ON, "t").chat, "fake", 8)

    assert ns(user="alice") == ns(user="alice")
    assert len({ns(user="alice"), ns(user="bob"), ns(), ns(safety_identifier="alice")}) == 4
    assert ns(user="a", safety_identifier="s") != ns(user="a", safety_identifier="t")


# ---------------------------------------------------------------- over the handler
class ToolLLM:
    """Answers every request with a tool call naming the caller it was asked for: what one end
    user must never be replayed for another."""

    name = "tool-llm"

    def __init__(self) -> None:
        self.calls = 0
        self.users: list[Any] = []

    def generate(self, request: ChatRequest) -> Completion:
        self.calls += 1
        self.users.append(request.forward.get("user"))
        args = json.dumps({"account": request.forward.get("user")})
        call = ToolCall("open_account", args, f"call_{self.calls}")
        return Completion("", request.model, Usage(5, 5), tool_calls=(call,))


@pytest.fixture(params=["off", "on"])
def served(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory")
    monkeypatch.setenv("PROMPTCACHE_KEY_USER", request.param)
    runtime.reset()
    llm = ToolLLM()
    cache = PromptCache(store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=llm)
    monkeypatch.setattr(runtime, "cache", lambda: cache)
    module = importlib.reload(importlib.import_module("promptcache_handlers.chat"))

    def post(sent: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        event = to_event(
            "POST", V1, {"Content-Type": "application/json"}, json.dumps(sent).encode()
        )
        status, headers, payload = from_result(module.lambda_handler(event, LocalContext("chat")))
        assert status == 200, payload
        tier = {k.lower(): v for k, v in headers}["x-promptcache-tier"]
        return tier, json.loads(payload)

    yield request.param, post, llm
    monkeypatch.undo()
    runtime.reset()


TOOLS = [{"type": "function", "function": {"name": "open_account", "parameters": {}}}]


def test_two_users_share_an_entry_only_when_off(served: Any) -> None:
    mode, post, llm = served
    tier, first = post(body(user="alice", tools=TOOLS))
    assert tier == "miss"
    tier, other = post(body(user="bob", tools=TOOLS))
    arguments = other["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    if mode == "off":  # one answer for everyone: bob gets the call made for alice
        assert tier == "exact" and llm.calls == 1 and json.loads(arguments) == {"account": "alice"}
    else:
        assert tier == "miss" and llm.calls == 2 and json.loads(arguments) == {"account": "bob"}
        assert post(body(user="alice", tools=TOOLS))[0] == "exact"  # alice's own entry
        assert post(body(user="bob", tools=TOOLS))[0] == "exact"
        assert llm.calls == 2
    assert llm.users[:2] == (["alice"] if mode == "off" else ["alice", "bob"])  # forwarded


def test_an_entry_stored_before_is_reached_when_off(served: Any) -> None:
    """An entry stored with no end user named (as every entry before the setting): reached by
    any user when off; when on, only by requests that name none."""
    mode, post, llm = served
    assert post(body())[0] == "miss"
    assert post(body(user="carol"))[0] == ("exact" if mode == "off" else "miss")
    assert post(body())[0] == "exact"
    assert llm.calls == (1 if mode == "off" else 2)


def test_the_messages_face_keys_its_end_user_as_the_openai_face_does() -> None:
    """Anthropic's ``metadata.user_id`` names the end user: keyed where the operator asks, and
    the same end user on either face reaches the same entries."""
    from promptcache.http.anthropic_request import parse_request as parse_messages

    def messages(user: str | None) -> dict[str, Any]:
        sent: dict[str, Any] = {"max_tokens": 64, **body()}
        if user is not None:
            sent["metadata"] = {"user_id": user}
        return sent

    def ns(chat: ChatRequest) -> str:
        return namespace(chat, "fake", 8)

    off = parse_messages(messages("alice"), OFF, "t").chat
    assert off.end_user == {} and off.forward == {"user": "alice"}
    alice, bob = (parse_messages(messages(u), ON, "t").chat for u in ("alice", "bob"))
    assert alice.end_user == {"user": "alice"} and ns(alice) != ns(bob)
    same = parse_request(body(user="alice", max_tokens=64), ON, "t").chat
    assert ns(alice) == ns(same)
    assert ns(parse_messages(messages(None), ON, "t").chat) == ns(off)
