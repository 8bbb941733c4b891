"""The chat body both generation APIs take (OpenAI's chat completions and Workers AI's text
generation accept the same ``messages``, ``max_tokens``, ``temperature`` and ``stream``)."""

from __future__ import annotations

from typing import Any

from .._types import ChatRequest


def chat_body(request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
    """The request's conversation and the generation parameters it sets (unset ones are left to
    the model's defaults)."""
    body: dict[str, Any] = {"messages": [m.as_dict() for m in request.messages]}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if stream:
        body["stream"] = True
    return body
