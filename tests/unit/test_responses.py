"""The Responses face without a server: what a request translates to (the same internal request
as its Chat Completions equivalent), what it refuses, and the Response object and event stream
as the ``openai`` client's own models and stream state read them."""

from __future__ import annotations

import importlib
import json
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from promptcache import PromptCache, Settings, runtime
from promptcache._keys import namespace, turn_keys
from promptcache._stream import ChatStream
from promptcache._types import ChatResult, Message, Tier, ToolCall, Usage
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.http import openai_request
from promptcache.http.responses_api import _answer_turns, _turn_json, _turn_of
from promptcache.http.responses_items import InvalidRequest, parse_input
from promptcache.http.responses_request import parse_request
from promptcache.http.responses_shape import ResponseEvents, output_items, response_object
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.unit.fakes import FakeEmbedder, FakeLLM

SETTINGS = Settings.from_env({})


def parse(body: dict[str, Any], **kwargs: Any) -> Any:
    return parse_request({"model": "m", **body}, SETTINGS, "t", **kwargs)


def chat(body: dict[str, Any]) -> Any:
    return openai_request.parse_request({"model": "m", **body}, SETTINGS, "t").chat


def same_key(a: Any, b: Any) -> bool:
    return bool(
        namespace(a, "e", 8) == namespace(b, "e", 8)
        and turn_keys(a.messages) == turn_keys(b.messages)
    )


# ---------------------------------------------------------------- the request
def test_instructions_and_a_string_input_are_the_chat_completions_system_and_user_turns() -> None:
    request = parse({"instructions": "Be brief.", "input": "Hi there"})
    completion = chat(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi there"},
            ]
        }
    )
    assert request.chat == completion  # the very same internal request
    assert request.turns == (Message("user", "Hi there"),)  # instructions are not kept


def test_items_are_turns_in_chat_completions_spelling() -> None:
    items = [
        {"role": "developer", "content": "Rules."},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is in"},
                {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
                {"type": "input_file", "file_id": "file_1", "filename": "a.pdf"},
                {"type": "input_image", "file_id": "file_2"},
            ],
        },
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "c1", "name": "look", "arguments": '{"a": 1}'},
        {"type": "function_call", "call_id": "c2", "name": "look", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "a cat"},
        {"type": "function_call_output", "call_id": "c2", "output": "a hat"},
    ]
    turns = parse_input(items)
    assert [t.role for t in turns] == ["system", "user", "assistant", "tool", "tool"]
    assert turns[1].content == "What is in"
    assert turns[1].parts == (
        {"type": "text", "text": "What is in"},
        {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
        {"type": "file", "file": {"file_id": "file_1", "filename": "a.pdf"}},
        {"type": "input_image", "file_id": "file_2"},  # no Chat Completions spelling: as sent
    )
    assert turns[2] == Message(
        "assistant",
        "Let me look.",
        tool_calls=(ToolCall("look", '{"a": 1}', "c1"), ToolCall("look", "{}", "c2")),
    )
    assert turns[3] == Message("tool", "a cat", tool_call_id="c1")

    as_chat = chat(
        {
            "messages": [
                {"role": "system", "content": "Rules."},
                {"role": "user", "content": [dict(p) for p in turns[1].parts]},
                {
                    "role": "assistant",
                    "content": "Let me look.",
                    "tool_calls": [
                        {"id": "x1", "type": "function", "function": {"name": "look",
                                                                       "arguments": '{"a":1}'}},
                        {"id": "x2", "type": "function", "function": {"name": "look",
                                                                       "arguments": "{}"}},
                    ],
                },
                {"role": "tool", "tool_call_id": "x1", "content": "a cat"},
                {"role": "tool", "tool_call_id": "x2", "content": "a hat"},
            ]
        }
    )  # fmt: skip
    assert same_key(parse({"input": items}).chat, as_chat)  # ids are opaque: keyed by position


def test_reasoning_items_are_carried_as_they_are_in_their_assistant_turn() -> None:
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "sealed"}
    turns = parse_input(
        [
            {"role": "user", "content": "Think."},
            reasoning,
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "Again."},
            reasoning,
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        ]
    )
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1].content == "Done."
    assert turns[1].parts == (reasoning, {"type": "text", "text": "Done."})
    assert turns[3].parts == (reasoning,) and turns[3].tool_calls == (ToolCall("f", "{}", "c"),)


def test_reasoning_after_the_text_keeps_the_text() -> None:
    """A streamed answer's items come text first, reasoning last: one turn, nothing lost."""
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": []}
    (turn,) = parse_input([{"role": "assistant", "content": "Done."}, reasoning])
    assert turn.content == "Done."
    assert turn.parts == ({"type": "text", "text": "Done."}, reasoning)
    assert turn.as_dict()["content"] == [{"type": "text", "text": "Done."}, reasoning]


def test_the_kept_answer_holds_the_models_reasoning_blocks_as_sent() -> None:
    thinking = ({"type": "thinking", "thinking": "Hmm.", "signature": "sig"},)
    answer = result(thinking=thinking, tool_calls=(ToolCall("f", "{}", "call_9"),))
    (turn,) = _answer_turns(output_items(answer), answer)
    assert turn.parts == (*thinking, {"type": "text", "text": "Hello."})
    assert turn.tool_calls == (ToolCall("f", "{}", "call_9"),)
    plain = result()
    assert _answer_turns(output_items(plain), plain) == (Message("assistant", "Hello."),)


def test_fields_translate_and_what_identifies_is_forwarded_not_keyed() -> None:
    request = parse(
        {
            "input": "x",
            "tools": [{"type": "function", "name": "f", "parameters": {}, "strict": True}],
            "tool_choice": {"type": "function", "name": "f"},
            "parallel_tool_calls": False,
            "text": {
                "format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}},
                "verbosity": "low",
            },
            "reasoning": {"effort": "high", "summary": "auto"},
            "max_output_tokens": 99,
            "temperature": 0.5,
            "top_p": 0.5,
            "truncation": "auto",
            "user": "u",
            "metadata": {"a": "b"},
            "store": True,
            "safety_identifier": "s1",
            "prompt_cache_key": "k",
            "service_tier": "auto",
            "a_future_field": [1],
        }
    )
    assert dict(request.chat.options) == {
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {}, "strict": True}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"type": "object"}},
        },
        "verbosity": "low",
        "reasoning_effort": "high",
        "reasoning": {"summary": "auto"},
        "truncation": "auto",
        "top_p": 0.5,
        "a_future_field": [1],
    }
    assert dict(request.chat.forward) == {
        "user": "u",
        "metadata": {"a": "b"},
        "store": True,
        "service_tier": "auto",
        "prompt_cache_key": "k",
        "safety_identifier": "s1",
        "max_completion_tokens": 99,
    }
    assert request.chat.max_tokens == 99 and request.chat.temperature == 0.5
    assert request.echo["tools"][0]["name"] == "f" and request.echo["max_output_tokens"] == 99
    plain = parse({"input": "x", "text": {"format": {"type": "text"}}, "truncation": "disabled"})
    assert plain.chat == parse({"input": "x"}).chat  # the defaults, spelled out, are no change
    allowed = parse(
        {
            "input": "x",
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "f"}],
            },
        }
    )
    assert allowed.chat.options["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "f"}}],
        },
    }


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"tools": [{"type": "web_search"}, {"type": "mcp"}]}, "tools", "mcp, web_search"),
        ({"tools": [{"type": "function"}]}, "tools[0].name", "string"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice", "built-in"),
        ({"include": ["message.output_text.logprobs"]}, "include", "logprobs"),
        ({"background": True}, "background", "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt", "prompt template"),
        ({"conversation": "conv_1"}, "conversation", "conversation"),
        ({"text": {"format": {"type": "json_schema", "name": "s"}}}, "text.format.schema", ""),
        ({"reasoning": "high"}, "reasoning", "object"),
        ({"truncation": "sometimes"}, "truncation", "auto or disabled"),
        ({"top_p": 2}, "top_p", "between"),
        ({"parallel_tool_calls": "yes"}, "parallel_tool_calls", "true or false"),
        ({"promptcache": {"cache": "never"}}, "promptcache.cache", "use, skip, refresh"),
        ({"promptcache": {"nope": 1}}, "promptcache.nope", "unknown"),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type", ""),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", ""),
        ({"input": [{"role": "user", "content": []}]}, "input[0].content", "non-empty"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "", "file_id"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "filename": "a"}]}]},
            "input[0].content[0]",
            "file_data",
        ),
        ({"input": "   "}, "input", "empty"),
        ({"input": "x", "model": ""}, "model", "non-empty"),
    ],
)
def test_what_the_cache_cannot_do_or_openai_refuses_is_a_400_naming_the_field(
    body: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse({"input": "x", **body})
    assert info.value.status == 400 and words in info.value.message
    if param:
        assert info.value.param == param


def test_a_kept_conversation_reads_back_as_the_same_turns() -> None:
    turns = (
        Message("system", "Rules."),
        Message("user", "Look", parts=({"type": "image_url", "image_url": {"url": "u"}},)),
        Message("assistant", "", tool_calls=(ToolCall("f", "{}", "c1"),)),
        Message("tool", "done", tool_call_id="c1"),
        Message("assistant", "ok", parts=({"type": "reasoning", "id": "rs"},)),
    )
    assert tuple(_turn_of(json.loads(json.dumps(_turn_json(t)))) for t in turns) == turns


# ---------------------------------------------------------------- the answer
def result(**changes: Any) -> ChatResult:
    values: dict[str, Any] = {
        "response": "Hello.",
        "tier": Tier.MISS,
        "model": "m",
        "usage": Usage(3, 4),
        "latency_ms": 1.0,
        **changes,
    }
    return ChatResult(**values)


ECHO = parse({"input": "x"}).echo


def response(answer: ChatResult) -> Response:
    obj = response_object(
        ECHO,
        response_id="resp_1",
        created_at=1,
        model=answer.model,
        output=output_items(answer),
        result=answer,
        store=True,
    )
    return Response.model_validate(obj)  # the client's own typed model, strictly


def test_the_response_object_is_the_clients_typed_model() -> None:
    plain = response(result())
    assert plain.output_text == "Hello." and plain.status == "completed"
    assert plain.usage is not None and plain.usage.total_tokens == 7
    assert plain.parallel_tool_calls is True and plain.tool_choice == "auto"

    cut = response(result(finish_reason="length"))
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"

    calls = response(result(response="", tool_calls=(ToolCall("f", '{"a":1}', ""),)))
    assert [o.type for o in calls.output] == ["function_call"]
    call: Any = calls.output[0]
    assert call.call_id.startswith("call_") and call.arguments == '{"a":1}'  # fresh on a replay

    thinking = ({"type": "thinking", "thinking": "Hmm.", "signature": "sig"},)
    thought = response(result(thinking=thinking))
    item: Any = thought.output[0]
    assert item.type == "reasoning" and item.encrypted_content == "sig"
    assert item.content[0].text == "Hmm." and thought.output_text == "Hello."


def _live(answer: ChatResult) -> ChatStream:
    """A live miss: deltas first, the whole answer (calls, reasoning) at the end."""

    def deltas() -> Generator[str, None, ChatResult]:
        yield "Hel"
        yield "lo."
        return answer

    return ChatStream(tier=Tier.MISS, model="m", deltas=deltas())


def test_the_event_stream_reads_with_the_clients_stream_state() -> None:
    answer = result(
        tool_calls=(ToolCall("f", '{"city": "' + "x" * 100 + '"}', "call_up"),),
        thinking=({"type": "reasoning", "id": "rs_up", "summary": []},),
        finish_reason="tool_calls",
    )
    kept: list[dict[str, Any]] = []

    def finish(obj: dict[str, Any], res: ChatResult) -> bool:
        kept.append(obj)
        return True

    events = ResponseEvents(
        _live(answer),
        ECHO,
        response_id="resp_s",
        created_at=1,
        store=True,
        finish=finish,
        errors_as_events=True,
    )
    raw = b"".join(events).decode()
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    parsed = [
        adapter.validate_python(json.loads(e.split("data: ", 1)[1])) for e in raw.split("\n\n") if e
    ]
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in parsed:
        state.handle_event(event)
    final = parsed[-1].response
    assert parsed[-1].type == "response.completed" and final.id == "resp_s"
    assert [o.type for o in final.output] == ["message", "function_call", "reasoning"]
    assert final.output_text == "Hello." and final.output[1].call_id == "call_up"
    args = [e.delta for e in parsed if e.type == "response.function_call_arguments.delta"]
    assert len(args) == 2 and "".join(args) == answer.tool_calls[0].arguments
    assert len(kept) == 1 and kept[0]["id"] == "resp_s" and kept[0]["status"] == "completed"
    assert [o["type"] for o in kept[0]["output"]] == ["message", "function_call", "reasoning"]

    cut = ResponseEvents(
        _live(result(finish_reason="length")),
        ECHO,
        response_id="resp_c",
        created_at=1,
        store=False,
        finish=lambda obj, res: False,
        errors_as_events=True,
    )
    last = b"".join(cut).decode().rstrip().rsplit("\n\n", 1)[-1]
    assert last.startswith("event: response.incomplete\n")
    assert json.loads(last.split("data: ", 1)[1])["response"]["store"] is False


# ---------------------------------------------------------------- a store that cannot keep
class _Forgetful(MemoryStore):
    """Entries as usual; kept documents fail (``broken``: which of the two calls)."""

    broken = {"put_document", "get_document"}

    def put_document(self, name: str, document: Any, ttl: float | None) -> None:
        if "put_document" in self.broken:
            raise OSError("disk full")
        super().put_document(name, document, ttl)

    def get_document(self, name: str) -> dict[str, Any] | None:
        if "get_document" in self.broken:
            raise OSError("unreachable")
        return super().get_document(name)


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, _Forgetful]]:
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory")
    monkeypatch.setenv("PROMPTCACHE_MODEL", "m")
    runtime.reset()
    store = _Forgetful()
    cache = PromptCache(store=store, embedder=FakeEmbedder(), stats=MemoryStats(), llm=FakeLLM())
    monkeypatch.setattr(runtime, "cache", lambda: cache)
    yield importlib.reload(importlib.import_module("promptcache_handlers.chat")), store
    monkeypatch.undo()
    runtime.reset()


def _call(module: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    event = to_event(method, path, {"Content-Type": "application/json"}, raw)
    status, _, payload = from_result(module.lambda_handler(event, LocalContext("chat")))
    return status, json.loads(payload)


def test_a_store_that_cannot_keep_answers_unkept_and_cannot_chain(
    handler: tuple[Any, _Forgetful],
) -> None:
    module, store = handler
    status, body = _call(module, "POST", "/v1/responses", {"input": "Keep me?"})
    assert status == 200 and body["store"] is False  # answered, and says it was not kept
    assert body["output"][0]["content"][0]["text"] == "answer 1: Keep me?"
    status, error = _call(module, "GET", f"/v1/responses/{body['id']}")
    assert status == 503 and error["error"]["code"] == "store_error"  # cannot tell: not a 404
    follow = {"input": "and?", "previous_response_id": body["id"]}
    assert _call(module, "POST", "/v1/responses", follow)[0] == 503

    store.broken = {"get_document"}
    status, kept = _call(module, "POST", "/v1/responses", {"input": "Keep me?"})
    assert status == 200 and kept["store"] is True
    store.broken = set()
    assert _call(module, "GET", f"/v1/responses/{kept['id']}") == (200, kept)


def test_a_stream_keeps_its_response_before_it_completes(handler: tuple[Any, _Forgetful]) -> None:
    module, store = handler
    store.broken = set()
    raw = json.dumps({"input": "Stream and keep", "stream": True}).encode()
    event = to_event("POST", "/v1/responses", {"Content-Type": "application/json"}, raw)
    result = module.lambda_handler(event, LocalContext("chat"))
    assert result["statusCode"] == 200
    last = result["body"].rstrip().rsplit("\n\n", 1)[-1]
    final = json.loads(last.split("data: ", 1)[1])["response"]
    assert final["status"] == "completed" and final["store"] is True
    assert _call(module, "GET", f"/v1/responses/{final['id']}") == (200, final)
    store.broken = {"put_document"}
    result = module.lambda_handler(event, LocalContext("chat"))
    last = result["body"].rstrip().rsplit("\n\n", 1)[-1]
    assert json.loads(last.split("data: ", 1)[1])["response"]["store"] is False
