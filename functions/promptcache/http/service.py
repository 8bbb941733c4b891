"""The service handle: what every route needs, built once per process by the composition root
(``runtime.service()``) and passed whole, so a route is one line and a face reads its cache, its
settings and its rate limiter from one frozen value.

It is also the one way a face asks the cache: ``answer`` and ``stream`` run the request through
``PromptCache``, count it in the invocation's metrics and name what the cache did in the result
headers, the same for every face, so a face only translates its dialect in and out."""

from __future__ import annotations

from dataclasses import dataclass

from .._stream import ChatStream
from .._types import ChatRequest, ChatResult
from ..core import PromptCache
from ..settings import Settings
from .observability import count, record
from .ratelimit import RateLimiter
from .wire import result_headers


@dataclass(frozen=True)
class Service:
    """The cache, the parsed settings and the per-tenant rate limiter of one process."""

    cache: PromptCache
    settings: Settings
    limiter: RateLimiter

    def answer(self, request: ChatRequest) -> tuple[ChatResult, dict[str, str]]:
        """The whole answer, counted, with its result headers."""
        result = self.cache.chat(request)
        record(result)
        headers = result_headers(
            result.tier, result.similarity, result.entry_id, result.timings, result.bypass_reason
        )
        return result, headers

    def stream(self, request: ChatRequest) -> tuple[ChatStream, dict[str, str]]:
        """The answer as a stream, primed (an early upstream failure raises here, while the
        response can still be an HTTP error), with its result headers. A replay is counted now;
        a live miss counts its tier now and its parts once it ends."""
        stream = self.cache.chat_stream(request)
        if stream.result is not None:
            record(stream.result)
        else:
            count(f"tier_{stream.tier.value}")
        headers = result_headers(
            stream.tier, stream.similarity, stream.entry_id, stream.timings, stream.bypass_reason
        )
        return stream, headers
