"""OpenAI's Responses request -> the cache's ``ChatRequest`` (docs/openai-responses.md says why).

The internal request is the Chat Completions one, so a Responses request that means what a Chat
Completions request means is the same request, with the same key: ``instructions`` is a system
turn, a string ``input`` one user turn, and the items of a list ``input`` turns in Chat
Completions spelling (``responses_items``).

The other fields: function ``tools`` and ``tool_choice`` in Chat Completions spelling,
``text.format`` -> ``response_format``, ``text.verbosity`` -> ``verbosity``,
``max_output_tokens`` -> the output limit, ``reasoning.effort`` -> ``reasoning_effort``, the
identifying and billing fields forwarded and not keyed (``_keys.UNKEYED``), every other field
keyed and forwarded as it is. What the cache cannot do is a 400 naming the field: built-in tools
it cannot run (web search, file search, code interpreter, ...), items that name objects kept by
OpenAI (``item_reference``, ``prompt``, ``conversation``), ``background`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import PromptCacheError, Unprocessable
from .._keys import UNKEYED
from .._types import ChatRequest, Message
from ..settings import Settings
from . import openai_request as chat_face
from .intake import cache_fields, end_user, oversize
from .responses_items import InvalidRequest, invalid, parse_input, text_field
from .wire import number

#: The tools OpenAI runs itself, which a cache in front of a chat model cannot.
BUILT_IN_TOOLS = (
    "web_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "file_search",
    "code_interpreter",
    "computer_use",
    "computer_use_preview",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
    "custom",
)
#: Fields this face reads itself (translated, or the cache's own).
_OWN = {
    "input", "instructions", "model", "stream", "stream_options", "promptcache", "tools",
    "tool_choice", "text", "max_output_tokens", "temperature", "reasoning", "truncation",
    "previous_response_id", "include", "background",
}  # fmt: skip
#: Fields naming objects OpenAI keeps, which this cache does not have.
_ELSEWHERE = {
    "prompt": "a prompt template kept by OpenAI",
    "conversation": "a conversation kept by OpenAI",
}
#: ``include`` values the cache can honour: reasoning items are carried as they are anyway.
_INCLUDABLE = ("reasoning.encrypted_content",)


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A validated ``POST /v1/responses``.

    - ``chat``: the internal request (the kept conversation of ``previous_response_id`` first).
    - ``turns``: the conversation to keep with the answer: what ``previous_response_id`` kept
      and this request's input (without ``instructions``, which OpenAI does not carry over).
    - ``echo``: the request's fields as the Response object repeats them.
    """

    chat: ChatRequest
    turns: tuple[Message, ...]
    stream: bool = False
    store: bool = True
    previous: str | None = None
    echo: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- tools, formats
def _tools(value: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """``tools`` -> (Chat Completions function tools, the tools as sent, to echo)."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise InvalidRequest("'tools' must be a list of tool objects", "tools")
    kinds = [t.get("type") for t in value]
    built_in = sorted({str(k) for k in kinds if k != "function"})
    if built_in:
        raise InvalidRequest(
            f"the cache cannot run built-in tools ({', '.join(built_in)}); it answers with "
            "function tools only (tools of type 'function', which the caller runs)",
            "tools",
            code="unsupported_tool",
        )
    out = []
    for i, tool in enumerate(value):
        name = text_field(tool.get("name"), f"tools[{i}].name")
        function: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out, list(value)


def _tool_choice(value: Any) -> Any:
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise InvalidRequest("'tool_choice' must be none, auto, required or an object")
        return value
    if not isinstance(value, dict):
        raise InvalidRequest("'tool_choice' must be a string or an object", "tool_choice")
    kind = value.get("type")
    if kind == "function":
        name = text_field(value.get("name"), "tool_choice.name")
        return {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools":
        tools = value.get("tools")
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise InvalidRequest("'tool_choice.tools' must be a list of tools", "tool_choice")
        allowed = [
            {"type": "function", "function": {"name": text_field(t.get("name"), "tool_choice")}}
            if t.get("type") == "function"
            else dict(t)
            for t in tools
        ]
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": value.get("mode", "auto"), "tools": allowed},
        }
    raise InvalidRequest(
        f"'tool_choice' of type {kind!r} names a built-in tool the cache cannot run",
        "tool_choice",
    )


def _text(value: Any, keyed: dict[str, Any]) -> None:
    """``text``: its ``format`` -> ``response_format`` (plain text is the default: not set),
    its ``verbosity`` -> ``verbosity``."""
    if not isinstance(value, dict):
        raise InvalidRequest("'text' must be an object with 'format' and/or 'verbosity'", "text")
    fmt = value.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict):
            raise InvalidRequest("'text.format' must be an object with a 'type'", "text.format")
        kind = fmt.get("type")
        if kind == "json_object":
            keyed["response_format"] = {"type": "json_object"}
        elif kind == "json_schema":
            name = text_field(fmt.get("name"), "text.format.name")
            if not isinstance(fmt.get("schema"), dict):
                raise InvalidRequest("'text.format.schema' must be an object", "text.format.schema")
            schema: dict[str, Any] = {"name": name}
            schema.update({k: fmt[k] for k in ("description", "schema", "strict") if k in fmt})
            keyed["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif kind != "text":
            raise InvalidRequest(
                "'text.format.type' must be one of text, json_object, json_schema",
                "text.format.type",
            )
    if value.get("verbosity") is not None:
        keyed["verbosity"] = text_field(value["verbosity"], "text.verbosity")


def _reasoning(value: Any, keyed: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise InvalidRequest("'reasoning' must be an object", "reasoning")
    rest = {k: v for k, v in value.items() if v is not None}
    effort = rest.pop("effort", None)
    if effort is not None:
        keyed["reasoning_effort"] = text_field(effort, "reasoning.effort")
    if rest:  # a summary asked for: no Chat Completions name, kept under its own
        keyed["reasoning"] = rest


# ---------------------------------------------------------------- the request
def _checked(body: dict[str, Any]) -> None:
    """The fields whose type OpenAI checks too (the Chat Completions face's checks, by the same
    names), and what this cache cannot do."""
    for name in ("parallel_tool_calls", "top_p", "user", "metadata", "store", "service_tier"):
        check = chat_face._CHECKS[name]  # one table for both OpenAI faces
        if body.get(name) is not None:
            try:
                check(name, body[name])
            except PromptCacheError as exc:
                raise invalid(exc, name) from None
    for name in ("prompt_cache_key", "safety_identifier"):
        if body.get(name) is not None:
            text_field(body[name], name)
    for name, what in _ELSEWHERE.items():
        if body.get(name) is not None:
            raise InvalidRequest(
                f"'{name}' names {what}; this cache does not have it: send the input itself",
                name,
            )
    if body.get("background") not in (None, False):
        raise InvalidRequest(
            "background responses are not supported by the cache: it answers in the request",
            "background",
        )
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list) or not all(isinstance(v, str) for v in include):
            raise InvalidRequest("'include' must be a list of strings", "include")
        other = sorted(set(include) - set(_INCLUDABLE))
        if other:
            raise InvalidRequest(
                f"'include' asks for output the cache does not produce: {', '.join(other)}",
                "include",
            )
    truncation = body.get("truncation")
    if truncation is not None and truncation not in ("auto", "disabled"):
        raise InvalidRequest("'truncation' must be auto or disabled", "truncation")


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    try:
        return number(body, name, lo, hi)
    except PromptCacheError as exc:
        raise invalid(exc, name) from None


def parse_request(
    body: dict[str, Any],
    settings: Settings,
    tenant: str,
    *,
    earlier: Sequence[Message] = (),
    big: bool = False,
) -> ResponsesRequest:
    """OpenAI's Responses request -> a ResponsesRequest. ``earlier``: the conversation kept by
    ``previous_response_id`` (the caller looked it up). Raises InvalidRequest naming the
    field."""
    _checked(body)
    if "input" not in body:
        raise InvalidRequest("'input' is required: a string or a list of input items", "input")
    turns = (*earlier, *parse_input(body["input"]))
    instructions = body.get("instructions")
    if instructions is not None:
        text_field(instructions, "instructions")
    messages = ((Message("system", instructions),) if instructions else ()) + turns

    model = body.get("model", settings.model)
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise InvalidRequest(
            "'model' must be a non-empty string of at most 200 characters", "model"
        )
    max_output = body.get("max_output_tokens")
    if max_output is not None and (
        isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 1
    ):
        raise InvalidRequest("'max_output_tokens' must be a positive integer", "max_output_tokens")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false", "stream")
    if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
        raise InvalidRequest("'stream_options' must be an object", "stream_options")
    previous = body.get("previous_response_id")
    if previous is not None:
        text_field(previous, "previous_response_id")

    keyed: dict[str, Any] = {}
    echo_tools: list[Any] = []
    if body.get("tools"):
        keyed["tools"], echo_tools = _tools(body["tools"])
    elif body.get("tools") is not None:
        _tools(body["tools"])
    if body.get("tool_choice") is not None:
        keyed["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("text") is not None:
        _text(body["text"], keyed)
    if body.get("reasoning") is not None:
        _reasoning(body["reasoning"], keyed)
    if body.get("truncation") == "auto":
        keyed["truncation"] = "auto"  # no Chat Completions name: its own ("disabled": default)
    keyed.update(
        (k, v) for k, v in body.items() if k not in _OWN and k not in UNKEYED and v is not None
    )
    forward = {k: body[k] for k in UNKEYED if body.get(k) is not None}
    if max_output is not None:  # keyed as max_tokens; sent under the name every model takes
        forward["max_completion_tokens"] = max_output

    try:
        extra = cache_fields(body.get("promptcache"))
    except Unprocessable as exc:
        raise invalid(exc, exc.param) from None
    chat = ChatRequest(
        messages=messages,
        model=model.strip(),
        tenant=tenant,
        threshold=extra.threshold,
        ttl=extra.ttl,
        max_tokens=max_output,
        temperature=_number(body, "temperature", 0.0, 2.0),
        cache=extra.mode,
        options=keyed,
        forward=forward,
        end_user=end_user(forward, settings),
        bypass="oversize" if big or oversize(messages, settings) else None,
        semantic=extra.semantic_for(settings),
    )

    def given(name: str, default: Any) -> Any:
        return default if body.get(name) is None else body[name]

    echo = {
        "instructions": instructions,
        "max_output_tokens": max_output,
        "metadata": given("metadata", {}),
        "parallel_tool_calls": given("parallel_tool_calls", True),
        "previous_response_id": previous,
        "reasoning": {"effort": keyed.get("reasoning_effort"), "summary": None},
        "service_tier": body.get("service_tier"),
        "temperature": given("temperature", 1.0),
        "text": given("text", {"format": {"type": "text"}}),
        "tool_choice": given("tool_choice", "auto"),
        "tools": echo_tools,
        "top_p": given("top_p", 1.0),
        "truncation": given("truncation", "disabled"),
        "user": body.get("user"),
        "max_tool_calls": body.get("max_tool_calls"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "safety_identifier": body.get("safety_identifier"),
    }
    store = body.get("store", True)
    return ResponsesRequest(
        chat=chat,
        turns=turns,
        stream=stream,
        store=store is not False,
        previous=previous,
        echo=echo,
    )
