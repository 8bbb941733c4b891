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
class ToolCall:
    """A function call an assistant turn asks for. ``arguments`` is the JSON text the model wrote
    (kept as written). ``id`` is opaque: a replayed answer gets fresh ids, and keys name calls by
    position (``_keys``), never by id."""

    name: str
    arguments: str
    id: str = ""
    type: str = "function"

    def anonymous(self) -> ToolCall:
        """The call as stored: without its id."""
        return ToolCall(self.name, self.arguments, "", self.type)

    def as_wire(self, call_id: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id if call_id is None else call_id,
            "type": self.type,
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. ``content`` is its text (text parts joined by newlines; empty for an assistant
    turn holding only tool calls). The rest is set only where the turn carries it:

    - ``tool_calls``: an assistant turn's calls; ``tool_call_id``: the call a ``tool`` turn
      answers; ``name``: a participant's or a legacy ``function`` turn's name.
    - ``parts``: the content parts as sent, when one of them is not text (an image, audio, a
      file): forwarded as they are, keyed by a hash of each part (exact tier only).
    """

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    parts: tuple[Mapping[str, Any], ...] = ()

    @property
    def plain(self) -> bool:
        """A text turn and nothing else: keyed exactly as before tools were supported."""
        return not (self.tool_calls or self.tool_call_id is not None or self.name or self.parts)

    def as_dict(self) -> dict[str, Any]:
        """The turn in the chat completions wire shape."""
        out: dict[str, Any] = {"role": self.role}
        if self.parts:
            out["content"] = [dict(p) for p in self.parts]
        elif self.tool_calls and not self.content:
            out["content"] = None
        else:
            out["content"] = self.content
        if self.tool_calls:
            out["tool_calls"] = [c.as_wire() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name:
            out["name"] = self.name
        return out


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


#: Why an answer was forwarded and not stored when the request itself decided it (the closed
#: list a ``ChatRequest.bypass`` is one of; a failed store adds ``store_error: ...`` and the
#: like, and ``cache=skip`` is the caller's own choice). Each is a header value
#: (``x-promptcache-bypass``) and a label in the stats and ``/metrics``.
BYPASS_REASONS: dict[str, str] = {
    "logprobs": "log probabilities were asked for; a stored answer has none to replay",
    "audio": "audio output was asked for; the cache stores text and tool calls only",
    "n": "several choices were asked for (n > 1); one stored answer is one sample",
    "oversize": "the request is over the cache's limits (messages, characters or body)",
}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request. ``messages`` ends with the turn to answer (a user turn, or for
    an agent loop a tool result).

    - ``options``: every other field that can change the answer, in the chat completions wire
      spelling (tools, tool_choice, response_format, stop, top_p, seed, penalties, unknown
      fields...): forwarded and part of the namespace (only when set: a request without any is
      keyed as before they existed).
    - ``forward``: fields that only identify or bill (``_keys.UNKEYED``): forwarded, not keyed.
    - ``bypass``: one of ``BYPASS_REASONS``: the answer is forwarded and not stored.
    - ``semantic``: whether a tool- or schema-bound request may use the semantic tier (an
      operator's setting, narrowed by the request's own option); text requests ignore it.
    - ``end_user``: who the answer is for, where the operator keys on the end user
      (PROMPTCACHE_KEY_USER): the identifying fields (``user``, ``safety_identifier``) as sent.
      Part of the namespace when set, never sent (``forward`` still carries those fields).
    """

    messages: tuple[Message, ...]
    model: str
    tenant: str = "default"
    threshold: float | None = None
    ttl: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    cache: CacheMode = CacheMode.USE
    options: Mapping[str, Any] = field(default_factory=dict)
    forward: Mapping[str, Any] = field(default_factory=dict)
    bypass: str | None = None
    semantic: bool = False
    end_user: Mapping[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The last turn's text: what the semantic tier compares."""
        return self.messages[-1].content

    @property
    def kind(self) -> str:
        """``tools`` (tools or functions offered), ``structured`` (a JSON response format) or
        ``text``: what the stats count requests by."""
        if self.options.get("tools") or self.options.get("functions"):
            return "tools"
        return "structured" if self.bound else "text"

    @property
    def bound(self) -> bool:
        """Tool- or schema-bound: the answer is an action or a record, not prose."""
        fmt = self.options.get("response_format")
        schema = isinstance(fmt, Mapping) and fmt.get("type") not in (None, "text")
        return bool(self.options.get("tools") or self.options.get("functions") or schema)

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
    tool_calls: tuple[ToolCall, ...] = ()
    #: the other choices, when the model was asked for several (``n``): never stored
    alternatives: tuple[Completion, ...] = ()
    #: the model's reasoning blocks, opaque (``Entry.thinking``)
    thinking: tuple[Mapping[str, Any], ...] = ()
    #: the stop sequence that ended the answer, when the upstream says which (Claude does)
    stop_sequence: str | None = None


#: The stored answer's format: 1 (no ``format`` field) held the text alone, finished by
#: ``stop``; 2 adds the tool calls (name and arguments, by position: ids are never stored) and
#: the finish reason; 3 adds the model's reasoning blocks (``thinking``) and the stop sequence
#: that ended the answer (``stop_sequence``), each written only when the answer has one. Entries
#: of every format are read.
ANSWER_FORMAT = 3


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored answer. ``prompt`` is the canonical last turn it answers; ``response`` the
    answer's text, ``tool_calls`` its calls (without ids), ``finish_reason`` how it ended.

    ``thinking``: the reasoning blocks the model returned before its answer, opaque and exactly as
    the upstream sent them (Claude's ``thinking`` blocks with their signatures, and
    ``redacted_thinking``): stored and replayed as they are, never rewritten, never dropped.
    ``stop_sequence``: which of the request's stop sequences ended the answer, when the upstream
    said (Claude does; an OpenAI-compatible server does not)."""

    id: str
    namespace: str
    exact_key: str
    prompt: str
    response: str
    model: str
    usage: Usage
    created_at: float
    expires_at: float | None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    thinking: tuple[Mapping[str, Any], ...] = ()
    stop_sequence: str | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "namespace": self.namespace,
            "exact_key": self.exact_key,
            "prompt": self.prompt,
            "response": self.response,
            "model": self.model,
            "usage": [self.usage.prompt_tokens, self.usage.completion_tokens],
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "format": ANSWER_FORMAT,
            "tool_calls": [[c.name, c.arguments, c.type] for c in self.tool_calls],
            "finish_reason": self.finish_reason,
        }
        if self.thinking:
            data["thinking"] = [dict(block) for block in self.thinking]
        if self.stop_sequence is not None:
            data["stop_sequence"] = self.stop_sequence
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        usage = data.get("usage") or [0, 0]
        calls = tuple(
            ToolCall(str(c[0]), str(c[1]), "", str(c[2]) if len(c) > 2 else "function")
            for c in data.get("tool_calls") or ()
        )
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
            tool_calls=calls,
            finish_reason=str(data.get("finish_reason") or "stop"),
            thinking=tuple(b for b in data.get("thinking") or () if isinstance(b, dict)),
            stop_sequence=(
                data["stop_sequence"] if isinstance(data.get("stop_sequence"), str) else None
            ),
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
    - ``tool_calls``: the calls the answer asks for (a stored answer's carry no ids: the face
      gives each replay fresh ones).
    - ``alternatives``: the model's other choices when it was asked for several (a bypass).
    - ``thinking``: the model's reasoning blocks before the answer (``Entry.thinking``).
    - ``stop_sequence``: the stop sequence that ended it, when known (``Entry.stop_sequence``).
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
    tool_calls: tuple[ToolCall, ...] = ()
    alternatives: tuple[Completion, ...] = ()
    thinking: tuple[Mapping[str, Any], ...] = ()
    stop_sequence: str | None = None

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
