"""promptcache: a semantic cache for LLM APIs.

The public API is listed in ``__all__``; every other module is an implementation detail. Names are
imported on first use (PEP 562), so that importing one light module of the package (``routes``,
``settings``, ``calibration``) does not load numpy, httpx or Powertools: the infrastructure
program reads ``promptcache.routes`` without the runtime's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._errors import (
        BackendError,
        BadRequest,
        ConfigError,
        EmbedderError,
        PromptCacheError,
        RequestError,
        StatsError,
        StoreError,
        UnsupportedField,
        UpstreamBadRequest,
        UpstreamError,
        UpstreamNotConfigured,
        UpstreamOverloaded,
        UpstreamPayloadTooLarge,
        UpstreamRateLimited,
        UpstreamTimeout,
        VerifierError,
    )
    from ._indexes import Bounds
    from ._protocols import (
        LLM,
        Documents,
        Embedder,
        Index,
        Locks,
        RateWindows,
        Stats,
        Store,
        StreamingLLM,
        Verifier,
    )
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
    from ._verify import ModelCheck
    from .core import PromptCache
    from .index import VectorIndex
    from .settings import Settings

#: Public name -> the module defining it.
_EXPORTS = {
    "BackendError": "._errors",
    "BadRequest": "._errors",
    "Bounds": "._indexes",
    "CacheHit": "._types",
    "CacheMode": "._types",
    "ChatRequest": "._types",
    "ChatResult": "._types",
    "ChatStream": "._stream",
    "Completion": "._types",
    "ConfigError": "._errors",
    "Cursor": "._types",
    "Documents": "._protocols",
    "Embedder": "._protocols",
    "EmbedderError": "._errors",
    "Entry": "._types",
    "LLM": "._protocols",
    "Index": "._protocols",
    "Locks": "._protocols",
    "LogRecord": "._types",
    "Message": "._types",
    "ModelCheck": "._verify",
    "PromptCache": ".core",
    "PromptCacheError": "._errors",
    "RateWindows": "._protocols",
    "RequestError": "._errors",
    "Settings": ".settings",
    "Stats": "._protocols",
    "StatsError": "._errors",
    "Store": "._protocols",
    "StoreError": "._errors",
    "StreamingLLM": "._protocols",
    "SyncResult": "._types",
    "Tier": "._types",
    "UpstreamBadRequest": "._errors",
    "UpstreamError": "._errors",
    "UpstreamNotConfigured": "._errors",
    "UpstreamOverloaded": "._errors",
    "UpstreamPayloadTooLarge": "._errors",
    "UpstreamRateLimited": "._errors",
    "UpstreamTimeout": "._errors",
    "UnsupportedField": "._errors",
    "Usage": "._types",
    "VectorIndex": ".index",
    "Verifier": "._protocols",
    "VerifierError": "._errors",
}

__all__ = [
    "BackendError",
    "BadRequest",
    "Bounds",
    "CacheHit",
    "CacheMode",
    "ChatRequest",
    "ChatResult",
    "ChatStream",
    "Completion",
    "ConfigError",
    "Cursor",
    "Documents",
    "Embedder",
    "EmbedderError",
    "Entry",
    "Index",
    "LLM",
    "Locks",
    "LogRecord",
    "Message",
    "ModelCheck",
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
    "UpstreamOverloaded",
    "UpstreamPayloadTooLarge",
    "UpstreamRateLimited",
    "UpstreamTimeout",
    "UnsupportedField",
    "Usage",
    "VectorIndex",
    "Verifier",
    "VerifierError",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'promptcache' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
