"""The exception tree of promptcache.

    PromptCacheError                       base of everything raised on purpose
    +-- ConfigError                        a setting is missing or invalid (cold start)
    +-- RequestError (4xx)                 the client's request is wrong
    |   +-- BadRequest            400
    |   +-- Unauthorized          401
    |   +-- Forbidden             403
    |   +-- NotFound              404
    |   +-- MethodNotAllowed      405
    |   +-- PayloadTooLarge       413
    |   +-- UnsupportedMediaType  415
    |   +-- Unprocessable         422 (400 on the faces of other APIs: OpenAI's and
    |                                      Anthropic's status for a wrong type or value)
    |   +-- RateLimited           429
    +-- BackendError                       a dependency failed
        +-- StoreError                     store unreachable / bad answer (cache bypassed)
        +-- EmbedderError                  embedder failed (cache bypassed)
        +-- VerifierError                  verifier failed (its candidates rejected: a miss)
        +-- StatsError                     stats backend failed (logged, never surfaced)
        +-- UpstreamError         502      the LLM failed; nothing is stored
            +-- UpstreamTimeout   504
            +-- UpstreamRateLimited 429
            +-- UpstreamNotConfigured 503  no LLM configured: misses cannot be answered
            +-- UpstreamBadRequest 400     the LLM refused this request (e.g. no such model)
                +-- UpstreamPayloadTooLarge 413  ... because it is too large for the model

Adapters wrap transport errors with ``raise ... from exc``; the HTTP layer maps this tree to
status codes in one place (``promptcache.http.wire``).
"""

from __future__ import annotations

import math


class PromptCacheError(Exception):
    """Base class of every error promptcache raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(PromptCacheError):
    code = "config_error"


class RequestError(PromptCacheError):
    """Something wrong with the request. ``param`` names the field at fault (``top_p``,
    ``messages[0].content``, ``input[2].content``) when there is one: OpenAI's error bodies
    carry it."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


class BadRequest(RequestError):
    status = 400
    code = "bad_request"


class Unauthorized(RequestError):
    status = 401
    code = "unauthorized"


class Forbidden(RequestError):
    status = 403
    code = "forbidden"


class NotFound(RequestError):
    status = 404
    code = "not_found"


class MethodNotAllowed(RequestError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(RequestError):
    """A well-formed body with a field of the wrong type or value (``param`` names it)."""

    status = 422
    code = "unprocessable"


class UnsupportedField(BadRequest):
    """A field the client sent that the configured upstream cannot take (and that has no
    translation): refused before any call, naming the field and the upstream, never dropped."""

    code = "unsupported_field"


class RateLimited(RequestError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, sent as the Retry-After header


class BackendError(PromptCacheError):
    status = 503
    code = "backend_error"


class StoreError(BackendError):
    code = "store_error"


class EmbedderError(BackendError):
    code = "embedder_error"


class VerifierError(BackendError):
    code = "verifier_error"


class StatsError(BackendError):
    code = "stats_error"


class UpstreamError(BackendError):
    status = 502
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamOverloaded(UpstreamError):
    """The model is overloaded (Claude's 529 ``overloaded_error``, an upstream's 503): a 503 for
    the client, which may retry later; each face names it in its own words."""

    status = 503
    code = "upstream_overloaded"


class UpstreamRateLimited(UpstreamError):
    """The model is rate limiting us: a 429 with ``Retry-After`` for the client (the upstream's
    own delay when it sent one, else ``DEFAULT_RETRY_AFTER`` seconds)."""

    status = 429
    code = "upstream_rate_limited"
    DEFAULT_RETRY_AFTER = 5

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        seconds = self.DEFAULT_RETRY_AFTER if retry_after is None else retry_after
        self.retry_after = min(max(math.ceil(seconds), 1), 3600)


class UpstreamNotConfigured(UpstreamError):
    status = 503
    code = "upstream_not_configured"


class UpstreamBadRequest(UpstreamError):
    """The LLM refused the request itself (retrying cannot help): a 4xx for the client."""

    status = 400
    code = "upstream_bad_request"


class UpstreamPayloadTooLarge(UpstreamBadRequest):
    status = 413
    code = "payload_too_large"
