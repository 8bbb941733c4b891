"""The cache's answer as OpenAI's Response object, and as the Responses event stream.

Output items, in order: the answer's reasoning blocks (``reasoning`` items, as the upstream sent
them), its text (one ``message`` item holding one ``output_text`` part; present unless the answer
is tool calls alone), then one ``function_call`` item per call (the model's call id on a miss, a
fresh one on a replay: a stored call has none). A finish by length is ``status: incomplete`` with
``incomplete_details.reason: max_output_tokens``.

Streamed (``ResponseEvents``): ``response.created``, ``response.in_progress``, then per item
``response.output_item.added`` ... ``response.output_item.done`` (text as ``output_text.delta``
events inside ``content_part.added`` / ``.done``; a call's arguments as
``function_call_arguments.delta`` pieces and ``.done``), then ``response.completed`` (or
``response.incomplete``) with the whole object. Every event carries its ``sequence_number``. A
failure after the 200 is an ``error`` event, which ends the stream.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .._errors import PromptCacheError
from .._stream import ChatStream
from .._types import ChatResult, ToolCall
from .sse import named_event

log = logging.getLogger("promptcache")

#: A finish reason that leaves the response incomplete -> OpenAI's ``incomplete_details.reason``.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage(result: ChatResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    used = result.usage
    return {
        "input_tokens": used.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": used.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": used.total_tokens,
    }


def reasoning_item(block: Mapping[str, Any]) -> dict[str, Any]:
    """A reasoning block as a ``reasoning`` output item: one that is already such an item as it
    is; another dialect's (Claude's ``thinking``, ``redacted_thinking``) carried in one, its text
    as reasoning text and its signature or data as the encrypted content, never dropped."""
    if block.get("type") == "reasoning":
        return {"id": new_id("rs"), "summary": [], **block}
    item: dict[str, Any] = {"type": "reasoning", "id": new_id("rs"), "summary": []}
    if isinstance(block.get("thinking"), str):
        item["content"] = [{"type": "reasoning_text", "text": block["thinking"]}]
    sealed = block.get("signature") or block.get("data")
    if isinstance(sealed, str):
        item["encrypted_content"] = sealed
    return item


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    content = [] if text is None else [text_part(text)]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def call_item(item_id: str, call: ToolCall, arguments: str | None = None) -> dict[str, Any]:
    """A call as a ``function_call`` item (``arguments`` given: in progress with those)."""
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id or new_id("call"),
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
        "status": "completed" if arguments is None else "in_progress",
    }


def output_items(result: ChatResult) -> list[dict[str, Any]]:
    """The answer's output items (module docstring)."""
    items = [reasoning_item(block) for block in result.thinking]
    if result.response or not result.tool_calls:
        items.append(message_item(new_id("msg"), result.response))
    items += [call_item(new_id("fc"), call) for call in result.tool_calls]
    return items


def response_object(
    echo: Mapping[str, Any],
    *,
    response_id: str,
    created_at: int,
    model: str,
    output: list[dict[str, Any]],
    result: ChatResult | None,
    store: bool,
) -> dict[str, Any]:
    """OpenAI's Response object: ``result`` None while in progress."""
    status, details = "in_progress", None
    if result is not None:
        reason = _INCOMPLETE.get(result.finish_reason)
        status = "incomplete" if reason else "completed"
        details = {"reason": reason} if reason else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": details,
        **echo,
        "model": model,
        "output": output,
        "store": store,
        "usage": usage(result),
    }


class ResponseEvents:
    """One streamed answer as Responses events (module docstring). ``finish(obj, result)`` is
    called with the final Response object before ``response.completed`` goes out (the face
    keeps it there) and returns whether it was kept (the object's ``store``)."""

    def __init__(
        self,
        stream: ChatStream,
        echo: Mapping[str, Any],
        *,
        response_id: str,
        created_at: int,
        store: bool,
        finish: Callable[[dict[str, Any], ChatResult], bool],
        errors_as_events: bool,
    ) -> None:
        self.stream = stream
        self.echo = echo
        self.response_id = response_id
        self.created_at = created_at
        self.store = store
        self.finish = finish
        self.errors_as_events = errors_as_events
        self._seq = itertools.count()
        self.output: list[dict[str, Any]] = []

    def _event(self, kind: str, **payload: Any) -> bytes:
        return named_event(kind, {"type": kind, "sequence_number": next(self._seq), **payload})

    def _object(self, result: ChatResult | None, store: bool | None = None) -> dict[str, Any]:
        return response_object(
            self.echo,
            response_id=self.response_id,
            created_at=self.created_at,
            model=self.stream.model if result is None else result.model,
            output=list(self.output) if result is not None else [],
            result=result,
            store=self.store if store is None else store,
        )

    def _whole(self, item: dict[str, Any]) -> Iterator[bytes]:
        """An item known whole (a reasoning item): added, then done."""
        index = len(self.output)
        self.output.append(item)
        yield self._event("response.output_item.added", output_index=index, item=item)
        yield self._event("response.output_item.done", output_index=index, item=item)

    def _call(self, call: ToolCall, size: int = 64) -> Iterator[bytes]:
        index, item_id = len(self.output), new_id("fc")
        done = call_item(item_id, call)
        self.output.append(done)
        started = {**done, "arguments": "", "status": "in_progress"}
        yield self._event("response.output_item.added", output_index=index, item=started)
        for at in range(0, len(call.arguments), size):
            piece = call.arguments[at : at + size]
            yield self._event(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=index,
                delta=piece,
            )
        yield self._event(
            "response.function_call_arguments.done",
            item_id=item_id,
            output_index=index,
            name=call.name,
            arguments=call.arguments,
        )
        yield self._event("response.output_item.done", output_index=index, item=done)

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._events()
        except PromptCacheError as exc:
            if not self.errors_as_events:
                raise
            log.warning("stream failed: %s: %s", exc.code, exc.message)
            yield self._event("error", code=exc.code, message=exc.message, param=None)
        except Exception:
            if not self.errors_as_events:
                raise
            log.exception("stream failed")
            yield self._event("error", code="internal_error", message="internal error", param=None)
        finally:
            self.stream.close()

    def _events(self) -> Iterator[bytes]:
        started = self._object(None)
        yield self._event("response.created", response=started)
        yield self._event("response.in_progress", response=started)
        known = self.stream.result  # a replay knows its reasoning before its text
        if known is not None:
            for block in known.thinking:
                yield from self._whole(reasoning_item(block))
        message_id, index, text = new_id("msg"), -1, []
        for delta in self.stream:
            if index < 0:
                index = len(self.output)
                yield from self._open_message(message_id, index)
            text.append(delta)
            yield self._event(
                "response.output_text.delta",
                item_id=message_id,
                output_index=index,
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        result = self.stream.result
        if result is None:
            raise PromptCacheError("the stream ended without an answer")
        if index < 0 and not result.tool_calls:  # an empty answer is an empty message
            index = len(self.output)
            yield from self._open_message(message_id, index)
        if index >= 0:
            yield from self._close_message(message_id, index, "".join(text))
        for call in result.tool_calls:
            yield from self._call(call)
        if known is None:
            for block in result.thinking:
                yield from self._whole(reasoning_item(block))
        final = self._object(result)
        final["store"] = self.finish(final, result)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        yield self._event(kind, response=final)

    def _open_message(self, item_id: str, index: int) -> Iterator[bytes]:
        self.output.append(message_item(item_id, None, "in_progress"))
        yield self._event("response.output_item.added", output_index=index, item=self.output[index])
        yield self._event(
            "response.content_part.added",
            item_id=item_id,
            output_index=index,
            content_index=0,
            part=text_part(""),
        )

    def _close_message(self, item_id: str, index: int, text: str) -> Iterator[bytes]:
        yield self._event(
            "response.output_text.done",
            item_id=item_id,
            output_index=index,
            content_index=0,
            text=text,
            logprobs=[],
        )
        yield self._event(
            "response.content_part.done",
            item_id=item_id,
            output_index=index,
            content_index=0,
            part=text_part(text),
        )
        self.output[index] = message_item(item_id, text)
        yield self._event("response.output_item.done", output_index=index, item=self.output[index])
