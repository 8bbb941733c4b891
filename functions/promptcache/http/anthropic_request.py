"""Anthropic's Messages request -> the cache's ``ChatRequest`` in the Chat Completions spelling:
what is translated, keyed, forwarded and refused (docs/anthropic-messages.md says why).

- Translated where Chat Completions has the same thing: ``system`` -> a system turn;
  ``stop_sequences`` -> ``stop``; custom ``tools`` -> function tools (``input_schema`` ->
  ``parameters``); ``tool_choice`` -> auto / required / none / a named function, with
  ``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``; an assistant turn's
  ``tool_use`` blocks -> its ``tool_calls`` (the client's ids); a user turn's ``tool_result``
  blocks -> ``tool`` turns in their order; an ``image`` block (base64 or URL) -> an
  ``image_url`` part; ``metadata.user_id`` -> ``user`` (forwarded, not keyed). So a request
  meaning the same as a Chat Completions one is the same internal request, and shares its entry.
- Carried as it is, in Anthropic's spelling, where Chat Completions has no equivalent (the
  Anthropic upstream reads it natively, another refuses it): a block carrying anything more than
  the translated fields (``cache_control``, ``citations``...), ``document`` and every other
  block, ``thinking`` / ``redacted_thinking`` blocks of assistant turns, server tools, a
  ``tool_result`` marked ``is_error`` (kept whole as the ``tool`` turn's one part).
- Keyed under their own name: ``top_k``, ``thinking`` and any field this version does not know.
- Refused (400, Anthropic's ``invalid_request_error``), as Anthropic refuses them: a missing
  ``max_tokens`` or ``messages``, a field of the wrong type or range, a role other than user and
  assistant, a tool block in the wrong turn.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import BadRequest, Unprocessable
from .._keys import UNKEYED
from .._types import ChatRequest, Message, ToolCall
from ..settings import Settings
from .intake import cache_fields, end_user, oversize

#: Read by this module (the cache's own, or translated), not forwarded as they are.
_OWN = {"model", "messages", "system", "max_tokens", "stream", "promptcache", "temperature"}
_OWN |= {"stop_sequences", "tools", "tool_choice", "metadata", "service_tier"}
_ROLES = ("user", "assistant")
#: A block translated to its Chat Completions part only when it holds nothing more than these.
_TEXT_KEYS = {"type", "text"}
_IMAGE_KEYS = {"type", "source"}
_TOOL_KEYS = {"type", "name", "description", "input_schema"}


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A validated ``/v1/messages`` request."""

    chat: ChatRequest
    stream: bool = False

    @property
    def thinking(self) -> bool:
        """Extended thinking asked for (a ``thinking`` object other than ``disabled``)."""
        value = self.chat.options.get("thinking")
        return isinstance(value, Mapping) and value.get("type") != "disabled"


def _fail(name: str, what: str) -> BadRequest:
    return BadRequest(f"{name}: must be {what}")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def _number(body: Mapping[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value) or not lo <= value <= hi:
        raise _fail(name, f"a number between {lo:g} and {hi:g}")
    return float(value)


def _integer(body: Mapping[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(name, f"an integer between {lo} and {hi}")
    return value


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _fail(name, "a string")
    return value


def _block(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _fail(where, "a content block: an object with a 'type'")
    return value


# ---------------------------------------------------------------- content blocks
def _part(block: dict[str, Any], where: str) -> dict[str, Any]:
    """A user or assistant content block as a Chat Completions part where one means the same
    (a plain text block; an image by base64 data or URL), else the block as it is."""
    kind = block["type"]
    if kind == "text":
        _string(block.get("text"), f"{where}.text")
        return {"type": "text", "text": block["text"]} if set(block) <= _TEXT_KEYS else block
    if kind == "image":
        source = block.get("source")
        if not isinstance(source, dict) or not isinstance(source.get("type"), str):
            raise _fail(f"{where}.source", "an object with a 'type'")
        if (
            set(block) <= _IMAGE_KEYS
            and source["type"] == "base64"
            and set(source)
            == {
                "type",
                "media_type",
                "data",
            }
        ):
            media = _string(source["media_type"], f"{where}.source.media_type")
            data = _string(source["data"], f"{where}.source.data")
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
        if set(block) <= _IMAGE_KEYS and source["type"] == "url" and set(source) == {"type", "url"}:
            url = _string(source["url"], f"{where}.source.url")
            return {"type": "image_url", "image_url": {"url": url}}
    return block


def _content(parts: list[dict[str, Any]]) -> tuple[str, tuple[dict[str, Any], ...]]:
    """Parts -> (the text parts joined by newlines, the parts when one is not plain text)."""
    text = "\n".join(p["text"] for p in parts if p["type"] == "text" and "text" in p)
    plain = all(set(p) <= _TEXT_KEYS and p["type"] == "text" for p in parts)
    return text, (() if plain else tuple(parts))


def _blocks(value: Any, where: str) -> list[dict[str, Any]]:
    """``content``: a string (one text block) or a non-empty list of blocks."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if not isinstance(value, list) or not value:
        raise _fail(where, "a string or a non-empty list of content blocks")
    return [_block(b, f"{where}[{j}]") for j, b in enumerate(value)]


def _tool_result(block: dict[str, Any], where: str) -> Message:
    """A ``tool_result`` block -> a ``tool`` turn answering ``tool_use_id``: its text, its parts
    when one is not text; carried whole (one part, Anthropic's spelling) when it says more than
    Chat Completions can (``is_error``, ``cache_control``)."""
    call_id = _string(block.get("tool_use_id"), f"{where}.tool_use_id")
    raw = block.get("content")
    parts: tuple[Mapping[str, Any], ...]
    if raw is None or raw == "":
        text, parts = "", ()
    elif isinstance(raw, str):
        text, parts = raw, ()
    else:
        items = _blocks(raw, f"{where}.content")
        text, parts = _content([_part(b, f"{where}.content[{j}]") for j, b in enumerate(items)])
    error = block.get("is_error")
    if error is not None and not isinstance(error, bool):
        raise _fail(f"{where}.is_error", "true or false")
    if error or set(block) - {"type", "tool_use_id", "content", "is_error"}:
        parts = (block,)
    return Message("tool", text, tool_call_id=call_id, parts=parts)


def _tool_use(block: dict[str, Any], where: str) -> ToolCall:
    call_id = _string(block.get("id"), f"{where}.id")
    name = _string(block.get("name"), f"{where}.name")
    args = block.get("input")
    if not isinstance(args, dict):
        raise _fail(f"{where}.input", "an object")
    return ToolCall(name, json.dumps(args, ensure_ascii=False), call_id, "function")


def _turn(item: Any, i: int) -> list[Message]:
    """One Anthropic message -> its internal turns: an assistant turn (text, thinking and other
    blocks as parts, ``tool_use`` as calls), or for a user turn its blocks in order: each
    ``tool_result`` a ``tool`` turn, the other blocks between them user turns."""
    where = f"messages.{i}"
    if not isinstance(item, dict):
        raise _fail(where, "an object with 'role' and 'content'")
    role = item.get("role")
    if role not in _ROLES:
        raise _fail(f"{where}.role", "one of user, assistant")
    blocks = _blocks(item.get("content"), f"{where}.content")
    if role == "assistant":
        calls: list[ToolCall] = []
        parts: list[dict[str, Any]] = []
        for j, block in enumerate(blocks):
            if block["type"] == "tool_use":
                calls.append(_tool_use(block, f"{where}.content.{j}"))
            elif block["type"] == "tool_result":
                raise _fail(f"{where}.content.{j}", "in a user turn (tool_result)")
            else:
                parts.append(_part(block, f"{where}.content.{j}"))
        text, kept = _content(parts)
        if not calls and not kept and not text.strip():
            raise _fail(f"{where}.content", "non-empty")
        return [Message("assistant", text, tool_calls=tuple(calls), parts=kept)]
    turns: list[Message] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if pending:
            text, kept = _content(pending)
            if not kept and not text.strip():
                raise _fail(f"{where}.content", "non-empty")
            turns.append(Message("user", text, parts=kept))
            pending.clear()

    for j, block in enumerate(blocks):
        if block["type"] == "tool_result":
            flush()
            turns.append(_tool_result(block, f"{where}.content.{j}"))
        elif block["type"] == "tool_use":
            raise _fail(f"{where}.content.{j}", "in an assistant turn (tool_use)")
        else:
            pending.append(_part(block, f"{where}.content.{j}"))
    flush()
    return turns


def _system(value: Any) -> Message | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None  # Anthropic takes an empty system prompt: none at all
        return Message("system", value)
    if not isinstance(value, list):
        raise _fail("system", "a string or a list of text blocks")
    parts = []
    for j, block in enumerate(value):
        block = _block(block, f"system.{j}")
        if block["type"] != "text":
            raise _fail(f"system.{j}.type", "text")
        parts.append(_part(block, f"system.{j}"))
    if not parts:
        return None
    text, kept = _content(parts)
    return Message("system", text, parts=kept)


# ---------------------------------------------------------------- tools
def _tools(value: Any) -> list[dict[str, Any]]:
    """Custom tools -> Chat Completions function tools; a server tool (another ``type``) or a
    tool carrying more (``cache_control``...) is carried as it is."""
    if not isinstance(value, list):
        raise _fail("tools", "a list of tools")
    out: list[dict[str, Any]] = []
    for j, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise _fail(f"tools.{j}", "an object")
        kind = tool.get("type", "custom")
        if kind is not None and not isinstance(kind, str):
            raise _fail(f"tools.{j}.type", "a string")
        if kind not in (None, "custom"):
            _string(tool.get("name"), f"tools.{j}.name")
            out.append(tool)
            continue
        name = _string(tool.get("name"), f"tools.{j}.name")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _fail(f"tools.{j}.input_schema", "an object (a JSON schema)")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise _fail(f"tools.{j}.description", "a string")
        if set(tool) - _TOOL_KEYS:
            out.append(tool)
            continue
        function: dict[str, Any] = {"name": name}
        if description is not None:
            function["description"] = description
        function["parameters"] = schema
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(value: Any) -> tuple[Any, bool]:
    """``tool_choice`` -> (Chat Completions' tool_choice, whether parallel calls are off)."""
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _fail("tool_choice", "an object with a 'type': auto, any, tool or none")
    kind = value["type"]
    off = value.get("disable_parallel_tool_use")
    if off is not None and not isinstance(off, bool):
        raise _fail("tool_choice.disable_parallel_tool_use", "true or false")
    simple = {"auto": "auto", "any": "required", "none": "none"}
    if kind in simple:
        return simple[kind], bool(off)
    if kind == "tool":
        name = _string(value.get("name"), "tool_choice.name")
        return {"type": "function", "function": {"name": name}}, bool(off)
    raise _fail("tool_choice.type", "one of auto, any, tool, none")


# ---------------------------------------------------------------- the request
def _strings(body: Mapping[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(name, "a list of strings")
    return value


#: Type checks of documented fields this module does not translate (keyed under their names).
_CHECKS: dict[str, Callable[[Any], bool]] = {
    "thinking": lambda v: isinstance(v, dict) and isinstance(v.get("type"), str),
    "service_tier": lambda v: isinstance(v, str),
    "metadata": lambda v: isinstance(v, dict),
    "stream": lambda v: isinstance(v, bool),
}
_WHAT = {
    "thinking": "an object with a 'type' (enabled, disabled, adaptive)",
    "service_tier": "a string",
    "metadata": "an object",
    "stream": "true or false",
}


def parse_request(
    body: dict[str, Any],
    settings: Settings,
    tenant: str,
    *,
    big: bool = False,
    counting: bool = False,
) -> MessagesRequest:
    """Anthropic's request shape -> a MessagesRequest. Raises BadRequest naming the field.
    ``big``: the body is over PROMPTCACHE_MAX_BODY_BYTES (forwarded uncached). ``counting``:
    a ``count_tokens`` request, which has no ``max_tokens``."""
    for name, ok in _CHECKS.items():
        if body.get(name) is not None and not ok(body[name]):
            raise _fail(name, _WHAT[name])
    if body.get("max_tokens") is None and not counting:
        raise BadRequest("max_tokens: Field required")
    max_tokens = _integer(body, "max_tokens", 1, 1_000_000)
    if "messages" not in body:
        raise BadRequest("messages: Field required")
    raw = body["messages"]
    if not isinstance(raw, list) or not raw:
        raise _fail("messages", "a non-empty list of {role, content} objects")
    turns = [t for i, item in enumerate(raw) for t in _turn(item, i)]
    system = _system(body.get("system"))
    messages = ((system,) if system else ()) + tuple(turns)

    model = body.get("model", settings.model)
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise _fail("model", "a non-empty string of at most 200 characters")

    options: dict[str, Any] = {}
    stop = _strings(body, "stop_sequences")
    if stop is not None:
        options["stop"] = stop
    _number(body, "top_p", 0, 1)  # keyed under its name, as top_k and thinking are
    if body.get("top_k") is not None:
        _integer(body, "top_k", 0, 1_000_000)
    if body.get("tools") is not None:
        options["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        choice, serial = _tool_choice(body["tool_choice"])
        options["tool_choice"] = choice
        if serial:
            options["parallel_tool_calls"] = False
    options |= {k: v for k, v in body.items() if k not in _OWN and k not in UNKEYED}
    options = {k: v for k, v in options.items() if v is not None}

    # fields that only identify or bill (``UNKEYED``), sent as they came; metadata's user is
    # Anthropic's spelling of ``user``
    forward = {k: body[k] for k in UNKEYED if body.get(k) is not None and k != "metadata"}
    metadata = dict(body.get("metadata") or {})
    user = metadata.pop("user_id", None)
    if user is not None:
        forward["user"] = _string(user, "metadata.user_id")
    if metadata:
        forward["metadata"] = metadata

    try:
        extra = cache_fields(body.get("promptcache"))
    except Unprocessable as exc:  # Anthropic answers 400 for a field of the wrong value
        raise BadRequest(exc.message, param=exc.param) from None
    chat = ChatRequest(
        messages=messages,
        model=model.strip(),
        tenant=tenant,
        threshold=extra.threshold,
        ttl=extra.ttl,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 1.0),
        cache=extra.mode,
        options=options,
        forward=forward,
        end_user=end_user(forward, settings),
        bypass="oversize" if big or oversize(messages, settings) else None,
        semantic=extra.semantic_for(settings),
    )
    return MessagesRequest(chat=chat, stream=body.get("stream") is True)
