"""The Responses face, driven by the official ``openai`` client against a real ``promptcache
serve`` whose misses go to a local OpenAI-compatible upstream (which records what it received):
plain, streamed, function tools and their outputs, ``previous_response_id`` chains, ``GET`` by id,
and the errors OpenAI answers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess, local_server

pytestmark = pytest.mark.integration

MODEL = "test-model"
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "the weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"question": {"type": "string"}, "call": {"type": "integer"}},
        "required": ["question"],
    },
}


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, OpenAIUpstream]]:
    """One server and upstream for the module: every test asks its own questions."""
    tmp: Path = tmp_path_factory.mktemp("openai-responses")
    with OpenAIUpstream() as upstream, local_server(tmp, upstream.base_url) as server:
        yield server, upstream


@pytest.fixture
def server(running: tuple[ServerProcess, OpenAIUpstream]) -> ServerProcess:
    return running[0]


@pytest.fixture
def up(running: tuple[ServerProcess, OpenAIUpstream]) -> OpenAIUpstream:
    running[1].reset()
    return running[1]


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=server.url + "/v1", api_key="any-key", max_retries=0, timeout=60
    ) as c:
        yield c


def fresh(text: str) -> str:
    """A question no other test asks (the module shares one cache)."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def create(client: openai.OpenAI, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    raw = client.responses.with_raw_response.create(model=MODEL, **kwargs)
    return raw.parse(), dict(raw.headers)


# ---------------------------------------------------------------- plain
def test_a_plain_response_and_its_repeat_a_hit_with_no_model_call(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    question = fresh("Tell me a three sentence bedtime story about a unicorn.")
    first, headers = create(client, instructions="Talk like a pirate.", input=question)
    assert headers["x-promptcache-tier"] == "miss" and headers["x-request-id"]
    assert first.object == "response" and first.id.startswith("resp_")
    assert first.status == "completed" and first.model == MODEL
    assert first.output_text == f"[test upstream answer #1] {question}"
    assert first.instructions == "Talk like a pirate." and first.store is True
    assert first.usage is not None and first.usage.total_tokens == (
        first.usage.input_tokens + first.usage.output_tokens
    )
    assert up.requests[0]["messages"] == [
        {"role": "system", "content": "Talk like a pirate."},
        {"role": "user", "content": question},
    ]
    assert "input" not in up.requests[0] and "instructions" not in up.requests[0]

    again, headers = create(client, instructions="Talk like a pirate.", input=question)
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 1
    assert again.output_text == first.output_text and again.id != first.id
    assert again.usage is not None and again.usage.total_tokens == 0  # nothing spent upstream


def test_a_response_shares_its_entry_with_the_same_chat_completion(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    """Instructions and a string input are the system and user turns of Chat Completions: one
    internal request, one key, one entry, whichever face asked first."""
    question = fresh("What is the boiling point of water at sea level?")
    chat = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": question},
        ],
    )
    assert chat.headers["x-promptcache-tier"] == "miss"
    answer, headers = create(client, instructions="Answer briefly.", input=question)
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 1
    assert answer.output_text == chat.parse().choices[0].message.content

    other = fresh("Name a prime number above one hundred.")
    create(client, input=[{"role": "user", "content": [{"type": "input_text", "text": other}]}])
    chat = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": other}]
    )
    assert chat.headers["x-promptcache-tier"] == "exact" and up.calls == 2


def test_the_fields_translate_to_chat_completions_and_are_keyed(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    question = fresh("Give me a colour.")
    schema = {
        "type": "json_schema",
        "name": "colour",
        "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
        "strict": True,
    }
    first, _ = create(
        client,
        input=question,
        text={"format": schema},
        max_output_tokens=50,
        temperature=0.3,
        top_p=0.9,
        reasoning={"effort": "low"},
        user="someone",
        metadata={"team": "a"},
    )
    sent = up.requests[0]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "colour", "schema": schema["schema"], "strict": True},
    }
    assert sent["max_completion_tokens"] == 50 and sent["temperature"] == 0.3
    assert sent["top_p"] == 0.9 and sent["reasoning_effort"] == "low"
    assert sent["user"] == "someone" and sent["metadata"] == {"team": "a"}
    assert json.loads(first.output_text) == {"name": f"#1 {question}"}
    assert first.max_output_tokens == 50 and first.temperature == 0.3
    assert first.text is not None and first.text.format.type == "json_schema"

    _, headers = create(
        client,
        input=question,
        text={"format": schema},
        max_output_tokens=50,
        temperature=0.3,
        top_p=0.9,
        reasoning={"effort": "low"},
        user="someone else",  # who asks is not keyed
    )
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 1
    _, headers = create(client, input=question, max_output_tokens=50)  # the schema is keyed
    assert headers["x-promptcache-tier"] == "miss"


# ---------------------------------------------------------------- streamed
def test_a_streamed_response_reads_with_the_clients_stream_helper_and_replays(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    question = fresh("Stream me a short answer about tides.")
    with client.responses.stream(model=MODEL, input=question) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == f"[test upstream answer #1] {question}"
    assert len(deltas) > 1 and final.status == "completed" and final.usage is not None

    events = list(client.responses.create(model=MODEL, input=question, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and up.calls == 1  # replayed from the cache
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for kind in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert kind in kinds
    done = events[-1].response
    assert done.output_text == final.output_text and done.id != final.id

    kept = client.responses.retrieve(final.id)  # a streamed response is kept too
    assert kept.output_text == final.output_text and kept.id == final.id


# ---------------------------------------------------------------- tools
def test_a_function_tool_loop_plain_and_streamed_is_replayed_with_fresh_call_ids(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    question = fresh("What is the weather in Lisbon?")
    first, headers = create(client, input=question, tools=[WEATHER])
    assert headers["x-promptcache-tier"] == "miss"
    assert up.requests[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "the weather of a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "weather"
    assert json.loads(calls[0].arguments)["question"] == question
    assert calls[0].call_id == "call_up_1_0"  # the model's own id on a miss

    follow = [
        {"role": "user", "content": question},
        {
            "type": "function_call",
            "call_id": calls[0].call_id,
            "name": "weather",
            "arguments": calls[0].arguments,
        },
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
    ]
    second, headers = create(client, input=follow, tools=[WEATHER])
    assert headers["x-promptcache-tier"] == "miss"
    assert second.output_text.endswith("from tool results: sunny")
    sent = up.requests[1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_up_1_0"
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_up_1_0"}

    with client.responses.stream(model=MODEL, input=question, tools=[WEATHER]) as stream:
        replay = stream.get_final_response()
    call = next(o for o in replay.output if o.type == "function_call")
    assert call.call_id not in ("call_up_1_0", "") and call.arguments == calls[0].arguments
    follow[1]["call_id"] = follow[2]["call_id"] = call.call_id  # the replay's own id
    again, headers = create(client, input=follow, tools=[WEATHER])
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 2  # keyed by position


def test_a_function_call_output_follows_its_response_by_id(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    """The agent loop of the Responses API: the call's output sent with previous_response_id
    only; the kept conversation holds the call, keyed by position, so the same loop sent whole
    is the same entry, and the loop run again (fresh call ids) is answered from the cache."""
    question = fresh("What is the weather in Porto?")

    def loop() -> tuple[Any, Any, list[str]]:
        first, h1 = create(client, input=question, tools=[WEATHER])
        call = next(o for o in first.output if o.type == "function_call")
        output = [{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}]
        second, h2 = create(client, previous_response_id=first.id, input=output, tools=[WEATHER])
        return call, second, [h1["x-promptcache-tier"], h2["x-promptcache-tier"]]

    call, second, tiers = loop()
    assert tiers == ["miss", "miss"] and second.output_text.endswith("from tool results: rain")
    sent = up.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == sent[2]["tool_call_id"] == call.call_id

    again, _, tiers = loop()
    assert tiers == ["exact", "exact"] and up.calls == 2 and again.call_id != call.call_id
    whole = [
        {"role": "user", "content": question},
        {"type": "function_call", "call_id": "x", "name": "weather", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": "x", "output": "rain"},
    ]
    _, headers = create(client, input=whole, tools=[WEATHER])
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 2


def test_built_in_tools_are_a_400_naming_them(client: openai.OpenAI, up: OpenAIUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(
            model=MODEL, input="Search the web", tools=[{"type": "web_search_preview"}]
        )
    assert info.value.status_code == 400 and "web_search_preview" in info.value.message
    assert info.value.body["param"] == "tools"  # type: ignore[index]
    assert info.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="code_interpreter, file_search"):
        client.responses.create(
            model=MODEL,
            input="x",
            tools=[
                {"type": "file_search", "vector_store_ids": ["vs_1"]},
                {"type": "code_interpreter", "container": {"type": "auto"}},
            ],
        )
    assert up.calls == 0


# ---------------------------------------------------------------- kept responses
def test_a_previous_response_id_follow_up_and_its_repeat_a_hit(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    question = fresh("Name a large city in Japan.")
    first, _ = create(client, instructions="Be terse.", input=question)
    second, headers = create(client, previous_response_id=first.id, input="And its population?")
    assert headers["x-promptcache-tier"] == "miss" and second.previous_response_id == first.id
    assert up.requests[1]["messages"] == [  # instructions are not carried over
        {"role": "user", "content": question},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And its population?"},
    ]
    assert first.id not in json.dumps(up.requests)  # the cache's ids never go upstream

    again, headers = create(client, previous_response_id=first.id, input="And its population?")
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 2
    assert again.output_text == second.output_text

    # the same conversation sent whole: the same key as the chain
    whole = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And its population?"},
    ]
    _, headers = create(client, input=whole)
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 2

    third, _ = create(client, previous_response_id=again.id, input="And its mayor?")
    assert [m["role"] for m in up.requests[2]["messages"]] == [
        "user", "assistant", "user", "assistant", "user"
    ]  # fmt: skip
    assert third.output_text.endswith("And its mayor?")


def test_get_by_id_and_unknown_ids(client: openai.OpenAI, up: OpenAIUpstream) -> None:
    first, _ = create(client, input=fresh("Keep this one."), metadata={"k": "v"})
    kept = client.responses.retrieve(first.id)
    assert kept.model_dump() == first.model_dump()

    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.retrieve("resp_" + "0" * 32)
    assert missing.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert "not found" in missing.value.message
    with pytest.raises(openai.BadRequestError) as malformed:
        client.responses.retrieve("not-an-id")
    assert malformed.value.body["param"] == "response_id"  # type: ignore[index]

    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.create(model=MODEL, previous_response_id="resp_nope", input="hi")
    body: Any = unknown.value.body
    assert body["code"] == "previous_response_not_found"
    assert body["param"] == "previous_response_id" and up.calls == 1

    unkept, _ = create(client, input=fresh("Do not keep this."), store=False)
    assert unkept.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, previous_response_id=unkept.id, input="hi")


def test_malformed_requests_are_400s_naming_the_field(server: ServerProcess) -> None:
    cases = [
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": 3}, "input"),
        ({"model": MODEL, "input": [{"role": "robot", "content": "x"}]}, "input[0]"),
        ({"model": MODEL, "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"model": MODEL, "input": "x", "temperature": 3}, "temperature"),
        ({"model": MODEL, "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": MODEL, "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"model": MODEL, "input": "x", "background": True}, "background"),
        ({"model": MODEL, "input": "x", "previous_response_id": 7}, "previous_response_id"),
    ]
    for body, param in cases:
        answer = httpx.post(server.url + "/v1/responses", json=body, timeout=30)
        assert answer.status_code == 400, (body, answer.text)
        error = answer.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error", error
