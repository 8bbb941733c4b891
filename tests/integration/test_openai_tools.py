"""Tools, structured outputs and every Chat Completions field, driven by the official ``openai``
client against a real ``promptcache serve`` whose misses go to a local OpenAI-compatible upstream
that speaks tools and records what it received."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess, local_server

pytestmark = pytest.mark.integration

MODEL = "test-model"


def tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"the {name} of a city",
            "parameters": {
                "type": "object",
                "properties": {"question": {"type": "string"}, "call": {"type": "integer"}},
                "required": ["question"],
            },
        },
    }


WEATHER, TIME = tool("weather"), tool("local_time")


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, OpenAIUpstream]]:
    """One server and upstream for the module: every test asks its own questions."""
    tmp: Path = tmp_path_factory.mktemp("openai-tools")
    with OpenAIUpstream() as upstream, local_server(tmp, upstream.base_url) as server:
        yield server, upstream


@pytest.fixture
def server(running: tuple[ServerProcess, OpenAIUpstream]) -> ServerProcess:
    return running[0]


@pytest.fixture
def up(running: tuple[ServerProcess, OpenAIUpstream]) -> Iterator[OpenAIUpstream]:
    running[1].reset()
    running[1].json_answer = None
    yield running[1]


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=server.url + "/v1", api_key="any-key", max_retries=0, timeout=60
    ) as c:
        yield c


def fresh(text: str) -> str:
    """A question no other test asks (the module shares one cache)."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def entries(server: ServerProcess) -> int:
    return int(httpx.get(server.url + "/stats", timeout=10).json()["entries"])


def create(client: openai.OpenAI, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, **kwargs)
    return raw.parse(), dict(raw.headers)


def calls_of(message: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]


# ---------------------------------------------------------------- tool calls
def test_tool_calls_are_stored_and_replayed_with_fresh_ids(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    messages = [{"role": "user", "content": fresh("What is the weather in Paris?")}]
    first, headers = create(client, messages=messages, tools=[WEATHER])
    assert headers["x-promptcache-tier"] == "miss" and headers["x-request-id"]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert calls_of(choice.message) == [
        ("weather", {"question": messages[0]["content"], "call": 0})
    ]
    assert choice.message.tool_calls[0].id == "call_up_1_0"  # the model's own id on a miss

    again, headers = create(client, messages=messages, tools=[WEATHER])
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 1
    replay = again.choices[0]
    assert replay.finish_reason == "tool_calls"
    assert calls_of(replay.message) == calls_of(choice.message)
    assert replay.message.tool_calls[0].id not in ("call_up_1_0", "")
    third, _ = create(client, messages=messages, tools=[WEATHER])
    assert third.choices[0].message.tool_calls[0].id != replay.message.tool_calls[0].id

    other_tools, headers = create(client, messages=messages, tools=[WEATHER, TIME])
    assert headers["x-promptcache-tier"] == "miss"  # the tools are keyed
    assert up.requests[0]["tools"] == [WEATHER]


def stream_final(client: openai.OpenAI, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    """The SDK's own reassembly of a streamed answer (text and tool-call deltas), with the
    response's headers."""
    raw = client.chat.completions.with_raw_response.create(model=MODEL, stream=True, **kwargs)
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState(input_tools=kwargs["tools"])
    for chunk in raw.parse():
        state.handle_chunk(chunk)
    return state.get_final_completion(), dict(raw.headers)


def test_streamed_tool_calls_are_reassembled_by_the_sdk_miss_and_hit(
    client: openai.OpenAI, up: OpenAIUpstream, server: ServerProcess
) -> None:
    messages = [{"role": "user", "content": fresh("Weather and time in Rome?")}]
    before = entries(server)
    miss, headers = stream_final(client, messages=messages, tools=[WEATHER, TIME])
    assert headers["x-promptcache-tier"] == "miss"
    expected = [
        ("weather", {"question": messages[0]["content"], "call": 0}),
        ("local_time", {"question": messages[0]["content"], "call": 1}),
    ]
    assert calls_of(miss.choices[0].message) == expected
    assert miss.choices[0].finish_reason == "tool_calls"
    assert entries(server) == before + 1

    hit, headers = stream_final(client, messages=messages, tools=[WEATHER, TIME])
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 1
    assert calls_of(hit.choices[0].message) == expected
    assert hit.choices[0].finish_reason == "tool_calls"
    ids = [c.id for c in hit.choices[0].message.tool_calls]
    assert len(set(ids)) == 2 and not set(ids) & {"call_up_1_0", "call_up_1_1"}
    plain, headers = create(client, messages=messages, tools=[WEATHER, TIME])  # plain replay too
    assert headers["x-promptcache-tier"] == "exact"
    assert calls_of(plain.choices[0].message) == expected


def run_agent(client: openai.OpenAI, question: str, tools: list[Any]) -> tuple[str, list[str]]:
    """A whole tool loop as an application runs it: ask, run each call, send the results back,
    until a text answer. Returns the answer and each turn's tier."""
    messages: list[Any] = [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": question},
    ]
    tiers: list[str] = []
    for _ in range(4):
        answer, headers = create(client, messages=messages, tools=tools)
        tiers.append(headers["x-promptcache-tier"])
        message = answer.choices[0].message
        if not message.tool_calls:
            return str(message.content), tiers
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            args = json.loads(call.function.arguments)
            result = f"{call.function.name} #{args['call']}: 21C, sunny"
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    raise AssertionError("the loop did not end")


def test_a_whole_tool_loop_is_served_from_the_cache_the_second_time(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    question = fresh("Plan my afternoon in Lisbon")
    answer, tiers = run_agent(client, question, [WEATHER])
    assert tiers == ["miss", "miss"] and up.calls == 2
    assert answer == "[test upstream answer #2] from tool results: weather #0: 21C, sunny"
    sent = up.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[3]["tool_call_id"] == sent[2]["tool_calls"][0]["id"] == "call_up_1_0"

    again, tiers = run_agent(client, question, [WEATHER])
    assert tiers == ["exact", "exact"] and up.calls == 2  # no model call: turn by turn
    assert again == answer


def test_parallel_tool_calls_and_their_results_are_keyed(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    question = fresh("Weather and time in Oslo?")
    answer, tiers = run_agent(client, question, [WEATHER, TIME])
    assert tiers == ["miss", "miss"] and up.calls == 2
    assert "weather #0" in answer and "local_time #1" in answer
    assert len(up.requests[1]["messages"][2]["tool_calls"]) == 2
    again, tiers = run_agent(client, question, [WEATHER, TIME])
    assert (again, tiers, up.calls) == (answer, ["exact", "exact"], 2)

    # another tool result is another key: never the first result's final answer
    first, _ = create(
        client, messages=[{"role": "user", "content": question}], tools=[WEATHER, TIME]
    )
    messages: list[Any] = [
        {"role": "user", "content": question},
        first.choices[0].message.model_dump(exclude_none=True),
    ]
    for call in first.choices[0].message.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "hail"})
    other, headers = create(client, messages=messages, tools=[WEATHER, TIME])
    assert headers["x-promptcache-tier"] == "miss" and "hail" in other.choices[0].message.content


# ---------------------------------------------------------------- structured outputs
class City(pydantic.BaseModel):
    name: str
    population: int


def test_parse_with_a_pydantic_model_is_stored_and_replayed(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    up.json_answer = lambda body: {"name": "Paris", "population": 2_100_000}
    messages = [{"role": "user", "content": fresh("The largest city of France?")}]
    first = client.chat.completions.parse(model=MODEL, messages=messages, response_format=City)
    assert first.choices[0].message.parsed == City(name="Paris", population=2_100_000)
    sent = up.requests[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "City"
    assert sent["json_schema"]["strict"] is True
    assert set(sent["json_schema"]["schema"]["properties"]) == {"name", "population"}

    raw = client.chat.completions.with_raw_response.parse(
        model=MODEL, messages=messages, response_format=City
    )
    assert raw.headers["x-promptcache-tier"] == "exact" and up.calls == 1
    assert raw.parse().choices[0].message.parsed == first.choices[0].message.parsed

    plain, headers = create(client, messages=messages)  # without the schema: another key
    assert headers["x-promptcache-tier"] == "miss"


def test_json_object_is_forwarded_and_keyed(client: openai.OpenAI, up: OpenAIUpstream) -> None:
    messages = [{"role": "user", "content": fresh("Give me a JSON object about Lyon")}]
    first, headers = create(client, messages=messages, response_format={"type": "json_object"})
    assert headers["x-promptcache-tier"] == "miss"
    assert json.loads(first.choices[0].message.content)["answer"].endswith(messages[0]["content"])
    assert up.requests[0]["response_format"] == {"type": "json_object"}
    again, headers = create(client, messages=messages, response_format={"type": "json_object"})
    assert headers["x-promptcache-tier"] == "exact"
    assert again.choices[0].message.content == first.choices[0].message.content


def test_a_bound_request_uses_the_exact_tier_only(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    base = fresh("How do I reverse a list in Python?")
    create(client, messages=[{"role": "user", "content": base}], tools=[WEATHER])
    near = base.replace("How do I", "How can I")
    _, headers = create(client, messages=[{"role": "user", "content": near}], tools=[WEATHER])
    assert headers["x-promptcache-tier"] == "miss" and up.calls == 2


# ---------------------------------------------------------------- every field
SAMPLING: dict[str, Any] = {
    "stop": ["\n\n"],
    "top_p": 0.9,
    "seed": 42,
    "frequency_penalty": 0.1,
    "presence_penalty": 0.2,
    "logit_bias": {"50256": -100},
    "max_completion_tokens": 64,
    "reasoning_effort": "low",
    "verbosity": "low",
    "temperature": 0.3,
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "user": "end-user-1",
    "metadata": {"app": "tests"},
    "store": False,
    "service_tier": "auto",
    "prompt_cache_key": "k-1",
    "safety_identifier": "s-1",
}


def test_every_sampling_field_is_forwarded_and_keyed(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    messages = [{"role": "user", "content": fresh("Name three rivers")}]
    _, headers = create(client, messages=messages, tools=[WEATHER], **SAMPLING)
    assert headers["x-promptcache-tier"] == "miss"
    sent = up.requests[0]
    for name, value in SAMPLING.items():
        assert sent[name] == value, name
    assert "max_tokens" not in sent  # sent under the name the client used

    _, headers = create(client, messages=messages, tools=[WEATHER], **SAMPLING)
    assert headers["x-promptcache-tier"] == "exact" and up.calls == 1
    for name, value in (
        ("stop", ["END"]),
        ("seed", 43),
        ("top_p", 0.5),
        ("reasoning_effort", "high"),
    ):
        _, headers = create(client, messages=messages, tools=[WEATHER], **{**SAMPLING, name: value})
        assert headers["x-promptcache-tier"] == "miss", name
    # fields that only identify or bill are not keyed
    other_user = {**SAMPLING, "user": "end-user-2", "metadata": {"app": "other"}}
    _, headers = create(client, messages=messages, tools=[WEATHER], **other_user)
    assert headers["x-promptcache-tier"] == "exact"


def test_an_unknown_field_is_forwarded_and_keyed(client: openai.OpenAI, up: OpenAIUpstream) -> None:
    messages = [{"role": "user", "content": fresh("Tell me about Bern")}]
    _, headers = create(client, messages=messages, extra_body={"future_knob": {"level": 2}})
    assert headers["x-promptcache-tier"] == "miss"
    assert up.requests[0]["future_knob"] == {"level": 2}
    _, headers = create(client, messages=messages, extra_body={"future_knob": {"level": 3}})
    assert headers["x-promptcache-tier"] == "miss"
    _, headers = create(client, messages=messages, extra_body={"future_knob": {"level": 2}})
    assert headers["x-promptcache-tier"] == "exact"


def test_an_image_part_is_forwarded_and_keyed_by_its_bytes(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    def ask(data: str) -> dict[str, str]:
        image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}
        content = [{"type": "text", "text": "What is in this picture?"}, image]
        _, headers = create(client, messages=[{"role": "user", "content": content}])
        return headers

    token = uuid.uuid4().hex
    assert ask(f"AAAA{token}")["x-promptcache-tier"] == "miss"
    assert up.requests[0]["messages"][0]["content"][1]["image_url"]["url"].endswith(token)
    assert ask(f"AAAA{token}")["x-promptcache-tier"] == "exact"
    assert ask(f"BBBB{token}")["x-promptcache-tier"] == "miss" and up.calls == 2


# ---------------------------------------------------------------- bypasses and limits
def test_logprobs_are_forwarded_and_bypass_the_cache(
    client: openai.OpenAI, up: OpenAIUpstream, server: ServerProcess
) -> None:
    messages = [{"role": "user", "content": fresh("Say yes")}]
    before = entries(server)
    for _ in range(2):
        _, headers = create(client, messages=messages, logprobs=True, top_logprobs=2)
        assert headers["x-promptcache-tier"] == "bypass"
        assert headers["x-promptcache-bypass"] == "logprobs"
    assert up.calls == 2 and up.requests[0]["logprobs"] is True
    assert up.requests[0]["top_logprobs"] == 2 and entries(server) == before
    stats = httpx.get(server.url + "/stats", timeout=10).json()
    assert stats["bypass_reasons"]["logprobs"] >= 2
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'promptcache_cache_bypasses_total{tenant="default",reason="logprobs"}' in metrics


def test_stats_and_metrics_count_requests_by_kind(
    client: openai.OpenAI, server: ServerProcess
) -> None:
    def kinds() -> dict[str, int]:
        return dict(httpx.get(server.url + "/stats", timeout=10).json()["kinds"])

    before = kinds()
    create(client, messages=[{"role": "user", "content": fresh("a")}], tools=[WEATHER])
    fmt = {"type": "json_object"}
    create(client, messages=[{"role": "user", "content": fresh("b")}], response_format=fmt)
    create(client, messages=[{"role": "user", "content": fresh("c")}])
    after = kinds()
    for kind in ("tools", "structured", "text"):
        assert after[kind] == before.get(kind, 0) + 1, kind
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'promptcache_cache_requests_by_kind_total{tenant="default",kind="tools"}' in metrics


def test_n_goes_to_an_upstream_that_takes_it_and_bypasses_the_cache(
    client: openai.OpenAI, up: OpenAIUpstream, server: ServerProcess
) -> None:
    before = entries(server)
    question = fresh("Hi")
    answer, headers = create(client, messages=[{"role": "user", "content": question}], n=12)
    assert headers["x-promptcache-bypass"] == "n" and headers["x-promptcache-tier"] == "bypass"
    assert up.calls == 1 and up.requests[0]["n"] == 12  # past PROMPTCACHE_MAX_N: one call
    texts = [c.message.content for c in answer.choices]
    assert [c.index for c in answer.choices] == list(range(12))
    assert texts[0] == f"[test upstream answer #1] {question}"
    assert texts[11] == f"[test upstream answer #1] {question} (choice 11)"
    # streamed, the choices are fanned out (at most PROMPTCACHE_MAX_N calls)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}], n=3, stream=True
        )
    )
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1, 2} and up.calls == 4
    with pytest.raises(openai.BadRequestError, match="PROMPTCACHE_MAX_N"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}], n=9, stream=True
        )
    assert entries(server) == before


def test_a_150_message_loop_is_answered_uncached(
    client: openai.OpenAI, up: OpenAIUpstream, server: ServerProcess
) -> None:
    messages: list[Any] = []
    for i in range(75):
        messages.append({"role": "user", "content": f"step {i}"})
        messages.append({"role": "assistant", "content": f"done {i}"})
    messages[-1] = {"role": "user", "content": fresh("and now?")}
    messages.insert(0, {"role": "system", "content": "You are an agent."})
    assert len(messages) == 151
    before = entries(server)
    answer, headers = create(client, messages=messages)
    assert headers["x-promptcache-tier"] == "bypass"
    assert headers["x-promptcache-bypass"] == "oversize"
    assert len(up.requests[0]["messages"]) == 151
    assert answer.choices[0].message.content.endswith("and now?" + messages[-1]["content"][8:])
    assert entries(server) == before


def test_bodies_past_the_cache_limit_are_forwarded_and_past_6_mb_refused(
    client: openai.OpenAI, up: OpenAIUpstream
) -> None:
    big = "word " * 60_000  # 300 kB: over PROMPTCACHE_MAX_BODY_BYTES (256 kB)
    _, headers = create(
        client, messages=[{"role": "system", "content": big}, {"role": "user", "content": "ok?"}]
    )
    assert headers["x-promptcache-bypass"] == "oversize" and up.calls == 1
    huge = "x" * (6 * 1024 * 1024 + 10)
    with pytest.raises(openai.APIStatusError) as info:
        create(client, messages=[{"role": "user", "content": huge}])
    assert info.value.status_code == 413 and up.calls == 1
    error = info.value.body
    assert isinstance(error, dict) and error["type"] == "invalid_request_error"


def test_nothing_is_stored_from_a_failed_tool_request(
    client: openai.OpenAI, up: OpenAIUpstream, server: ServerProcess
) -> None:
    before = entries(server)
    up.fail_status = 400
    up.fail_body = {"error": {"message": "tools are not supported by this model", "type": "x"}}
    messages = [{"role": "user", "content": fresh("Weather?")}]
    with pytest.raises(openai.APIStatusError) as info:
        create(client, messages=messages, tools=[WEATHER])
    assert 400 <= info.value.status_code < 600 and info.value.status_code != 500
    assert "tools are not supported" in str(info.value.message)
    assert info.value.request_id  # x-request-id, which the SDK shows on errors
    up.fail_status = None
    _, headers = create(client, messages=messages, tools=[WEATHER])
    assert headers["x-promptcache-tier"] == "miss" and entries(server) == before + 1
