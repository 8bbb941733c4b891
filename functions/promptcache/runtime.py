"""Composition root: settings -> backends -> one PromptCache, built once per process (cold start).

The only place that maps setting values to concrete adapters.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from ._claim import lock_ttl
from ._errors import ConfigError
from ._indexes import Bounds
from ._protocols import LLM, Embedder, Index, RateWindows, Stats, Store, Verifier
from ._verify import ModelCheck
from .adapters._http import RetryPolicy
from .calibration import read_calibration
from .core import PromptCache
from .guards import default_guards, strict_guards
from .http.ratelimit import RateLimiter
from .settings import Settings, key_digest, parse_api_keys

if TYPE_CHECKING:  # the HTTP wing loads Powertools; the CLI builds the cache without it
    from .http.service import Service


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


def _upstash(settings: Settings) -> tuple[Store, Stats]:
    from .adapters.upstash import UpstashStats, UpstashStore

    token = upstash_token(settings)
    client = _http(settings, settings.backend_timeout)
    store = UpstashStore(
        client, settings.upstash_url, token, chunk_bytes=settings.upstash_chunk_bytes
    )
    return store, UpstashStats(client, settings.upstash_url, token)


def _redis_index(settings: Settings) -> Index:
    import redis

    from .adapters.redis_index import RedisIndex

    url = _secret(settings.redis_url, settings.redis_url_ssm_parameter)
    timeout = settings.backend_timeout
    client = redis.Redis.from_url(
        url, protocol=2, socket_timeout=timeout, socket_connect_timeout=min(timeout, 5.0)
    )
    return RedisIndex(
        client,
        algorithm=settings.redis_algorithm,
        ef_runtime=settings.redis_ef_runtime,
        timeout_ms=int(timeout * 1000),
    )


def _upstash_vector_index(settings: Settings) -> Index:
    from .adapters.upstash_vector import UpstashVectorIndex

    token = _secret(settings.upstash_vector_token, settings.upstash_vector_token_ssm_parameter)
    return UpstashVectorIndex(
        _http(settings, settings.backend_timeout), settings.upstash_vector_url, token
    )


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


def _anthropic(settings: Settings) -> LLM:
    from .adapters.anthropic import AnthropicLLM

    return AnthropicLLM(
        _http(settings, settings.upstream_timeout),
        api_key=settings.anthropic_api_key,
        base_url=settings.anthropic_base_url,
        max_tokens=settings.anthropic_max_tokens,
        policy=_within(AnthropicLLM.DEFAULT_POLICY, settings.upstream_timeout),
    )


def _within(policy: RetryPolicy, seconds: float) -> RetryPolicy:
    """An adapter's own retry policy, with no attempt starting after the backend's timeout."""
    return dataclasses.replace(policy, deadline=seconds)


def _workers_ai(cls: Any, settings: Settings, timeout: float, **kwargs: Any) -> Any:
    """A Workers AI adapter on the account, token and base URL of the settings, its own retry
    policy bounded by ``timeout``."""
    return cls(
        _http(settings, timeout),
        settings.cloudflare_account_id,
        cloudflare_token(settings),
        settings.cloudflare_api_base_url,
        policy=_within(cls.DEFAULT_POLICY, timeout),
        **kwargs,
    )


def _workers_ai_embedder(settings: Settings) -> Embedder:
    from .adapters.workers_ai import WorkersAIEmbedder

    embedder: Embedder = _workers_ai(WorkersAIEmbedder, settings, settings.backend_timeout)
    return embedder


def _workers_ai_llm(settings: Settings) -> LLM:
    from .adapters.workers_ai import WorkersAILLM

    # A Workers AI model id starts with "@"; any other default model is the adapter's default.
    model = settings.model if settings.model.startswith("@") else None
    llm: LLM = _workers_ai(WorkersAILLM, settings, settings.upstream_timeout, model=model)
    return llm


def _kv_stats(settings: Settings, store: Store, store_stats: Stats) -> Stats:
    from .adapters.cloudflare_kv import KVStats

    return KVStats(
        _http(settings, settings.backend_timeout),
        settings.cloudflare_account_id,
        settings.cloudflare_kv_namespace_id,
        cloudflare_token(settings),
        settings.cloudflare_api_base_url,
        policy=_within(KVStats.DEFAULT_POLICY, settings.backend_timeout),
    )


STORES: dict[str, Callable[[Settings], tuple[Store, Stats]]] = {
    "sqlite": _sqlite,
    "memory": _memory,
    "upstash": _upstash,
}
INDEXES: dict[str, Callable[[Settings], Index | None]] = {
    "process": lambda settings: None,  # each process its own, synced from the store
    "redis": _redis_index,
    "upstash-vector": _upstash_vector_index,
}
EMBEDDERS: dict[str, Callable[[Settings], Embedder]] = {
    "local": _local_embedder,
    "workers-ai": _workers_ai_embedder,
}
LLMS: dict[str, Callable[[Settings], LLM]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "workers-ai": _workers_ai_llm,
}
#: The models each upstream owns: a request for one goes to that upstream when it is configured,
#: whatever the default (docs/backends.md, "Choosing the upstream").
MODEL_PREFIXES: dict[str, tuple[str, ...]] = {
    "anthropic": ("claude-",),
    "workers-ai": ("@cf/", "@hf/"),
    "openai": ("gpt-", "chatgpt-", "o1", "o3", "o4"),
}
STATS: dict[str, Callable[[Settings, Store, Stats], Stats]] = {
    "store": lambda settings, store, stats: stats,
    "cloudflare-kv": _kv_stats,
}


def _pick(table: dict[str, Any], name: str, what: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise ConfigError(
            f"{what} {name!r} is not available; choose one of {sorted(table)}"
        ) from None


def _threshold(settings: Settings, embedder: Embedder) -> float | None:
    """PROMPTCACHE_THRESHOLD, else the calibrated threshold of this embedder in
    ``<PROMPTCACHE_DATA_DIR>/calibration.json`` (``promptcache calibrate``), else None: the
    embedder's own default. Deployed, the threshold comes from PROMPTCACHE_THRESHOLD."""
    if settings.threshold is not None:
        return settings.threshold
    return read_calibration(settings.data_dir, embedder.id)


#: What to set for misses to be answered (the core names concepts, the settings are named here).
LLM_HINT = (
    "set OPENAI_BASE_URL (and OPENAI_API_KEY) for an OpenAI-compatible server, "
    "ANTHROPIC_API_KEY for Claude, or CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN for "
    "Workers AI"
)


def _local_verifier(settings: Settings) -> Verifier:
    from .adapters.local_verifier import LocalVerifier

    return LocalVerifier(timeout=settings.verifier_timeout)


def _workers_ai_verifier(settings: Settings) -> Verifier:
    from .adapters.workers_ai import WorkersAIReranker

    verifier: Verifier = _workers_ai(WorkersAIReranker, settings, settings.verifier_timeout)
    return verifier


VERIFIER_MODELS: dict[str, Callable[[Settings], Verifier]] = {
    "local": _local_verifier,
    "workers-ai": _workers_ai_verifier,
}


def _model_check(settings: Settings) -> ModelCheck | None:
    """PROMPTCACHE_VERIFIER_MODEL and its policy (see ``_verify``), or None when off."""
    if settings.verifier_model == "off":
        return None
    return ModelCheck(
        verifier=_pick(VERIFIER_MODELS, settings.verifier_model, "verifier model")(settings),
        cutoff=settings.verifier_cutoff,
        below=settings.verifier_below,
        band=settings.verifier_model_band,
    )


def make_embedder(settings: Settings) -> Embedder:
    """The embedder PROMPTCACHE_EMBEDDER names (for a caller that wraps it before ``build``)."""
    made: Embedder = _pick(EMBEDDERS, settings.embedder, "embedder")(settings)
    return made


def make_llm(settings: Settings) -> LLM | None:
    """The model PROMPTCACHE_LLM names, None for `none` (for a caller that wraps it); with other
    upstreams configured too, a router sending each request for one of their models to them."""
    if settings.llm == "none":
        return None
    default: LLM = _pick(LLMS, settings.llm, "LLM")(settings)
    if not settings.llm_routes:
        return default
    from .adapters.router import Route, RoutedLLM

    routes = [Route(MODEL_PREFIXES[name], LLMS[name](settings)) for name in settings.llm_routes]
    return RoutedLLM(default, routes)


def build(
    settings: Settings, *, embedder: Embedder | None = None, llm: LLM | None = None
) -> PromptCache:
    """The cache the settings describe; ``embedder`` and ``llm``, when given, are used instead of
    the ones the settings name (the offline evaluation memoises the embedder; benchmarks and
    tests give a model of their own)."""
    store, store_stats = _pick(STORES, settings.store, "store")(settings)
    stats = _pick(STATS, settings.stats, "stats backend")(settings, store, store_stats)
    embedder = make_embedder(settings) if embedder is None else embedder
    llm = make_llm(settings) if llm is None else llm
    index = _pick(INDEXES, settings.index, "index")(settings)
    return PromptCache(
        store=store,
        index=index,
        embedder=embedder,
        stats=stats,
        llm=llm,
        llm_hint=LLM_HINT,
        threshold=_threshold(settings, embedder),
        ttl_seconds=settings.ttl_seconds,
        guards=default_guards(),
        strict_guards=strict_guards(settings.strict_guards),
        strict_guards_band=settings.strict_guards_band,
        verifier_model=_model_check(settings),
        fill_lock_ttl=lock_ttl(settings.upstream_timeout),
        price_per_1k_tokens=settings.price_per_1k_tokens,
        bounds=Bounds(settings.max_namespaces, settings.max_entries_per_namespace),
    )


def with_secrets(parsed: Settings) -> Settings:
    """API keys, the admin key and the Anthropic key kept in SSM (deployed) are read once, here,
    and checked like the variables."""
    keys, admin, claude = parsed.api_keys, parsed.admin_key, parsed.anthropic_api_key
    if not claude and parsed.anthropic_api_key_ssm_parameter:
        claude = _secret("", parsed.anthropic_api_key_ssm_parameter).strip()
    if not keys and parsed.api_keys_ssm_parameter:
        raw = _secret("", parsed.api_keys_ssm_parameter)
        try:
            keys = parse_api_keys(raw)
        except ConfigError as exc:
            where = parsed.api_keys_ssm_parameter
            raise ConfigError(f"SSM parameter {where}: {exc.message}") from None
    if not admin and parsed.admin_key_ssm_parameter:
        raw = _secret("", parsed.admin_key_ssm_parameter).strip()
        admin = key_digest(raw, f"SSM parameter {parsed.admin_key_ssm_parameter}") if raw else ""
    if keys is parsed.api_keys and (admin, claude) == (parsed.admin_key, parsed.anthropic_api_key):
        return parsed
    return dataclasses.replace(parsed, api_keys=keys, admin_key=admin, anthropic_api_key=claude)


_T = TypeVar("_T")


class _Once(Generic[_T]):
    """``make()`` called once per process, however many threads ask at the same time (a
    ``functools.cache`` lets concurrent first requests each build a cache of their own)."""

    def __init__(self, make: Callable[[], _T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._made: list[_T] = []
        functools.update_wrapper(self, make)

    def __call__(self) -> _T:
        if not self._made:
            with self._lock:
                if not self._made:
                    self._made.append(self._make())
        return self._made[0]

    def cache_clear(self) -> None:
        with self._lock:
            self._made.clear()


@_Once
def settings() -> Settings:
    """Parsed once per process."""
    return with_secrets(Settings.from_env())


@_Once
def cache() -> PromptCache:
    """Built once per warm container."""
    return build(settings())


@_Once
def service() -> Service:
    """What every route passes whole: the cache, the settings and the per-tenant rate limit
    (counted in the store when it keeps rate windows)."""
    from .http.service import Service

    built = cache()
    windows = built.store if isinstance(built.store, RateWindows) else None
    return Service(built, settings(), RateLimiter(settings().rate_limit_per_minute, windows))


def reset() -> None:
    """Forget the cached settings, cache and service (tests, `promptcache clear`)."""
    settings.cache_clear()
    cache.cache_clear()
    service.cache_clear()
