"""OpenAI's Responses input items -> the cache's turns, in Chat Completions spelling (the
items ``responses_request`` reads; docs/openai-responses.md lists them), and the face's 400.

- ``message`` items: a turn, its parts spelled as Chat Completions spells them (``text``,
  ``image_url``, ``file``, ``input_audio``); a part with no such spelling is carried as it is.
- ``function_call`` items: the tool calls of an assistant turn (with the assistant message and
  ``reasoning`` items next to them); ``function_call_output`` items: ``tool`` turns.
- ``reasoning`` items: carried as they are, as parts of the assistant turn they belong to.
- Anything else (item references, the built-in tools' items): a 400 naming the item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import BadRequest, PromptCacheError
from .._types import Message, ToolCall

_INPUT_ROLES = ("user", "system", "developer", "assistant")


class InvalidRequest(BadRequest):
    """A 400 in OpenAI's words: ``param`` (second, as most call sites name it) the field at
    fault; ``code`` is OpenAI's when it has one."""

    def __init__(self, message: str, param: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message, code=code, param=param)


def invalid(exc: PromptCacheError, param: str | None = None) -> InvalidRequest:
    """A shared validator's 422 (``Unprocessable``) as the 400 OpenAI answers."""
    return InvalidRequest(exc.message, param)


# ---------------------------------------------------------------- content parts
def text_field(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"'{param}' must be a string", param)
    return value


def _part(part: Any, param: str) -> dict[str, Any]:
    """One Responses content part in Chat Completions spelling (carried as it is when there is
    none)."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise InvalidRequest(f"'{param}' must be a content part object with a 'type'", param)
    kind = part["type"]
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": text_field(part.get("text"), f"{param}.text")}
    if kind == "refusal":
        return {"type": "text", "text": text_field(part.get("refusal"), f"{param}.refusal")}
    if kind == "input_image" and part.get("image_url") is not None:
        image = {"url": text_field(part["image_url"], f"{param}.image_url")}
        if part.get("detail") is not None:
            image["detail"] = text_field(part["detail"], f"{param}.detail")
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and part.get("file_url") is None:
        spelled = {k: part[k] for k in ("file_id", "file_data", "filename") if k in part}
        if "file_id" not in spelled and "file_data" not in spelled:
            raise InvalidRequest(f"'{param}' needs a file_id, file_data or file_url", param)
        return {"type": "file", "file": spelled}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    return dict(part)


def _content(value: Any, param: str) -> tuple[str, tuple[Mapping[str, Any], ...]]:
    """A message's content -> (its text, its parts when one is not text, else ())."""
    if isinstance(value, str):
        return value, ()
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            f"'{param}' must be a string or a non-empty list of content parts", param
        )
    parts = [_part(p, f"{param}[{j}]") for j, p in enumerate(value)]
    text = "\n".join(p["text"] for p in parts if p["type"] == "text")
    return text, (() if all(p["type"] == "text" for p in parts) else tuple(parts))


# ---------------------------------------------------------------- input items
class _Turns:
    """Input items -> turns. An assistant's message, reasoning and function calls that follow
    each other are one assistant turn (as Chat Completions holds text and calls together)."""

    def __init__(self) -> None:
        self.turns: list[Message] = []
        self._open = False  # the last turn is an assistant turn items may still join

    def _assistant(self) -> Message | None:
        return self.turns[-1] if self._open else None

    def add(self, item: Any, param: str) -> None:
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{param}' must be an input item object", param)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            self._message(item, param)
        elif kind == "function_call":
            call = ToolCall(
                text_field(item.get("name"), f"{param}.name"),
                text_field(item.get("arguments"), f"{param}.arguments"),
                text_field(item.get("call_id"), f"{param}.call_id"),
            )
            open_ = self._assistant()
            if open_ is None:
                self._push(Message("assistant", "", tool_calls=(call,)), keep_open=True)
            else:
                self.turns[-1] = _with(open_, tool_calls=(*open_.tool_calls, call))
        elif kind == "function_call_output":
            call_id = text_field(item.get("call_id"), f"{param}.call_id")
            output = item.get("output")
            text, parts = _content(output, f"{param}.output")
            self._push(Message("tool", text, tool_call_id=call_id, parts=parts))
        elif kind == "reasoning":
            open_ = self._assistant()
            if open_ is None:
                self._push(Message("assistant", "", parts=(dict(item),)), keep_open=True)
            else:  # after the turn's text: the text becomes a part, so that none is lost
                lead = () if open_.parts or not open_.content else (_text_part(open_.content),)
                self.turns[-1] = _with(open_, parts=(*open_.parts, *lead, dict(item)))
        elif kind == "item_reference":
            raise InvalidRequest(
                "item references name items kept by OpenAI; this cache keeps its own "
                "responses: send the items themselves, or previous_response_id",
                f"{param}.type",
            )
        else:
            raise InvalidRequest(
                f"input items of type {kind!r} are not supported here: the cache answers "
                "message, function_call, function_call_output and reasoning items (the "
                "built-in tools' items need a tool the cache cannot run)",
                f"{param}.type",
            )

    def _message(self, item: dict[str, Any], param: str) -> None:
        role = item.get("role")
        if role not in _INPUT_ROLES:
            raise InvalidRequest(f"'{param}.role' must be one of {', '.join(_INPUT_ROLES)}", param)
        text, parts = _content(item.get("content"), f"{param}.content")
        open_ = self._assistant()
        if role == "assistant" and open_ is not None and not open_.content and not open_.tool_calls:
            # an assistant message after its reasoning: one turn
            joined = (*open_.parts, *(parts or (_text_part(text),)))
            self.turns[-1] = _with(open_, content=text, parts=joined)
            return
        turn = Message("system" if role == "developer" else str(role), text, parts=parts)
        self._push(turn, keep_open=role == "assistant")

    def _push(self, turn: Message, *, keep_open: bool = False) -> None:
        self.turns.append(turn)
        self._open = keep_open


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _with(turn: Message, **changes: Any) -> Message:
    values = {
        "content": turn.content,
        "tool_calls": turn.tool_calls,
        "parts": turn.parts,
        **changes,
    }
    return Message(
        turn.role, values["content"], tool_calls=values["tool_calls"], parts=values["parts"]
    )


def parse_input(value: Any) -> tuple[Message, ...]:
    """``input``: a string (one user turn) or a list of items."""
    if isinstance(value, str):
        if not value.strip():
            raise InvalidRequest("'input' must not be empty", "input")
        return (Message("user", value),)
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a string or a non-empty list of items", "input")
    turns = _Turns()
    for i, item in enumerate(value):
        turns.add(item, f"input[{i}]")
    return tuple(turns.turns)
