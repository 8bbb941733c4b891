"""How Workers AI's generation answers are read: its errors (Cloudflare's code first, then the
HTTP status), the native API's answer and stream (``/ai/run``), and the OpenAI-compatible
endpoint's stream, which may come back whole.

Error mapping for generation (Cloudflare's code first, then the HTTP status):

    5007 no such model       -> UpstreamBadRequest 400 (code "model_not_found")
    3006 request too large   -> UpstreamPayloadTooLarge 413
    3007 model timed out     -> UpstreamTimeout 504  (also HTTP 408/504, client-side timeouts)
    3036 quota / 3040 capacity -> UpstreamRateLimited 429 (also HTTP 429)
    HTTP 401/403             -> UpstreamError 502 (our credentials, not the client's request)
    other HTTP 400/404/422   -> UpstreamBadRequest 400: the request refused (invalid input, a
                                field the model does not take), with Workers AI's message
    circuit open             -> UpstreamError 502 (code "upstream_unavailable"), no request sent
    anything else            -> UpstreamError 502
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import replace
from typing import Any

import httpx
from httpx_sse import EventSource

from .._errors import (
    UpstreamBadRequest,
    UpstreamError,
    UpstreamPayloadTooLarge,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from .._types import Completion, Usage
from . import _cloudflare as cf
from ._http import retry_after
from .openai_compat import completion_of, completion_stream

CODE_NO_SUCH_MODEL = 5007
CODE_TOO_LARGE = 3006
CODE_TIMEOUT = 3007
CODE_QUOTA = 3036
CODE_CAPACITY = 3040
#: Who the OpenAI-compatible endpoint's errors name.
CHAT = "Workers AI's OpenAI-compatible endpoint"


def succeeded(response: httpx.Response) -> bool:
    body = cf.envelope(response)
    return body is not None and body.get("success") is True


def llm_error(response: httpx.Response, model: str) -> UpstreamError:
    codes = cf.error_codes(response)
    status = response.status_code
    detail = cf.describe(response)
    if CODE_NO_SUCH_MODEL in codes:
        return UpstreamBadRequest(
            f"Workers AI has no model {model!r} ({detail})", code="model_not_found"
        )
    if CODE_TOO_LARGE in codes or status == 413:
        return UpstreamPayloadTooLarge(f"the request is too large for {model} ({detail})")
    if CODE_TIMEOUT in codes or status in (408, 504):
        return UpstreamTimeout(f"Workers AI timed out running {model} ({detail})")
    if CODE_QUOTA in codes or CODE_CAPACITY in codes or status == 429:
        return UpstreamRateLimited(
            f"Workers AI is out of capacity or quota for {model} ({detail})",
            retry_after=retry_after(response),
        )
    if status in (401, 403):
        return UpstreamError(
            f"Workers AI refused the credentials: check CLOUDFLARE_API_TOKEN and "
            f"CLOUDFLARE_ACCOUNT_ID ({detail})"
        )
    if status in (400, 404, 422):  # the request itself: retrying cannot help
        return UpstreamBadRequest(f"Workers AI refused the request to {model}: {detail}")
    return UpstreamError(f"Workers AI failed running {model}: {detail}")


def chat_deltas(response: httpx.Response, model: str) -> Generator[str, None, Completion]:
    """The OpenAI-compatible endpoint's stream (``completion_stream``); a whole
    ``chat.completion`` instead (a model or mode that does not stream: JSON mode does not) is
    relayed as one delta, with its tool calls and finish reason."""
    if "text/event-stream" not in response.headers.get("content-type", ""):
        response.read()
        whole = completion_of(response, model, CHAT)
        if whole.text:
            yield whole.text
        return replace(whole, text="")
    return (yield from completion_stream(response, model, CHAT))


def sse_deltas(response: httpx.Response, model: str) -> Generator[str, None, Completion]:
    """Text deltas of a Workers AI answer: SSE ``data:`` events until ``[DONE]`` (parsed with
    httpx-sse); a JSON answer (a model that does not stream) is relayed as one delta. Returns the
    Completion (empty text, model and usage of the last event that carried one)."""
    content_type = response.headers.get("content-type", "")
    if "text/event-stream" not in content_type:
        response.read()
        if not succeeded(response):
            raise llm_error(response, model)
        result = cf.result_of(response)
        text = result.get("response") if isinstance(result, dict) else None
        if not isinstance(text, str):
            raise TypeError("result.response is not a string")
        if text:
            yield text
        return Completion(text="", model=model, usage=usage_of(result))
    usage = Usage()
    for event in EventSource(response).iter_sse():
        if event.data == "[DONE]":
            return Completion(text="", model=model, usage=usage)
        if not event.data:
            continue
        data = json.loads(event.data)
        if not isinstance(data, dict):
            raise TypeError("an SSE event is not an object")
        if data.get("usage"):
            usage = usage_of(data)
        piece = data.get("response")
        if piece is None and data.get("choices"):  # OpenAI-shaped events of newer models
            piece = (data["choices"][0].get("delta") or {}).get("content")
        if isinstance(piece, str) and piece:
            yield piece
    raise UpstreamError("Workers AI's stream ended before [DONE]: the answer may be truncated")


def usage_of(result: Mapping[str, Any]) -> Usage:
    usage = result.get("usage") or {}
    if not isinstance(usage, Mapping):
        raise TypeError("usage is not an object")
    return Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
