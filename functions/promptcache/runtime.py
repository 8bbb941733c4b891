"""Composition root: settings -> backends -> one PromptCache, built once per process (cold start).

The only place that maps setting values to concrete adapters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import httpx

from ._errors import ConfigError
from ._protocols import LLM, Embedder, Stats, Store
from .core import PromptCache
from .guards import default_guards
from .settings import Settings


def _secret(value: str, parameter: str) -> str:
    """A token given directly, or read once from SSM Parameter Store (SecureString)."""
    if value or not parameter:
        return value
    try:
        from aws_lambda_powertools.utilities import parameters
    except ImportError as exc:  # pragma: no cover - powertools is a runtime dependency
        raise ConfigError("reading secrets from SSM needs aws-lambda-powertools") from exc
    try:
        return str(parameters.get_parameter(parameter, decrypt=True, max_age=3600))
    except Exception as exc:
        raise ConfigError(f"cannot read SSM parameter {parameter}: {exc}") from exc


def cloudflare_token(settings: Settings) -> str:
    return _secret(settings.cloudflare_api_token, settings.cloudflare_api_token_ssm_parameter)


def upstash_token(settings: Settings) -> str:
    return _secret(settings.upstash_token, settings.upstash_token_ssm_parameter)


def _http(settings: Settings, timeout: float) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
    )


# ---------------------------------------------------------------- one builder per backend
def _sqlite(settings: Settings) -> tuple[Store, Stats]:
    from .adapters.sqlite import SQLiteStats, SQLiteStore

    store = SQLiteStore(settings.sqlite_path, timeout=settings.backend_timeout)
    return store, SQLiteStats(store)


def _memory(settings: Settings) -> tuple[Store, Stats]:
    from .adapters.memory import MemoryStats, MemoryStore

    return MemoryStore(), MemoryStats()


def _local_embedder(settings: Settings) -> Embedder:
    from .adapters.local_embedder import LocalEmbedder

    return LocalEmbedder()


def _openai(settings: Settings) -> LLM:
    from .adapters.openai_compat import OpenAICompatibleLLM

    return OpenAICompatibleLLM(
        _http(settings, settings.upstream_timeout),
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
    )


STORES: dict[str, Callable[[Settings], tuple[Store, Stats]]] = {
    "sqlite": _sqlite,
    "memory": _memory,
}
EMBEDDERS: dict[str, Callable[[Settings], Embedder]] = {"local": _local_embedder}
LLMS: dict[str, Callable[[Settings], LLM]] = {"openai": _openai}
STATS: dict[str, Callable[[Settings, Store, Stats], Stats]] = {
    "store": lambda settings, store, stats: stats,
}


def _pick(table: dict[str, Any], name: str, what: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"{what} {name!r} is not available; choose one of {sorted(table)}") from None


def build(settings: Settings) -> PromptCache:
    store, store_stats = _pick(STORES, settings.store, "store")(settings)
    stats = _pick(STATS, settings.stats, "stats backend")(settings, store, store_stats)
    embedder = _pick(EMBEDDERS, settings.embedder, "embedder")(settings)
    llm = None if settings.llm == "none" else _pick(LLMS, settings.llm, "LLM")(settings)
    return PromptCache(
        store=store,
        embedder=embedder,
        stats=stats,
        llm=llm,
        threshold=settings.threshold,
        ttl_seconds=settings.ttl_seconds,
        guards=default_guards(),
        price_per_1k_tokens=settings.price_per_1k_tokens,
    )


@functools.cache
def settings() -> Settings:
    """Parsed once per process."""
    return Settings.from_env()


@functools.cache
def service() -> PromptCache:
    """Built once per warm container."""
    return build(settings())


def reset() -> None:
    """Forget the cached settings and service (tests, `promptcache clear`)."""
    settings.cache_clear()
    service.cache_clear()
