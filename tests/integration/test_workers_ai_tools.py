"""Tools and JSON mode with Workers AI as the upstream, end to end: the official ``openai`` client
over HTTP against ``promptcache serve``, Workers AI (its OpenAI-compatible endpoint included) a
loopback stand-in at the network boundary. What a model supports is answered, stored and
replayed; what it refuses reaches the client as a 400 with Workers AI's message, and nothing is
stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from promptcache.adapters.workers_ai import DEFAULT_LLM_MODEL
from tests.support.fixtures_cloudflare import CloudflareAPIStandIn
from tests.support.serve import ServerProcess

pytestmark = pytest.mark.integration

TOOL_MODEL = "@hf/nousresearch/hermes-2-pro-mistral-7b"  # function calling, per Cloudflare
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"question": {"type": "string"}}},
    },
}


@pytest.fixture
def served(
    tmp_path: Path, cloudflare_env: dict[str, str], cloudflare_api: CloudflareAPIStandIn
) -> Iterator[tuple[openai.OpenAI, CloudflareAPIStandIn]]:
    env = {**cloudflare_env, "PROMPTCACHE_DATA_DIR": str(tmp_path / "data")}
    server = ServerProcess(env, tmp_path / "server.log").start()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0, timeout=60)
    try:
        yield client, cloudflare_api
    finally:
        client.close()
        server.stop()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def create(client: openai.OpenAI, **kwargs: Any) -> tuple[str, Any]:
    """(the cache's tier, the parsed chat.completion)."""
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    return raw.headers["x-promptcache-tier"], raw.parse()


def test_a_tool_loop_is_answered_then_replayed_turn_by_turn(
    served: tuple[openai.OpenAI, CloudflareAPIStandIn],
) -> None:
    client, api = served
    ask = {"model": TOOL_MODEL, "messages": user("Weather in Paris?"), "tools": [WEATHER]}
    tier, first = create(client, **ask)
    call = first.choices[0].message.tool_calls[0]
    assert tier == "miss" and first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather" and call.function.arguments == (
        '{"question": "Weather in Paris?"}'
    )
    sent = api.bodies[-1]  # to the OpenAI-compatible endpoint, as the client sent it
    assert sent["model"] == TOOL_MODEL and sent["tools"] == [WEATHER]

    result = {"role": "tool", "tool_call_id": call.id, "content": "12C and sunny"}
    turn = [*ask["messages"], first.choices[0].message.model_dump(exclude_none=True), result]
    tier, final = create(client, model=TOOL_MODEL, messages=turn, tools=[WEATHER])
    assert tier == "miss" and "12C and sunny" in (final.choices[0].message.content or "")
    assert api.calls[TOOL_MODEL] == 2

    # the same loop again: both turns from the cache, the call with a fresh id
    tier, again = create(client, **ask)
    replayed = again.choices[0].message.tool_calls[0]
    assert tier == "exact" and replayed.id != call.id
    assert (replayed.function.name, replayed.function.arguments) == (
        call.function.name,
        call.function.arguments,
    )
    result["tool_call_id"] = replayed.id
    turn = [*ask["messages"], again.choices[0].message.model_dump(exclude_none=True), result]
    tier, final_again = create(client, model=TOOL_MODEL, messages=turn, tools=[WEATHER])
    assert tier == "exact"
    assert final_again.choices[0].message.content == final.choices[0].message.content
    assert api.calls[TOOL_MODEL] == 2


def test_a_streamed_tool_call_is_reassembled_and_stored(
    served: tuple[openai.OpenAI, CloudflareAPIStandIn],
) -> None:
    client, api = served
    ask = {"model": TOOL_MODEL, "messages": user("Weather in Oslo?"), "tools": [WEATHER]}
    arguments, names, finish = "", [], None
    for chunk in client.chat.completions.create(**ask, stream=True):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for piece in choice.delta.tool_calls or ():
                names += [piece.function.name] if piece.function and piece.function.name else []
                arguments += (piece.function.arguments or "") if piece.function else ""
    assert names == ["weather"] and arguments == '{"question": "Weather in Oslo?"}'
    assert finish == "tool_calls" and api.bodies[-1]["stream"] is True
    tier, stored = create(client, **ask)
    assert tier == "exact" and stored.choices[0].message.tool_calls[0].function.arguments == (
        arguments
    )
    assert api.calls[TOOL_MODEL] == 1


class Country(BaseModel):
    name: str
    capital: str


def test_json_mode_and_parse_are_answered_and_stored(
    served: tuple[openai.OpenAI, CloudflareAPIStandIn],
) -> None:
    client, api = served
    parsed = client.chat.completions.parse(
        model=DEFAULT_LLM_MODEL, messages=user("Tell me about India."), response_format=Country
    )
    country = parsed.choices[0].message.parsed
    assert country == Country(name="Tell me about India.", capital="Tell me about India.")
    schema = api.bodies[-1]["response_format"]
    assert schema["type"] == "json_schema" and schema["json_schema"]["name"] == "Country"
    again = client.chat.completions.parse(
        model=DEFAULT_LLM_MODEL, messages=user("Tell me about India."), response_format=Country
    )
    assert again.choices[0].message.parsed == country
    tier, obj = create(
        client,
        model=DEFAULT_LLM_MODEL,
        messages=user("Answer in JSON: the capital of Peru?"),
        response_format={"type": "json_object"},
    )
    assert tier == "miss" and obj.choices[0].message.content.startswith('{"answer"')
    assert api.calls[DEFAULT_LLM_MODEL] == 2


def test_plain_text_stays_on_the_native_api(
    served: tuple[openai.OpenAI, CloudflareAPIStandIn],
) -> None:
    client, api = served
    tier, answer = create(client, model=DEFAULT_LLM_MODEL, messages=user("Hello?"), seed=3)
    assert tier == "miss" and "You asked: Hello?" in answer.choices[0].message.content
    assert "model" not in api.bodies[-1] and api.bodies[-1]["seed"] == 3  # /ai/run's body


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # the default model has no function calling
        ({"model": DEFAULT_LLM_MODEL, "tools": [WEATHER]}, "does not support function calling"),
        # JSON mode does not stream on Workers AI
        (
            {
                "model": DEFAULT_LLM_MODEL,
                "response_format": {"type": "json_object"},
                "stream": True,
            },
            "doesn't support streaming",
        ),
    ],
)
def test_what_workers_ai_refuses_is_a_400_with_its_message_and_stores_nothing(
    served: tuple[openai.OpenAI, CloudflareAPIStandIn], kwargs: dict[str, Any], message: str
) -> None:
    client, api = served
    for attempt in (1, 2):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(messages=user("Weather in Rome?"), **kwargs)
        assert message in info.value.message and DEFAULT_LLM_MODEL in info.value.message
        assert info.value.body["code"] == "upstream_bad_request"  # type: ignore[index]
        assert api.calls[DEFAULT_LLM_MODEL] == attempt  # asked again: nothing was stored
