"""promptcache: a semantic cache for LLM APIs.

The public API is listed in ``__all__``; every other module is an implementation detail.
"""

from ._errors import (
    BackendError,
    BadRequest,
    ConfigError,
    EmbedderError,
    PromptCacheError,
    RequestError,
    StatsError,
    StoreError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamNotConfigured,
    UpstreamPayloadTooLarge,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from ._protocols import LLM, Embedder, Locks, RateWindows, Stats, Store, StreamingLLM
from ._stream import ChatStream
from ._types import (
    CacheHit,
    CacheMode,
    ChatRequest,
    ChatResult,
    Completion,
    Cursor,
    Entry,
    LogRecord,
    Message,
    SyncResult,
    Tier,
    Usage,
)
from .core import PromptCache
from .index import VectorIndex
from .settings import Settings

__all__ = [
    "BackendError",
    "BadRequest",
    "CacheHit",
    "CacheMode",
    "ChatRequest",
    "ChatResult",
    "ChatStream",
    "Completion",
    "ConfigError",
    "Cursor",
    "Embedder",
    "EmbedderError",
    "Entry",
    "LLM",
    "Locks",
    "LogRecord",
    "Message",
    "PromptCache",
    "PromptCacheError",
    "RateWindows",
    "RequestError",
    "Settings",
    "Stats",
    "StatsError",
    "Store",
    "StoreError",
    "StreamingLLM",
    "SyncResult",
    "Tier",
    "UpstreamBadRequest",
    "UpstreamError",
    "UpstreamNotConfigured",
    "UpstreamPayloadTooLarge",
    "UpstreamRateLimited",
    "UpstreamTimeout",
    "Usage",
    "VectorIndex",
]
__version__ = "0.1.0"
