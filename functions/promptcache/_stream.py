"""A streamed answer: what the cache decided, known before the first byte, then the text deltas."""

from __future__ import annotations

import contextlib
import re
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping

from ._types import ChatResult, Completion, Tier, Usage

_PIECE = re.compile(r"\S+\s*|\s+")


def replay_pieces(text: str, size: int = 24) -> list[str]:
    """A stored answer cut into stream deltas at whitespace, each about ``size`` characters.

    ``"".join(replay_pieces(text)) == text`` always holds: nothing is added or lost.
    """
    pieces: list[str] = []
    current = ""
    for match in _PIECE.finditer(text):
        current += match.group()
        if len(current) >= size:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def passthrough(upstream: Iterator[str], model: str) -> Generator[str, None, Completion]:
    """The model's non-empty deltas as they arrive; returns the whole answer: the deltas joined,
    with the model name, usage, finish reason and tool calls of the Completion the model's
    iterator returned (``model``, no usage and "stop" if it returned none). Closes ``upstream``
    however it ends."""
    parts: list[str] = []
    try:
        while True:
            try:
                delta = next(upstream)
            except StopIteration as stop:
                final = stop.value
                break
            if delta:
                parts.append(delta)
                yield delta
    finally:
        close = getattr(upstream, "close", None)
        if close is not None:
            close()
    done = final if isinstance(final, Completion) else None
    return Completion(
        text="".join(parts),
        model=(done.model if done else "") or model,
        usage=done.usage if done else Usage(),
        finish_reason=done.finish_reason if done else "stop",
        tool_calls=done.tool_calls if done else (),
        thinking=done.thinking if done else (),
        stop_sequence=done.stop_sequence if done else None,
    )


class ChatStream:
    """One streamed answer. Iterate it for the text deltas (single use).

    ``tier``, ``similarity``, ``entry_id`` (of a hit) and ``bypass_reason`` are known before the
    first delta, so they can go out as response headers. ``result`` is the final ``ChatResult``
    once the stream ended normally (for a miss: with the stored entry's id), else None. ``close``
    ends the stream early: a miss cancelled this way stores nothing.
    """

    def __init__(
        self,
        *,
        tier: Tier,
        model: str,
        deltas: Iterator[str],
        similarity: float | None = None,
        entry_id: str | None = None,
        bypass_reason: str | None = None,
        result: ChatResult | None = None,
        timings: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        self.tier = tier
        self.model = model
        self.similarity = similarity
        self.entry_id = entry_id
        self.bypass_reason = bypass_reason
        self.result = result
        self._timings = timings
        self._deltas = deltas
        self._pending: deque[str] = deque()
        self._exhausted = False

    @classmethod
    def replay(cls, result: ChatResult) -> ChatStream:
        """A finished answer (a hit) sent again as deltas."""
        return cls(
            tier=result.tier,
            model=result.model,
            deltas=iter(replay_pieces(result.response)),
            similarity=result.similarity,
            entry_id=result.entry_id,
            bypass_reason=result.bypass_reason,
            result=result,
        )

    @property
    def cached(self) -> bool:
        return self.tier in (Tier.EXACT, Tier.SEMANTIC)

    @property
    def timings(self) -> Mapping[str, float]:
        """Milliseconds per part so far (a replay: the hit's; a live miss: what ran before the
        model's first delta, and the model's time once it ended)."""
        if self.result is not None:
            return self.result.timings
        return self._timings() if self._timings is not None else {}

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        if self._pending:
            return self._pending.popleft()
        if self._exhausted:
            raise StopIteration
        try:
            return next(self._deltas)
        except StopIteration as stop:
            self._exhausted = True
            if isinstance(stop.value, ChatResult):
                self.result = stop.value
            raise StopIteration from None

    def prime(self) -> None:
        """Wait for the first delta now, so that a failure before any text raises here (and can
        still become an HTTP error status) rather than in the middle of a response."""
        with contextlib.suppress(StopIteration):
            self._pending.append(next(self))

    def close(self) -> None:
        """Stop early. Idempotent; a no-op once the stream has ended."""
        self._exhausted = True
        self._pending.clear()
        close = getattr(self._deltas, "close", None)
        if close is not None:
            close()
