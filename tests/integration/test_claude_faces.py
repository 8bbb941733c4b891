"""Claude behind the Messages face: the official ``anthropic`` client against a real
``promptcache serve`` whose misses go to a local stand-in speaking Anthropic's Messages protocol.
A Messages request goes to Claude in Claude's own terms (blocks, tools, thinking with its
signature), streamed through as it arrives, stored, and replayed exactly; ``count_tokens`` is
Claude's own count."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.integration.test_anthropic_upstream import claude_env
from tests.support.anthropic_upstream import SIGNATURE, AnthropicUpstream
from tests.support.serve import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "claude-test-1"
WEATHER = {
    "name": "weather",
    "description": "the weather of a city",
    "input_schema": {"type": "object", "properties": {"question": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, AnthropicUpstream]]:
    tmp: Path = tmp_path_factory.mktemp("claude-faces")
    with AnthropicUpstream() as upstream:
        server = ServerProcess(claude_env(tmp, upstream), tmp / "server.log").start()
        try:
            yield server, upstream
        finally:
            server.stop()


@pytest.fixture
def up(running: tuple[ServerProcess, AnthropicUpstream]) -> AnthropicUpstream:
    running[1].reset()
    return running[1]


@pytest.fixture
def client(running: tuple[ServerProcess, AnthropicUpstream]) -> Iterator[anthropic.Anthropic]:
    url = running[0].url
    with anthropic.Anthropic(base_url=url, api_key="any", max_retries=0, timeout=60) as c:
        yield c


def fresh(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def create(client: anthropic.Anthropic, **kwargs: Any) -> tuple[Any, str]:
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=300, **kwargs)
    return raw.parse(), raw.headers["x-promptcache-tier"]


def test_a_messages_request_goes_to_claude_as_it_was_sent_then_hits(
    client: anthropic.Anthropic, up: AnthropicUpstream
) -> None:
    question = fresh("What is a monad?")
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    kwargs: dict[str, Any] = {
        "system": system,
        "messages": [{"role": "user", "content": question}],
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
    }
    first, tier = create(client, **kwargs)
    assert tier == "miss" and up.calls == 1
    sent = up.requests[-1]
    assert sent["system"] == system  # the cache_control block reached Claude as it was
    assert sent["messages"] == [{"role": "user", "content": question}]
    assert sent["max_tokens"] == 300 and sent["stop_sequences"] == ["END"]
    assert sent["metadata"] == {"user_id": "u-1"}
    assert up.headers[-1]["anthropic-version"] and up.headers[-1]["x-api-key"] == up.api_key

    again, tier = create(client, **kwargs)
    assert tier == "exact" and up.calls == 1
    assert (
        again.content[0].text == first.content[0].text == f"[claude stand-in answer #1] {question}"
    )
    assert again.stop_reason == "end_turn" and again.usage.input_tokens == 0


def test_thinking_blocks_and_tool_use_are_stored_and_replayed_exactly(
    client: anthropic.Anthropic, up: AnthropicUpstream
) -> None:
    question = fresh("Weather in Paris?")
    kwargs: dict[str, Any] = {
        "messages": [{"role": "user", "content": question}],
        "tools": [WEATHER],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    first, tier = create(client, **kwargs)
    assert tier == "miss" and up.requests[-1]["thinking"] == kwargs["thinking"]
    kinds = [b.type for b in first.content]
    assert kinds == ["thinking", "tool_use"] and first.stop_reason == "tool_use"
    assert first.content[0].signature == SIGNATURE
    assert first.content[1].input == {"question": question, "call": 0}

    again, tier = create(client, **kwargs)
    assert tier == "exact" and up.calls == 1
    assert again.content[0].model_dump() == first.content[0].model_dump()  # signature and all
    assert again.content[1].input == first.content[1].input
    assert again.content[1].id != first.content[1].id  # a fresh id on each replay

    # The tool loop goes on with the thinking block sent back, as Claude requires.
    follow = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": [b.model_dump() for b in again.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": again.content[1].id, "content": "18C"}
            ],
        },
    ]
    answer, tier = create(client, messages=follow, tools=[WEATHER], thinking=kwargs["thinking"])
    assert tier == "miss"
    sent = up.requests[-1]["messages"]
    assert sent[1]["content"][0] == again.content[0].model_dump()  # the signed block, untouched
    assert sent[2]["content"][0]["tool_use_id"] == again.content[1].id
    assert "from tool results: 18C" in answer.content[-1].text


def test_a_stream_passes_claudes_deltas_through_and_its_repeat_is_a_hit(
    client: anthropic.Anthropic, up: AnthropicUpstream
) -> None:
    question = fresh("Tell me about streams")
    kwargs: dict[str, Any] = {"messages": [{"role": "user", "content": question}]}
    with client.messages.stream(model=MODEL, max_tokens=300, **kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert up.requests[-1]["stream"] is True  # streamed upstream, not buffered
    assert text == final.content[0].text == f"[claude stand-in answer #1] {question}"
    with client.messages.stream(model=MODEL, max_tokens=300, **kwargs) as stream:
        assert "".join(stream.text_stream) == text
    assert up.calls == 1


def test_count_tokens_is_claudes_own_count_and_touches_no_entry(
    client: anthropic.Anthropic, up: AnthropicUpstream
) -> None:
    counted = client.messages.count_tokens(
        model=MODEL,
        system="Be brief.",
        messages=[{"role": "user", "content": "one two three"}],
        tools=[WEATHER],
    )
    assert counted.input_tokens > 3
    assert up.calls == 0 and len(up.counted) == 1
    sent = up.counted[0]
    assert set(sent) == {"model", "system", "messages", "tools"}  # no max_tokens, no sampling
    assert sent["tools"][0]["input_schema"] == WEATHER["input_schema"]


def test_count_tokens_errors_are_anthropics(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.count_tokens(model=MODEL, messages="not a list")  # type: ignore[arg-type]
    assert "messages" in str(bad.value)


def test_the_stop_sequence_that_ended_claudes_answer_is_replayed(
    client: anthropic.Anthropic, up: AnthropicUpstream
) -> None:
    """Claude says which stop sequence ended its answer; the cache keeps it with the answer, so a
    replay says so too (``stop_reason: stop_sequence``), plain and streamed."""
    kwargs: dict[str, Any] = {
        "messages": [{"role": "user", "content": fresh("Count to ten")}],
        "stop_sequences": ["STOP"],
    }
    first, tier = create(client, **kwargs)
    assert tier == "miss"
    assert (first.stop_reason, first.stop_sequence) == ("stop_sequence", "STOP")
    again, tier = create(client, **kwargs)
    assert tier == "exact" and up.calls == 1
    assert (again.stop_reason, again.stop_sequence) == ("stop_sequence", "STOP")
    with client.messages.stream(model=MODEL, max_tokens=300, **kwargs) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "STOP")

    other = {**kwargs, "messages": [{"role": "user", "content": fresh("Count to five")}]}
    with client.messages.stream(model=MODEL, max_tokens=300, **other) as stream:  # a live miss
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "STOP")
    assert up.calls == 2
