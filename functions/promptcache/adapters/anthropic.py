"""Claude (the Anthropic Messages API) as the LLM upstream.

``POST {base}/v1/messages`` with ``x-api-key`` and ``anthropic-version`` (pinned here, whatever
version the cache's own client sent); ``GET {base}/v1/models`` is the free health probe.

The internal request is in the Chat Completions spelling (``_types.ChatRequest``); this module
translates it out, and Claude's answer back in:

- turns: ``system`` (and ``developer``) turns -> the top-level ``system`` (a string, or text
  blocks when one carries ``cache_control``); an assistant turn's ``tool_calls`` -> ``tool_use``
  blocks (ids as the client sent them); consecutive ``tool`` turns -> one user turn of
  ``tool_result`` blocks; ``image_url`` parts -> ``image`` blocks (a ``data:`` URL -> a base64
  source, an http(s) URL -> a url source); parts already in Anthropic's spelling (a ``document``,
  a ``thinking`` block, a text block with ``cache_control``) are carried as they are.
- fields: ``stop`` -> ``stop_sequences``; ``tools`` (function tools -> name, description,
  ``input_schema``); ``tool_choice`` (auto / required -> any / none / named -> tool) with
  ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use``; ``response_format`` with a JSON
  schema -> ``output_config.format``; ``user`` -> ``metadata.user_id``; ``max_tokens`` /
  ``max_completion_tokens`` -> ``max_tokens`` (required by Claude: the adapter's default when the
  request sets none); ``temperature`` (0..1 on Claude), ``top_p``, ``top_k``, ``thinking`` and any
  field in Anthropic's own spelling as they are.
- refused before any call (``UnsupportedField``, 400): the Chat Completions fields Claude has no
  equivalent for (``_messages.REFUSED``), a temperature above 1, a ``json_object`` response
  format, legacy ``function`` turns, a participant ``name``.
- the answer: text blocks -> the text; ``tool_use`` blocks -> tool calls (``input`` as JSON
  text); ``thinking`` / ``redacted_thinking`` blocks -> ``Completion.thinking`` exactly as sent;
  ``stop_reason`` -> the finish reason in OpenAI's words (``_messages.FINISH``); ``usage``.

Errors: 429 -> UpstreamRateLimited (Claude's ``retry-after`` passed on); 529 ``overloaded_error``
and other 5xx -> UpstreamError 502 after the retries (``_http``); 408/504 -> UpstreamTimeout;
401/403 -> UpstreamError naming ANTHROPIC_API_KEY; 413 -> UpstreamPayloadTooLarge; other 4xx ->
UpstreamBadRequest (Claude's message passed on).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from .._errors import (
    ConfigError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamPayloadTooLarge,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from .._settings_table import ANTHROPIC_MAX_TOKENS
from .._types import ChatRequest, Completion
from ._http import CircuitBreaker, CircuitOpenError, ResilientHTTP, RetryPolicy, retry_after
from ._messages import UPSTREAM, Blocks, completion_of, messages_body

DEFAULT_BASE_URL = "https://api.anthropic.com"
#: The Messages API version this adapter speaks (the ``anthropic-version`` header), whatever the
#: cache's clients send. 2023-06-01 is the version whose request and response shapes the adapter
#: is written against; the later 2026-10-21 refuses ``temperature``, ``top_p`` and ``top_k``.
ANTHROPIC_VERSION = "2023-06-01"
#: ``max_tokens`` when the request sets none (Claude requires it): PROMPTCACHE_ANTHROPIC_MAX_TOKENS.
DEFAULT_MAX_TOKENS = ANTHROPIC_MAX_TOKENS


# ---------------------------------------------------------------------------- errors
def _error_message(response: httpx.Response) -> str:
    """Claude's error shape: ``{"type": "error", "error": {"type", "message"}}``."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        kind = error.get("type")
        message = str(error.get("message") or error)
        return f"{kind}: {message}" if kind else message
    return str(body)[:300]


def _error(response: httpx.Response) -> UpstreamError:
    status, detail = response.status_code, _error_message(response)
    if status == 429:
        return UpstreamRateLimited(
            f"{UPSTREAM} is rate limiting: {detail}", retry_after=retry_after(response)
        )
    if status in (408, 504):
        return UpstreamTimeout(f"{UPSTREAM} timed out: {detail}")
    if status in (401, 403):  # our key, not the client's request
        return UpstreamError(
            f"{UPSTREAM} refused our credentials ({status}): {detail}; check ANTHROPIC_API_KEY"
        )
    if status == 413:
        return UpstreamPayloadTooLarge(f"{UPSTREAM}: {detail}")
    if 400 <= status < 500:
        return UpstreamBadRequest(f"{UPSTREAM} refused the request ({status}): {detail}")
    if status == 529:
        return UpstreamError(f"{UPSTREAM} is overloaded (529): {detail}")
    return UpstreamError(f"{UPSTREAM} answered {status}: {detail}")


# ---------------------------------------------------------------------------- the adapter
class AnthropicLLM:
    """The LLM protocol (``generate``, ``stream``) over Claude's Messages API."""

    #: ``n`` > 1 is fanned out as n calls by the face: Claude answers one choice per call
    takes_n = False
    DEFAULT_POLICY = RetryPolicy(attempts=2, backoff=0.2, max_backoff=2.0)

    def __init__(
        self,
        client: httpx.Client,
        *,
        api_key: str,
        base_url: str = "",
        max_tokens: int = DEFAULT_MAX_TOKENS,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_key:
            raise ConfigError("the Anthropic upstream needs ANTHROPIC_API_KEY")
        self._base = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
        self.max_tokens = max_tokens
        self._http = ResilientHTTP(
            client,
            policy=policy or self.DEFAULT_POLICY,
            breaker=breaker
            or CircuitBreaker(failure_threshold=5, reset_timeout=30.0, clock=clock, name="claude"),
            sleep=sleep,
            clock=clock,
        )

    @property
    def name(self) -> str:
        return f"anthropic ({self._base})"

    def payload(self, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        return messages_body(request, max_tokens=self.max_tokens, stream=stream)

    def generate(self, request: ChatRequest) -> Completion:
        response = self._send("POST", "/v1/messages", json=self.payload(request))
        try:
            body = response.json()
            if not isinstance(body, dict):
                raise TypeError("the answer is not an object")
            return completion_of(body, request.model)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"{UPSTREAM} sent an unreadable answer: {exc!r}") from exc

    def stream(self, request: ChatRequest) -> Generator[str, None, Completion]:
        """The answer's text deltas as Claude streams them (named server-sent events).

        Lazy: the request goes out on the first ``next()``. Returns (``StopIteration.value``) a
        Completion with empty text and the model, usage, finish reason, tool calls and thinking
        blocks. A stream that breaks, carries an ``error`` event or ends before ``message_stop``
        raises UpstreamError (nothing is stored). Closing the generator closes the connection.
        """
        payload = self.payload(request, stream=True)
        response = self._send("POST", "/v1/messages", stream=True, json=payload)
        message = Blocks(request.model)
        try:
            for event in EventSource(response).iter_sse():
                data = json.loads(event.data) if event.data.strip() else {}
                if not isinstance(data, dict):
                    raise TypeError("an event is not an object")
                text = message.read(event.event, data)
                if text:
                    yield text
                if message.stopped:
                    break
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"{UPSTREAM} timed out while streaming: {exc!r}") from exc
        except (httpx.HTTPError, SSEError) as exc:
            raise UpstreamError(f"{UPSTREAM}'s stream broke: {exc!r}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"{UPSTREAM} streamed an unreadable event: {exc!r}") from exc
        finally:
            response.close()
        if not message.stopped:
            raise UpstreamError(f"{UPSTREAM}'s stream ended before message_stop")
        try:
            return message.completion()
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"{UPSTREAM} streamed an unreadable answer: {exc!r}") from exc

    def ping(self) -> None:
        """The free health probe: Claude's model list answers (``GET /v1/models``)."""
        response = self._send("GET", "/v1/models", params={"limit": 1})
        try:
            body = response.json()
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise TypeError("no model list")
        except (ValueError, TypeError) as exc:
            raise UpstreamError(f"{UPSTREAM} sent an unreadable model list: {exc!r}") from exc

    def _send(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> Any:
        url = self._base + path
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            if stream:
                response = self._http.open_stream(method, url, headers=headers, **kwargs)
            else:
                response = self._http.request(method, url, headers=headers, **kwargs)
        except CircuitOpenError as exc:
            raise UpstreamError(
                f"{UPSTREAM} is failing, not calling it for now: {exc}", code="upstream_unavailable"
            ) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"{UPSTREAM} timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{UPSTREAM} is unreachable: {exc!r}") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response
