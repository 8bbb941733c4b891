"""Choosing the upstream: PROMPTCACHE_LLM (auto picks Claude when only its key is set), the
router sending a request for another configured provider's model to it, ``takes_n`` per request,
the health probe of Claude's models list, and a refused field reaching the client as a 400."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import httpx
import pytest

from promptcache import (
    ChatRequest,
    Completion,
    ConfigError,
    Message,
    PromptCache,
    Settings,
    UnsupportedField,
    runtime,
)
from promptcache._protocols import takes_n
from promptcache.adapters.anthropic import AnthropicLLM
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.adapters.openai_compat import OpenAICompatibleLLM
from promptcache.adapters.router import Route, RoutedLLM
from promptcache.adapters.workers_ai import WorkersAILLM
from tests.unit.fakes import FakeEmbedder, FakeLLM

CF = {"CLOUDFLARE_ACCOUNT_ID": "acc", "CLOUDFLARE_API_TOKEN": "tok"}


def test_auto_picks_claude_when_only_its_key_is_set() -> None:
    s = Settings.from_env({"ANTHROPIC_API_KEY": "sk-ant"})
    assert (s.llm, s.model, s.llm_routes) == ("anthropic", "claude-haiku-4-5", ())
    assert s.anthropic_base_url == "https://api.anthropic.com" and s.anthropic_max_tokens == 4096
    assert "sk-ant" not in repr(s)
    assert isinstance(runtime.make_llm(s), AnthropicLLM)


def test_the_default_is_the_setting_and_the_other_configured_upstreams_are_routes() -> None:
    env = {"OPENAI_BASE_URL": "http://h/v1", "ANTHROPIC_API_KEY": "k", **CF}
    s = Settings.from_env(env)
    assert (s.llm, s.llm_routes) == ("openai", ("anthropic", "workers-ai"))
    claude = Settings.from_env({**env, "PROMPTCACHE_LLM": "anthropic"})
    assert (claude.llm, claude.llm_routes) == ("anthropic", ("openai", "workers-ai"))
    assert claude.model == "claude-haiku-4-5"
    cf_and_claude = Settings.from_env({"ANTHROPIC_API_KEY": "k", **CF})
    assert (cf_and_claude.llm, cf_and_claude.llm_routes) == ("anthropic", ("workers-ai",))
    assert Settings.from_env({**env, "PROMPTCACHE_LLM": "none"}).llm_routes == ()


def test_claude_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="PROMPTCACHE_LLM=anthropic needs ANTHROPIC_API_KEY"):
        Settings.from_env({"PROMPTCACHE_LLM": "anthropic"})
    with pytest.raises(ConfigError, match="PROMPTCACHE_ANTHROPIC_MAX_TOKENS"):
        Settings.from_env({"ANTHROPIC_API_KEY": "k", "PROMPTCACHE_ANTHROPIC_MAX_TOKENS": "0"})
    s = Settings.from_env(
        {
            "ANTHROPIC_API_KEY_SSM_PARAMETER": "/pc/anthropic",
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/",
            "PROMPTCACHE_ANTHROPIC_MAX_TOKENS": "512",
        }
    )
    assert (s.llm, s.anthropic_base_url, s.anthropic_max_tokens) == (
        "anthropic",
        "http://127.0.0.1:9",
        512,
    )


def test_the_composition_root_builds_the_router() -> None:
    env = {"OPENAI_BASE_URL": "http://h/v1", "ANTHROPIC_API_KEY": "k", **CF}
    llm = runtime.make_llm(Settings.from_env(env))
    assert isinstance(llm, RoutedLLM)
    assert isinstance(llm.pick("gpt-4o-mini"), OpenAICompatibleLLM)
    assert isinstance(llm.pick("my-local-llama"), OpenAICompatibleLLM)  # the default
    assert isinstance(llm.pick("claude-sonnet-4-5"), AnthropicLLM)
    assert isinstance(llm.pick("@cf/meta/llama-3.1-8b-instruct"), WorkersAILLM)
    assert "claude-* -> anthropic" in llm.name
    assert takes_n(llm, "gpt-4o") and not takes_n(llm, "claude-sonnet-4-5")
    assert not takes_n(llm, "@cf/meta/llama-3.1-8b-instruct")
    claude_first = runtime.make_llm(Settings.from_env({**env, "PROMPTCACHE_LLM": "anthropic"}))
    assert isinstance(claude_first, RoutedLLM)
    assert isinstance(claude_first.pick("my-local-llama"), AnthropicLLM)
    assert isinstance(claude_first.pick("gpt-4o"), OpenAICompatibleLLM)
    assert not claude_first.takes_n and takes_n(claude_first, "o3-mini")


class Streamer(FakeLLM):
    takes_n = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.closed = False

    def stream(self, request: ChatRequest) -> Generator[str, None, Completion]:
        try:
            yield f"{self.name} "
            yield "streamed"
        finally:
            self.closed = True
        return Completion("", self.name, finish_reason="length")


def test_the_router_delegates_generate_stream_and_ping() -> None:
    default, other, plain = Streamer("default"), Streamer("other"), FakeLLM()
    router = RoutedLLM(default, [Route(("x-",), other), Route(("p-",), plain)])

    def ask(model: str) -> ChatRequest:
        return ChatRequest(messages=(Message("user", "q"),), model=model)

    assert router.generate(ask("x-1")).text == "answer 1: q" and other.calls == 1
    assert router.generate(ask("y")).text == "answer 1: q" and default.calls == 1
    stream = router.stream(ask("x-1"))
    assert _drain(stream) == (["other ", "streamed"], "length")
    early = router.stream(ask("y"))
    assert next(early) == "default "
    early.close()
    assert default.closed
    assert _drain(router.stream(ask("p-1"))) == (["answer 1: q"], "stop")
    router.ping()  # none of them has a probe: nothing is called
    assert router.takes_n and takes_n(router, "x-1") and not takes_n(router, "p-1")


def _drain(stream: Generator[str, None, object]) -> tuple[list[str], Any]:
    deltas: list[str] = []
    while True:
        try:
            deltas.append(next(stream))
        except StopIteration as stop:
            done = stop.value
            return deltas, done.finish_reason if isinstance(done, Completion) else done


def _claude(handler: Any) -> AnthropicLLM:
    return AnthropicLLM(
        httpx.Client(transport=httpx.MockTransport(handler)), api_key="k", base_url="http://c"
    )


def test_health_probes_claudes_models_list_and_reuses_the_probe() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json={"data": [{"type": "model", "id": "claude-x"}]})

    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=_claude(handler)
    )
    ok, checks = cache.health()
    llm = next(c for c in checks if c.name == "llm")
    assert ok and llm.ok and llm.detail == "configured: anthropic (http://c); probe: ok"
    cache.health()
    assert calls == ["GET /v1/models"]  # the second health check reused the first probe


def test_health_reports_a_failed_probe_without_failing_the_cache() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}
        return httpx.Response(401, json=body)

    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=_claude(handler)
    )
    ok, checks = cache.health()
    llm = next(c for c in checks if c.name == "llm")
    assert ok and not llm.ok and not llm.required
    assert "ANTHROPIC_API_KEY" in llm.detail and llm.detail.startswith("configured: anthropic")


def test_a_refused_field_reaches_the_caller_as_itself_and_nothing_is_stored() -> None:
    calls: list[httpx.Request] = []
    store = MemoryStore()
    claude = _claude(lambda r: calls.append(r) or httpx.Response(500))
    cache = PromptCache(store=store, embedder=FakeEmbedder(), stats=MemoryStats(), llm=claude)
    request = ChatRequest(
        messages=(Message("user", "q"),), model="claude-x", options={"logit_bias": {"1": 2}}
    )
    with pytest.raises(UnsupportedField, match="logit_bias"):
        cache.chat(request)
    with pytest.raises(UnsupportedField, match="logit_bias"):
        cache.chat_stream(request)
    assert calls == [] and store.count() == 0


def test_claudes_thinking_blocks_are_stored_and_replayed_exactly() -> None:
    thinking = {"type": "thinking", "thinking": "The user asks...", "signature": "EqQBCgIYAh=="}
    redacted = {"type": "redacted_thinking", "data": "EmwKAhgB"}
    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [thinking, redacted, {"type": "text", "text": "Paris."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }
    calls: list[httpx.Request] = []
    claude = _claude(lambda r: calls.append(r) or httpx.Response(200, json=answer))
    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=claude
    )
    request = ChatRequest(
        messages=(Message("user", "capital of France?"),),
        model="claude-x",
        options={"thinking": {"type": "enabled", "budget_tokens": 1024}},
    )
    first = cache.chat(request)
    again = cache.chat(request)
    assert first.tier.value == "miss" and again.tier.value == "exact" and len(calls) == 1
    assert first.thinking == again.thinking == (thinking, redacted)
    assert again.response == "Paris."
