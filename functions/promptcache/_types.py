"""Typed, frozen values that cross the core's boundaries."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


class CacheMode(enum.StrEnum):
    """What a request wants from the cache."""

    USE = "use"  # answer from the cache when possible, store misses
    SKIP = "skip"  # neither read nor write the cache
    REFRESH = "refresh"  # do not read, call the model and overwrite the cache


class Tier(enum.StrEnum):
    EXACT = "exact"
    SEMANTIC = "semantic"
    MISS = "miss"
    BYPASS = "bypass"


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request. ``messages`` ends with the user turn to answer."""

    messages: tuple[Message, ...]
    model: str
    tenant: str = "default"
    threshold: float | None = None
    ttl: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    cache: CacheMode = CacheMode.USE

    @property
    def prompt(self) -> str:
        """The last user turn: the text the semantic tier compares."""
        return self.messages[-1].content

    @property
    def context(self) -> tuple[Message, ...]:
        """System prompt and earlier turns: part of the namespace, never compared loosely."""
        return self.messages[:-1]


@dataclass(frozen=True, slots=True)
class Completion:
    """What an LLM returned."""

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored answer. ``prompt`` is the canonical last user turn it answers."""

    id: str
    namespace: str
    exact_key: str
    prompt: str
    response: str
    model: str
    usage: Usage
    created_at: float
    expires_at: float | None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "namespace": self.namespace,
            "exact_key": self.exact_key,
            "prompt": self.prompt,
            "response": self.response,
            "model": self.model,
            "usage": [self.usage.prompt_tokens, self.usage.completion_tokens],
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        usage = data.get("usage") or [0, 0]
        return cls(
            id=str(data["id"]),
            namespace=str(data["namespace"]),
            exact_key=str(data["exact_key"]),
            prompt=str(data["prompt"]),
            response=str(data["response"]),
            model=str(data["model"]),
            usage=Usage(int(usage[0]), int(usage[1])),
            created_at=float(data["created_at"]),
            expires_at=None if data.get("expires_at") is None else float(data["expires_at"]),
        )


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record of a namespace's append-only vector log. ``vector is None`` = tombstone."""

    entry_id: str
    vector: Vector | None
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a reader is in a namespace's vector log. A new ``generation`` means: reload."""

    generation: str
    offset: int


@dataclass(frozen=True, slots=True)
class SyncResult:
    """The answer to one store round trip: the exact-key lookup plus the log's new records."""

    exact: Entry | None
    records: tuple[LogRecord, ...]
    cursor: Cursor
    reset: bool  # True: records start from the log's beginning (new generation or first load)


@dataclass(frozen=True, slots=True)
class CacheHit:
    entry: Entry
    tier: Tier
    similarity: float


@dataclass(frozen=True, slots=True)
class ChatResult:
    """The answer to one chat request.

    - ``response``: the answer's text (stored, or the model's).
    - ``tier``: ``exact`` or ``semantic`` (a stored answer), ``miss`` (the model answered and the
      answer is now stored), ``bypass`` (the model answered, the cache was not used or could not
      store: ``bypass_reason`` says why, e.g. ``cache=skip`` or ``store_error: ...``).
    - ``model``: the model that produced the answer (a stored answer's, on a hit).
    - ``usage``: what this request cost upstream (zero on a hit).
    - ``latency_ms``: time spent answering, in the cache and the model.
    - ``similarity``: the stored prompt's cosine similarity to this one on a hit (1.0 for an
      exact hit), else None.
    - ``entry_id``: the stored entry that answered (a hit) or now holds the answer (a miss).
    - ``finish_reason``: the model's, on a miss or bypass; a stored answer is a finished one.
    - ``timings``: milliseconds spent in each part of the answer that ran: ``lookup`` (store
      and index, without the rest), ``embed``, ``verify`` (the guards), ``model``.
    - ``saved_tokens``: on a hit, the tokens the stored answer cost when it was made.
    """

    response: str
    tier: Tier
    model: str
    usage: Usage
    latency_ms: float
    similarity: float | None = None
    entry_id: str | None = None
    bypass_reason: str | None = None
    finish_reason: str = "stop"
    timings: Mapping[str, float] = field(default_factory=dict)
    saved_tokens: int = 0

    @property
    def cached(self) -> bool:
        return self.tier in (Tier.EXACT, Tier.SEMANTIC)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "response": self.response,
            "cached": self.cached,
            "tier": self.tier.value,
            "similarity": None if self.similarity is None else round(self.similarity, 6),
            "model": self.model,
            "entry_id": self.entry_id,
            "latency_ms": round(self.latency_ms, 3),
            "usage": self.usage.as_dict(),
        }
        if self.bypass_reason:
            body["bypass_reason"] = self.bypass_reason
        return body


@dataclass(frozen=True, slots=True)
class DependencyStatus:
    name: str
    ok: bool
    latency_ms: float
    detail: str = ""
    required: bool = True
