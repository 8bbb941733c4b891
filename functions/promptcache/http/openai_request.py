"""OpenAI's chat completions request -> the cache's ``ChatRequest``: what is forwarded, keyed,
bypassed and refused (docs/openai-compatibility.md says why).

- Every field is forwarded. A field that can change the answer (tools, response_format, stop,
  seed, top_p, penalties, logit_bias, reasoning_effort, verbosity, modalities, and any field this
  version does not know) is also keyed: ``ChatRequest.options``. Fields that only identify or
  bill (``_keys.UNKEYED``) are forwarded and not keyed: ``ChatRequest.forward``; with
  PROMPTCACHE_KEY_USER=on, the end user's (``END_USER``) are keyed too: ``ChatRequest.end_user``.
- What one stored answer cannot replay faithfully is forwarded and not stored, with a reason
  from ``BYPASS_REASONS``: log probabilities, audio output, several choices (n > 1), and a
  request over the cache's limits (messages, characters, body).
- The cache's own 4xx are for what OpenAI refuses too: a field of the wrong type or range, a
  malformed message, in OpenAI's error shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import Unprocessable
from .._keys import UNKEYED
from .._types import ChatRequest, Message, ToolCall
from ..settings import Settings
from .intake import cache_fields, end_user, oversize
from .wire import number

_ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
#: Read by this module, not forwarded as options (the cache's own, or shaped by the face).
_OWN = {"messages", "model", "stream", "stream_options", "n", "promptcache"}
_OWN |= {"max_tokens", "max_completion_tokens", "temperature"}


#: The fields naming the end user, keyed with PROMPTCACHE_KEY_USER=on (forwarded either way).
@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated ``/v1/chat/completions`` request."""

    chat: ChatRequest
    n: int = 1  # choices asked for: forwarded when ``chat.forward`` holds it, else fanned out
    stream: bool = False
    include_usage: bool = False


# ---------------------------------------------------------------- field checks
def _fail(name: str, what: str) -> Unprocessable:
    return Unprocessable(f"'{name}' must be {what}", param=name)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not isinstance(value, float) or math.isfinite(value)


#: A field's check: (name, value) -> None, or Unprocessable naming the field.
Check = Callable[[str, Any], None]


def _range(lo: float, hi: float) -> Check:
    def check(name: str, value: Any) -> None:
        if not _is_number(value) or not lo <= value <= hi:
            raise _fail(name, f"a number between {lo:g} and {hi:g}")

    return check


def _integer(lo: int, hi: int) -> Check:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _fail(name, f"an integer between {lo} and {hi}")

    return check


def _of(kind: type, what: str) -> Check:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise _fail(name, what)

    return check


def _objects(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _fail(name, "a list of objects")


def _tools(name: str, value: Any) -> None:
    _objects(name, value)
    for i, tool in enumerate(value):
        if not isinstance(tool.get("type"), str):
            raise _fail(f"{name}[{i}].type", "a string")
        function = tool.get("function")
        if tool["type"] == "function" and not (
            isinstance(function, dict) and isinstance(function.get("name"), str)
        ):
            raise _fail(f"{name}[{i}].function.name", "a string")


def _functions(name: str, value: Any) -> None:
    _objects(name, value)
    for i, function in enumerate(value):
        if not isinstance(function.get("name"), str):
            raise _fail(f"{name}[{i}].name", "a string")


def _choice(name: str, value: Any) -> None:
    if not isinstance(value, (str, dict)):
        raise _fail(name, "a string or an object")


def _response_format(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise _fail(name, "an object with a 'type'")
    kind = value.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise _fail(f"{name}.type", "one of text, json_object, json_schema")
    schema = value.get("json_schema")
    if kind == "json_schema" and not (
        isinstance(schema, dict) and isinstance(schema.get("name"), str)
    ):
        raise _fail(f"{name}.json_schema", "an object with a 'name'")


def _stop(name: str, value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(name, "a string or a list of strings")


def _logit_bias(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise _fail(name, "an object of token ids to numbers between -100 and 100")
    for token, bias in value.items():
        _range(-100, 100)(f"{name}.{token}", bias)


def _strings(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(name, "a list of strings")


#: The documented fields this face checks the type of (OpenAI refuses the wrong one as well).
#: A field not listed (a newer one) is forwarded and keyed as it is.
_CHECKS: dict[str, Check] = {
    "tools": _tools,
    "functions": _functions,
    "tool_choice": _choice,
    "function_call": _choice,
    "parallel_tool_calls": _of(bool, "true or false"),
    "response_format": _response_format,
    "stop": _stop,
    "top_p": _range(0, 1),
    "seed": _integer(-(2**63), 2**63 - 1),
    "frequency_penalty": _range(-2, 2),
    "presence_penalty": _range(-2, 2),
    "logit_bias": _logit_bias,
    "logprobs": _of(bool, "true or false"),
    "top_logprobs": _integer(0, 20),
    "reasoning_effort": _of(str, "a string"),
    "verbosity": _of(str, "a string"),
    "modalities": _strings,
    "audio": _of(dict, "an object"),
    "prediction": _of(dict, "an object"),
    "web_search_options": _of(dict, "an object"),
    "user": _of(str, "a string"),
    "metadata": _of(dict, "an object"),
    "store": _of(bool, "true or false"),
    "service_tier": _of(str, "a string"),
    "prompt_cache_key": _of(str, "a string"),
    "safety_identifier": _of(str, "a string"),
}


# ---------------------------------------------------------------- messages
def _parts(value: list[Any], where: str) -> tuple[str, tuple[Mapping[str, Any], ...]]:
    """A list of content parts -> (the text parts joined by newlines, the parts as sent when one
    of them is not text, else ())."""
    texts: list[str] = []
    other = False
    for j, part in enumerate(value):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise Unprocessable(
                f"{where}[{j}] must be a content part object with a 'type'", param=f"{where}[{j}]"
            )
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise Unprocessable(
                    f"{where}[{j}].text must be a string", param=f"{where}[{j}].text"
                )
            texts.append(part["text"])
        else:
            other = True
    if not value:
        raise Unprocessable(f"{where} must not be an empty list", param=where)
    return "\n".join(texts), (tuple(value) if other else ())


def _calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    if not isinstance(value, list):
        raise Unprocessable(f"{where} must be a list of tool calls", param=where)
    calls = []
    for j, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        if not (
            isinstance(call, dict)
            and isinstance(call.get("id"), str)
            and isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments"), str)
        ):
            raise Unprocessable(
                f"{where}[{j}] must be a tool call: {{id, type, function: {{name, arguments}}}} "
                "with string values",
                param=f"{where}[{j}]",
            )
        kind = call.get("type", "function")
        calls.append(
            ToolCall(function["name"], function["arguments"], call["id"], str(kind or "function"))
        )
    return tuple(calls)


def _message(item: Any, i: int) -> Message:
    where = f"messages[{i}]"
    if not isinstance(item, dict):
        raise Unprocessable(f"{where} must be an object with 'role' and 'content'", param=where)
    role = item.get("role")
    if role not in _ROLES:
        raise Unprocessable(
            f"{where}.role must be one of {', '.join(_ROLES)}", param=f"{where}.role"
        )
    raw = item.get("content")
    calls: tuple[ToolCall, ...] = ()
    if role == "assistant" and item.get("tool_calls") is not None:
        calls = _calls(item["tool_calls"], f"{where}.tool_calls")
    legacy = item.get("function_call") if role == "assistant" else None
    if legacy is not None:
        if not (
            isinstance(legacy, dict)
            and isinstance(legacy.get("name"), str)
            and isinstance(legacy.get("arguments"), str)
        ):
            raise Unprocessable(
                f"{where}.function_call must be {{name, arguments}} strings",
                param=f"{where}.function_call",
            )
        calls += (ToolCall(legacy["name"], legacy["arguments"], "", "function_call"),)
    parts: tuple[Mapping[str, Any], ...] = ()
    if isinstance(raw, list):
        text, parts = _parts(raw, f"{where}.content")
    elif isinstance(raw, str):
        text = raw
    elif raw is None and calls:
        text = ""
    else:
        raise Unprocessable(
            f"{where}.content must be a string or a list of content parts",
            param=f"{where}.content",
        )
    if not calls and role not in ("tool", "function") and not parts and not text.strip():
        raise Unprocessable(f"{where}.content must not be empty", param=f"{where}.content")
    call_id = item.get("tool_call_id")
    if role == "tool" and not isinstance(call_id, str):
        raise Unprocessable(
            f"{where}.tool_call_id must be a string (the call it answers)",
            param=f"{where}.tool_call_id",
        )
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise Unprocessable(f"{where}.name must be a string", param=f"{where}.name")
    if role == "function" and not name:
        raise Unprocessable(
            f"{where}.name must name the function (role 'function')", param=f"{where}.name"
        )
    return Message(
        _ROLE_ALIASES.get(role, str(role)),
        text,
        tool_calls=calls,
        tool_call_id=call_id if role == "tool" else None,
        name=name or None,
        parts=parts,
    )


def parse_messages(value: Any) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise _fail("messages", "a non-empty list of {role, content} objects")
    return tuple(_message(item, i) for i, item in enumerate(value))


# ---------------------------------------------------------------- the request
def _int(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(name, f"an integer between {lo} and {hi}")
    return value


def _bool(body: dict[str, Any], name: str, within: str = "") -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(f"{within}{name}", "true or false")
    return value


def _bypass(body: dict[str, Any], n: int, big: bool) -> str | None:
    """Why the answer must not be stored (``BYPASS_REASONS``), or None."""
    if body.get("logprobs") is True:
        return "logprobs"
    if body.get("audio") is not None or "audio" in (body.get("modalities") or ()):
        return "audio"
    if n > 1:
        return "n"
    if big:
        return "oversize"
    return None


def parse_request(
    body: dict[str, Any],
    settings: Settings,
    tenant: str,
    *,
    big: bool = False,
    takes_n: bool = False,
) -> CompletionRequest:
    """OpenAI's request shape -> a CompletionRequest. Raises RequestError (4xx) naming the field.
    ``big``: the body is over PROMPTCACHE_MAX_BODY_BYTES (forwarded uncached). ``takes_n``: the
    upstream answers n choices in one call (``n`` is forwarded, up to OpenAI's 128, when not
    streamed); otherwise n > 1 is fanned out, at most PROMPTCACHE_MAX_N calls."""
    for name, check in _CHECKS.items():
        if body.get(name) is not None:
            check(name, body[name])
    if "messages" not in body:
        raise Unprocessable(
            "'messages' is required: a non-empty list of {role, content}", param="messages"
        )
    messages = parse_messages(body["messages"])

    model = body.get("model", settings.model)
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise _fail("model", "a non-empty string of at most 200 characters")

    max_tokens = _int(body, "max_tokens", 1, 1_000_000)
    max_completion_tokens = _int(body, "max_completion_tokens", 1, 1_000_000)
    if None not in (max_tokens, max_completion_tokens) and max_tokens != max_completion_tokens:
        raise Unprocessable(
            "'max_tokens' and 'max_completion_tokens' disagree; send one of them",
            param="max_completion_tokens",
        )
    n = _int(body, "n", 1, 128) or 1
    stream = _bool(body, "stream")
    forwarded = takes_n and not stream
    if n > settings.max_n and not forwarded:
        raise Unprocessable(
            f"'n' is at most {settings.max_n} here (each sample is a model call; "
            f"PROMPTCACHE_MAX_N), got {n}",
            param="n",
        )

    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise Unprocessable(
                "'stream_options' is only allowed with 'stream': true", param="stream_options"
            )
        if not isinstance(options, dict):
            raise _fail("stream_options", "an object")
        include_usage = _bool(options, "include_usage", "stream_options.")

    extra = cache_fields(body.get("promptcache"))
    forward = {k: body[k] for k in UNKEYED if body.get(k) is not None}
    if max_completion_tokens is not None:  # keyed as max_tokens; sent under the client's name
        forward["max_completion_tokens"] = max_completion_tokens
    if n > 1 and forwarded:  # one call answers every choice
        forward["n"] = n
    keyed = {k: v for k, v in body.items() if k not in _OWN and k not in UNKEYED and v is not None}
    chat = ChatRequest(
        messages=messages,
        model=model.strip(),
        tenant=tenant,
        threshold=extra.threshold,
        ttl=extra.ttl,
        max_tokens=max_completion_tokens if max_tokens is None else max_tokens,
        temperature=number(body, "temperature", 0.0, 2.0),
        cache=extra.mode,
        options=keyed,
        forward=forward,
        bypass=_bypass(body, n, big or oversize(messages, settings)),
        semantic=extra.semantic_for(settings),
        end_user=end_user(forward, settings),
    )
    return CompletionRequest(chat=chat, n=n, stream=stream, include_usage=include_usage)
