"""Normalization, namespaces and exact keys: pure functions."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

from ._types import ChatRequest

_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Unicode NFKC, whitespace collapsed, trimmed, case-folded.

    Case folding is safe for matching questions (a cache keyed on "What is X?" should answer
    "what is x?"); the stored answer itself is never altered.
    """
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def _digest(payload: object) -> str:
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def namespace(request: ChatRequest, embedder_id: str, dim: int) -> str:
    """Entries only ever match within one namespace.

    It holds the tenant, the model, the embedder and its dimension, the generation parameters
    that change answers (temperature, max_tokens) and the conversation context (system prompt and
    earlier turns, normalized): a follow-up question never matches one asked in another context.
    """
    context = [[m.role, normalize(m.content)] for m in request.context]
    params = {
        "temperature": None if request.temperature is None else round(request.temperature, 2),
        "max_tokens": request.max_tokens,
    }
    digest = _digest({"model": request.model, "params": params, "context": context})[:24]
    return f"{request.tenant}:{embedder_id}:{dim}:{digest}"


def tenant_of(namespace_: str) -> str:
    """The tenant a namespace belongs to (tenants may contain ':'; the other parts do not)."""
    return namespace_.rsplit(":", 3)[0]


def exact_key(namespace_: str, prompt: str) -> str:
    """The exact tier's key of a raw prompt in a namespace."""
    return text_key(namespace_, normalize(prompt))


def text_key(namespace_: str, text: str) -> str:
    """``exact_key`` of a prompt already normalized (``text == normalize(text)``)."""
    return _digest([namespace_, text])
