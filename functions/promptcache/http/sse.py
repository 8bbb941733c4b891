"""Server-sent events, shared by every face that streams: a body sent while it is produced where
the server can (``promptcache serve``, the streaming function URL), else buffered whole (Lambda
behind API Gateway).

A face builds its events as an iterator of byte chunks and hands them to ``stream_response``; it
never needs to know which of the two it runs under. ``errors_as_events()`` says whether a failure
in the middle of a stream must become an error event (the 200 has gone out) or may still raise
(a buffered body can become an HTTP error status).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import Response


def data_event(payload: Any) -> bytes:
    """One ``data:`` event holding ``payload`` as JSON (OpenAI's chat chunks)."""
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"


def named_event(name: str, payload: Any) -> bytes:
    """One ``event: NAME`` + ``data:`` event (the Responses and Messages streams)."""
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return b"event: " + name.encode("ascii") + b"\ndata: " + data + b"\n\n"


@dataclass
class LiveBody:
    """Where a streamed answer leaves its body when the server can send it as it is produced: an
    iterator of SSE byte chunks instead of a string in the result."""

    chunks: Iterator[bytes] | None = None

    def take(self, result: dict[str, Any]) -> Iterator[bytes] | None:
        """The live body, if the response that was built is the streamed 200 it belongs to."""
        chunks, self.chunks = self.chunks, None
        if chunks is not None and int(result.get("statusCode", 200)) != 200:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            return None
        return chunks


_LIVE: ContextVar[LiveBody | None] = ContextVar("promptcache_live_body", default=None)


@contextmanager
def live_body() -> Iterator[LiveBody]:
    """Within this block (one invocation, one thread), streamed answers are left live in the
    yielded slot instead of being buffered into the response body."""
    slot = LiveBody()
    token = _LIVE.set(slot)
    try:
        yield slot
    finally:
        _LIVE.reset(token)


def errors_as_events() -> bool:
    """True where the body goes out live: a failure after the first byte must be an event."""
    return _LIVE.get() is not None


def stream_response(events: Iterator[bytes], headers: dict[str, str]) -> Response[str]:
    """A 200 ``text/event-stream`` answer of ``events``: left live in the slot where the server
    sends each chunk as it is produced, else the whole stream in one body."""
    headers["Cache-Control"] = "no-cache"
    slot = _LIVE.get()
    if slot is not None:
        slot.chunks = events
        text = ""
    else:
        text = b"".join(events).decode("utf-8")
    return Response(status_code=200, content_type="text/event-stream", body=text, headers=headers)
