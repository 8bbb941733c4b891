"""Settings, parsed once (at cold start) from the environment into a frozen object.

Every setting is listed in ``SETTINGS`` (``_settings_table``) with its default and meaning; the
table of docs/configuration.md is generated from the same list (``promptcache settings``), and a
test holds the two equal.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import ConfigError
from ._settings_table import (  # noqa: F401  (re-exported: the one list of settings)
    ANTHROPIC_MAX_TOKENS,
    DEFAULT_CLAUDE_MODEL,
    DEPRECATED,
    MAX_ENTRIES_PER_NAMESPACE,
    MAX_NAMESPACES,
    PRICE_PER_1K_TOKENS,
    REDIS_EF_RUNTIME,
    SETTINGS,
    STRICT_GUARDS_BAND,
    TTL_SECONDS,
    UPSTASH_CHUNK_BYTES,
    UPSTREAM_TIMEOUT,
)

log = logging.getLogger("promptcache")


def _float(env: Mapping[str, str], name: str, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip() or SETTINGS[name][0]
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip() or SETTINGS[name][0]
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name, "").strip() or SETTINGS[name][0]).lower()
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return raw


def _renamed(env: Mapping[str, str]) -> Mapping[str, str]:
    """``env`` with each deprecated name that is set read as its new name (a warning logged);
    both set to different values is an error."""
    found = {old: env[old].strip() for old in DEPRECATED if env.get(old, "").strip()}
    if not found:
        return env
    out = dict(env)
    for old, raw in found.items():
        new, values = DEPRECATED[old]
        value = values.get(raw.lower(), raw)
        given = env.get(new, "").strip()
        if given and given.lower() != value.lower():
            raise ConfigError(
                f"{old} (deprecated) and {new} are both set and differ: set {new} only"
            )
        log.warning("%s is deprecated and will be removed: set %s=%s instead", old, new, value)
        out[new] = value
    return out


def _str(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip() or SETTINGS[name][0]


_HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")


def key_digest(key: str, where: str = "PROMPTCACHE_API_KEYS") -> str:
    """The sha256 hex digest an API key is kept and compared as: of the key itself, or the one
    configured as ``sha256:<64 hex>`` (so that the plain key need not be stored anywhere)."""
    hashed = _HASHED.fullmatch(key)
    if hashed:
        return hashed.group(1).lower()
    if key.startswith("sha256:"):
        raise ConfigError(f"{where}: 'sha256:' must be followed by 64 hex digits")
    if not key or any(c.isspace() for c in key):
        raise ConfigError(f"{where}: an API key must be non-empty, without whitespace")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_api_keys(raw: str) -> dict[str, str]:
    """``key:tenant,key:tenant`` -> {sha256 hex digest of the key: tenant}. A key may be given
    as ``sha256:<hex>`` (``sha256:<hex>:tenant``)."""
    keys: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        if item.startswith("sha256:"):
            hexed, sep, tenant = item[7:].partition(":")
            key = f"sha256:{hexed}"
        else:
            key, sep, tenant = item.partition(":")
        if not sep or not key.strip() or not tenant.strip():
            raise ConfigError("PROMPTCACHE_API_KEYS must be comma-separated key:tenant pairs")
        keys[key_digest(key.strip())] = tenant.strip()
    return keys


def _admin_digest(raw: str) -> str:
    return key_digest(raw, "PROMPTCACHE_ADMIN_KEY") if raw else ""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    store: str
    embedder: str
    stats: str
    llm: str
    model: str
    threshold: float | None
    ttl_seconds: int
    max_body_bytes: int
    max_prompt_chars: int
    max_messages: int
    #: sha256 hex digest of each tenant's key -> the tenant (``parse_api_keys``); never in a
    #: repr or a log
    api_keys: Mapping[str, str] = field(repr=False)
    api_keys_ssm_parameter: str
    rate_limit_per_minute: int
    cors_origins: str
    upstream_timeout: float
    backend_timeout: float
    price_per_1k_tokens: float
    openai_base_url: str
    openai_api_key: str
    cloudflare_account_id: str
    cloudflare_api_token: str
    cloudflare_api_token_ssm_parameter: str
    cloudflare_kv_namespace_id: str
    cloudflare_api_base_url: str
    upstash_url: str
    upstash_token: str
    upstash_token_ssm_parameter: str
    upstash_chunk_bytes: int = UPSTASH_CHUNK_BYTES
    strict_guards: str = "off"
    strict_guards_band: float = STRICT_GUARDS_BAND
    verifier_model: str = "off"
    verifier_cutoff: float = 0.5
    verifier_below: float = 0.0
    verifier_model_band: float = 0.04
    verifier_timeout: float = 1.0
    admin_key: str = field(default="", repr=False)  # its sha256 hex digest (``key_digest``)
    admin_key_ssm_parameter: str = ""
    max_namespaces: int = MAX_NAMESPACES
    max_entries_per_namespace: int = MAX_ENTRIES_PER_NAMESPACE
    index: str = "process"
    redis_url: str = field(default="", repr=False)  # may hold a password
    redis_url_ssm_parameter: str = ""
    redis_algorithm: str = "flat"
    redis_ef_runtime: int = REDIS_EF_RUNTIME
    upstash_vector_url: str = ""
    upstash_vector_token: str = field(default="", repr=False)
    upstash_vector_token_ssm_parameter: str = ""
    semantic_tools: bool = False
    max_n: int = 8
    anthropic_api_key: str = field(default="", repr=False)
    anthropic_api_key_ssm_parameter: str = ""
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_max_tokens: int = ANTHROPIC_MAX_TOKENS
    #: the other configured upstreams a request's model may be routed to (``PROMPTCACHE_LLM``)
    llm_routes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.admin_key and self.admin_key in self.api_keys:
            raise ConfigError("PROMPTCACHE_ADMIN_KEY must differ from every tenant's API key")

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "cache.sqlite3"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = _renamed(os.environ if env is None else env)
        cf_token = _str(env, "CLOUDFLARE_API_TOKEN")
        cf_token_param = _str(env, "CLOUDFLARE_API_TOKEN_SSM_PARAMETER")
        cf_account = _str(env, "CLOUDFLARE_ACCOUNT_ID")
        has_cf = bool(cf_account and (cf_token or cf_token_param))
        upstash_url = _str(env, "UPSTASH_REDIS_REST_URL")
        kv_ns = _str(env, "CLOUDFLARE_KV_NAMESPACE_ID")
        openai_url = _str(env, "OPENAI_BASE_URL")
        openai_key = _str(env, "OPENAI_API_KEY")

        store = _choice(env, "PROMPTCACHE_STORE", ("auto", "sqlite", "memory", "upstash"))
        if store == "auto":
            store = "upstash" if upstash_url else "sqlite"
        embedder = _choice(env, "PROMPTCACHE_EMBEDDER", ("auto", "local", "workers-ai"))
        if embedder == "auto":
            embedder = "workers-ai" if has_cf else "local"
        stats = _choice(env, "PROMPTCACHE_STATS", ("auto", "store", "cloudflare-kv"))
        if stats == "auto":
            stats = "cloudflare-kv" if (kv_ns and has_cf) else "store"
        claude_key = _str(env, "ANTHROPIC_API_KEY")
        claude_key_param = _str(env, "ANTHROPIC_API_KEY_SSM_PARAMETER")
        configured = {
            "openai": bool(openai_url or openai_key),
            "anthropic": bool(claude_key or claude_key_param),
            "workers-ai": has_cf,
        }
        llm = _choice(env, "PROMPTCACHE_LLM", ("auto", "openai", "anthropic", "workers-ai", "none"))
        if llm == "auto":
            llm = next((name for name, ok in configured.items() if ok), "none")
        if llm == "anthropic" and not configured["anthropic"]:
            raise ConfigError(
                "PROMPTCACHE_LLM=anthropic needs ANTHROPIC_API_KEY "
                "(or ANTHROPIC_API_KEY_SSM_PARAMETER)"
            )
        routes = (
            () if llm == "none" else tuple(n for n, ok in configured.items() if ok and n != llm)
        )

        if store == "upstash" and not upstash_url:
            raise ConfigError("PROMPTCACHE_STORE=upstash needs UPSTASH_REDIS_REST_URL")
        verifier_model = _choice(env, "PROMPTCACHE_VERIFIER_MODEL", ("off", "local", "workers-ai"))
        if (
            "workers-ai" in (embedder, llm, verifier_model) or stats == "cloudflare-kv"
        ) and not has_cf:
            raise ConfigError(
                "Workers AI / KV need CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN "
                "(or CLOUDFLARE_API_TOKEN_SSM_PARAMETER)"
            )
        index = _choice(env, "PROMPTCACHE_INDEX", ("process", "redis", "upstash-vector"))
        redis_url = _str(env, "PROMPTCACHE_REDIS_URL")
        redis_url_param = _str(env, "PROMPTCACHE_REDIS_URL_SSM_PARAMETER")
        vector_url = _str(env, "UPSTASH_VECTOR_REST_URL")
        vector_token = _str(env, "UPSTASH_VECTOR_REST_TOKEN")
        vector_token_param = _str(env, "UPSTASH_VECTOR_REST_TOKEN_SSM_PARAMETER")
        if index == "redis" and not (redis_url or redis_url_param):
            raise ConfigError(
                "PROMPTCACHE_INDEX=redis needs PROMPTCACHE_REDIS_URL "
                "(or PROMPTCACHE_REDIS_URL_SSM_PARAMETER)"
            )
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                "PROMPTCACHE_REDIS_URL must start with redis://, rediss:// or unix://"
            )
        if index == "upstash-vector" and not (vector_url and (vector_token or vector_token_param)):
            raise ConfigError(
                "PROMPTCACHE_INDEX=upstash-vector needs UPSTASH_VECTOR_REST_URL and "
                "UPSTASH_VECTOR_REST_TOKEN (or UPSTASH_VECTOR_REST_TOKEN_SSM_PARAMETER)"
            )
        if stats == "cloudflare-kv" and not kv_ns:
            raise ConfigError("PROMPTCACHE_STATS=cloudflare-kv needs CLOUDFLARE_KV_NAMESPACE_ID")

        model = _str(env, "PROMPTCACHE_MODEL") or {
            "workers-ai": "@cf/meta/llama-3.1-8b-instruct",
            "anthropic": DEFAULT_CLAUDE_MODEL,
        }.get(llm, "gpt-4o-mini")
        threshold_raw = env.get("PROMPTCACHE_THRESHOLD", "").strip()
        threshold = _float(env, "PROMPTCACHE_THRESHOLD", 0.0, 1.0) if threshold_raw else None

        return cls(
            data_dir=Path(_str(env, "PROMPTCACHE_DATA_DIR")).expanduser(),
            store=store,
            embedder=embedder,
            stats=stats,
            llm=llm,
            model=model,
            threshold=threshold,
            ttl_seconds=_int(env, "PROMPTCACHE_TTL_SECONDS", 0, 10 * 365 * 86400),
            max_body_bytes=_int(env, "PROMPTCACHE_MAX_BODY_BYTES", 1024, 6 * 1024 * 1024),
            max_prompt_chars=_int(env, "PROMPTCACHE_MAX_PROMPT_CHARS", 1, 1_000_000),
            max_messages=_int(env, "PROMPTCACHE_MAX_MESSAGES", 1, 10_000),
            api_keys=parse_api_keys(_str(env, "PROMPTCACHE_API_KEYS")),
            api_keys_ssm_parameter=_str(env, "PROMPTCACHE_API_KEYS_SSM_PARAMETER"),
            rate_limit_per_minute=_int(env, "PROMPTCACHE_RATE_LIMIT_PER_MINUTE", 0, 10**9),
            cors_origins=_str(env, "PROMPTCACHE_CORS_ORIGINS"),
            upstream_timeout=_float(env, "PROMPTCACHE_UPSTREAM_TIMEOUT", 0.1, 900.0),
            backend_timeout=_float(env, "PROMPTCACHE_BACKEND_TIMEOUT", 0.05, 120.0),
            price_per_1k_tokens=_float(env, "PROMPTCACHE_PRICE_PER_1K_TOKENS", 0.0, 1000.0),
            openai_base_url=openai_url,
            openai_api_key=openai_key,
            cloudflare_account_id=cf_account,
            cloudflare_api_token=cf_token,
            cloudflare_api_token_ssm_parameter=cf_token_param,
            cloudflare_kv_namespace_id=kv_ns,
            cloudflare_api_base_url=_str(env, "CLOUDFLARE_API_BASE_URL").rstrip("/"),
            upstash_url=upstash_url.rstrip("/"),
            upstash_token=_str(env, "UPSTASH_REDIS_REST_TOKEN"),
            upstash_token_ssm_parameter=_str(env, "UPSTASH_REDIS_REST_TOKEN_SSM_PARAMETER"),
            upstash_chunk_bytes=_int(env, "PROMPTCACHE_UPSTASH_CHUNK_BYTES", 4096, 2**28),
            strict_guards=_choice(env, "PROMPTCACHE_STRICT_GUARDS", ("off", "on")),
            strict_guards_band=_float(env, "PROMPTCACHE_STRICT_GUARDS_BAND", 0.0, 1.0),
            verifier_model=verifier_model,
            verifier_cutoff=_float(env, "PROMPTCACHE_VERIFIER_CUTOFF", 0.0, 1.0),
            verifier_below=_float(env, "PROMPTCACHE_VERIFIER_BELOW", 0.0, 1.0),
            verifier_model_band=_float(env, "PROMPTCACHE_VERIFIER_MODEL_BAND", 0.0, 1.0),
            verifier_timeout=_float(env, "PROMPTCACHE_VERIFIER_TIMEOUT", 0.001, 60.0),
            admin_key=_admin_digest(_str(env, "PROMPTCACHE_ADMIN_KEY")),
            admin_key_ssm_parameter=_str(env, "PROMPTCACHE_ADMIN_KEY_SSM_PARAMETER"),
            max_namespaces=_int(env, "PROMPTCACHE_MAX_NAMESPACES", 1, 10**6),
            max_entries_per_namespace=_int(env, "PROMPTCACHE_MAX_ENTRIES_PER_NAMESPACE", 1, 10**8),
            index=index,
            redis_url=redis_url,
            redis_url_ssm_parameter=redis_url_param,
            redis_algorithm=_choice(env, "PROMPTCACHE_REDIS_ALGORITHM", ("flat", "hnsw")),
            redis_ef_runtime=_int(env, "PROMPTCACHE_REDIS_EF_RUNTIME", 1, 100_000),
            upstash_vector_url=vector_url.rstrip("/"),
            upstash_vector_token=vector_token,
            upstash_vector_token_ssm_parameter=vector_token_param,
            semantic_tools=_choice(env, "PROMPTCACHE_SEMANTIC_TOOLS", ("off", "on")) == "on",
            max_n=_int(env, "PROMPTCACHE_MAX_N", 1, 128),
            anthropic_api_key=claude_key,
            anthropic_api_key_ssm_parameter=claude_key_param,
            anthropic_base_url=_str(env, "ANTHROPIC_BASE_URL").rstrip("/"),
            anthropic_max_tokens=_int(env, "PROMPTCACHE_ANTHROPIC_MAX_TOKENS", 1, 1_000_000),
            llm_routes=routes,
        )
