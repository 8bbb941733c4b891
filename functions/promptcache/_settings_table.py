"""Every setting: its name, default and meaning (the one list). docs/configuration.md's table is
generated from it (``promptcache settings``), and a test holds the two equal; ``settings`` parses
the environment against it.
"""

from __future__ import annotations

# Defaults stated once: the SETTINGS table (and so the docs and the parsers) and PromptCache's
# constructor (for a cache built without settings, as the tests do) both read these.
TTL_SECONDS = 7 * 86400
STRICT_GUARDS_BAND = 0.04
UPSTREAM_TIMEOUT = 60.0
PRICE_PER_1K_TOKENS = 0.002
UPSTASH_CHUNK_BYTES = 4 * 1024 * 1024
MAX_NAMESPACES = 256
MAX_ENTRIES_PER_NAMESPACE = 100_000
REDIS_EF_RUNTIME = 512
ANTHROPIC_MAX_TOKENS = 4096
DEFAULT_CLAUDE_MODEL = "claude-haiku-4-5"

#: Names still read for one release, each with its new name and how its values map (documented
#: as deprecated; a warning is logged when one is set).
DEPRECATED: dict[str, tuple[str, dict[str, str]]] = {
    "PROMPTCACHE_VERIFIER": ("PROMPTCACHE_STRICT_GUARDS", {"off": "off", "strict": "on"}),
    "PROMPTCACHE_VERIFIER_BAND": ("PROMPTCACHE_STRICT_GUARDS_BAND", {}),
}

#: name -> (default, description). The one list of every setting.
SETTINGS: dict[str, tuple[str, str]] = {
    "PROMPTCACHE_DATA_DIR": (
        "~/.local/share/promptcache",
        "Where the SQLite store (entries, vectors, stats) lives; shared by `serve` and the CLI.",
    ),
    "PROMPTCACHE_STORE": (
        "auto",
        "`sqlite`, `memory` or `upstash`; `auto` = `upstash` when UPSTASH_REDIS_REST_URL is set, "
        "else `sqlite`.",
    ),
    "PROMPTCACHE_INDEX": (
        "process",
        "Where the semantic tier searches: `process` (each process holds its namespaces' vectors, "
        "synced from the store), `redis` (Redis's query engine, PROMPTCACHE_REDIS_URL) or "
        "`upstash-vector` (Upstash Vector, UPSTASH_VECTOR_REST_URL). Entries stay in the store.",
    ),
    "PROMPTCACHE_REDIS_URL": (
        "",
        "`redis://` or `rediss://` URL of a Redis with the query engine (FT.*), for "
        "PROMPTCACHE_INDEX=redis.",
    ),
    "PROMPTCACHE_REDIS_URL_SSM_PARAMETER": (
        "",
        "SSM SecureString holding PROMPTCACHE_REDIS_URL (it may carry a password).",
    ),
    "PROMPTCACHE_REDIS_ALGORITHM": (
        "flat",
        "`flat` (exact scan on the server) or `hnsw` (approximate, sub-linear; tune "
        "PROMPTCACHE_REDIS_EF_RUNTIME: see [Backends](backends.md#server-side-semantic-index)).",
    ),
    "PROMPTCACHE_REDIS_EF_RUNTIME": (
        str(REDIS_EF_RUNTIME),
        "HNSW candidates a KNN query explores (more: better recall, slower); see "
        "[Backends](backends.md#server-side-semantic-index).",
    ),
    "UPSTASH_VECTOR_REST_URL": (
        "",
        "Upstash Vector REST endpoint (PROMPTCACHE_INDEX=upstash-vector; a COSINE index).",
    ),
    "UPSTASH_VECTOR_REST_TOKEN": ("", "Upstash Vector REST token."),
    "UPSTASH_VECTOR_REST_TOKEN_SSM_PARAMETER": (
        "",
        "SSM SecureString holding the Upstash Vector token (deployed: read once per cold start).",
    ),
    "PROMPTCACHE_EMBEDDER": (
        "auto",
        "`local` (bundled MiniLM, ONNX int8) or `workers-ai` (bge-base-en-v1.5); `auto` = "
        "`workers-ai` when Cloudflare credentials are set, else `local`.",
    ),
    "PROMPTCACHE_STATS": (
        "auto",
        "`store` (same backend as the store) or `cloudflare-kv`; `auto` = `cloudflare-kv` when "
        "CLOUDFLARE_KV_NAMESPACE_ID is set, else `store`.",
    ),
    "PROMPTCACHE_LLM": (
        "auto",
        "The default upstream: `openai` (any OpenAI-compatible server), `anthropic` (Claude) or "
        "`workers-ai`; `auto` = `openai` when OPENAI_BASE_URL or OPENAI_API_KEY is set, else "
        "`anthropic` when ANTHROPIC_API_KEY is, else `workers-ai` when Cloudflare credentials "
        "are, else none (misses answer 503). A request for another configured upstream's model "
        "(`claude-*`, `@cf/*`, `gpt-*`) goes to that one: see "
        "[Backends](backends.md#choosing-the-upstream).",
    ),
    "PROMPTCACHE_MODEL": (
        "",
        "Default model when a request names none (default: `gpt-4o-mini` for `openai`, "
        f"`{DEFAULT_CLAUDE_MODEL}` for `anthropic`, `@cf/meta/llama-3.1-8b-instruct` for "
        "`workers-ai`).",
    ),
    "PROMPTCACHE_THRESHOLD": (
        "",
        "Cosine similarity at or above which a stored prompt answers. Default: the value "
        "`promptcache calibrate` wrote for the active embedder in the data dir, else the "
        "embedder's default (0.92 for the local MiniLM, calibrated; 0.90 for Workers AI bge-base, "
        "not yet calibrated).",
    ),
    "PROMPTCACHE_STRICT_GUARDS": (
        "off",
        "`off` or `on`: `on` also rejects a candidate whose negation or target "
        '("into Spanish" vs "into German") differs; fewer false hits, fewer hits. Formerly '
        "PROMPTCACHE_VERIFIER=strict.",
    ),
    "PROMPTCACHE_STRICT_GUARDS_BAND": (
        f"{STRICT_GUARDS_BAND:g}",
        "The strict guards check only candidates whose similarity is below threshold + this "
        "band (borderline ones); 1 = every candidate. Formerly PROMPTCACHE_VERIFIER_BAND.",
    ),
    "PROMPTCACHE_VERIFIER_MODEL": (
        "off",
        "`off`, `local` or `workers-ai`: `local` asks the trained verifier (a MiniLM "
        "cross-encoder, int8 ONNX, in the package) about every candidate in its band; "
        "`workers-ai` asks Workers AI's `@cf/baai/bge-reranker-base` (not calibrated for this "
        "cache: measure a cutoff first). Either fails closed (an error is a miss).",
    ),
    "PROMPTCACHE_VERIFIER_CUTOFF": (
        "0.5",
        "The verifier's score (0..1, same intent) a candidate in its band needs to answer.",
    ),
    "PROMPTCACHE_VERIFIER_BELOW": (
        "0",
        "How far below the threshold the verifier may accept a candidate (0 = never below it).",
    ),
    "PROMPTCACHE_VERIFIER_MODEL_BAND": (
        "0.04",
        "The verifier judges candidates below threshold + this band; those above pass without "
        "it (1 = every candidate). 0.04: the measured trade ([The verifier](verifier.md)).",
    ),
    "PROMPTCACHE_VERIFIER_TIMEOUT": (
        "1",
        "Seconds one verifier call may take; a slower one is stopped and its candidates rejected.",
    ),
    "PROMPTCACHE_TTL_SECONDS": (
        str(TTL_SECONDS),
        "Default lifetime of a stored answer (0 = forever).",
    ),
    "PROMPTCACHE_MAX_NAMESPACES": (
        str(MAX_NAMESPACES),
        "Namespaces (tenant x model x parameters) whose vector index one process keeps in "
        "memory; past it the least recently used one's index is dropped (its entries stay "
        "stored) and reloaded from the store when next asked.",
    ),
    "PROMPTCACHE_MAX_ENTRIES_PER_NAMESPACE": (
        str(MAX_ENTRIES_PER_NAMESPACE),
        "Entries with a vector one namespace keeps; past it the least recently hit ones are "
        "deleted (beside the TTL).",
    ),
    "PROMPTCACHE_MAX_BODY_BYTES": ("262144", "Largest body cached (/chat: 413; /v1: uncached)."),
    "PROMPTCACHE_MAX_PROMPT_CHARS": ("32000", "Longest message cached (/chat 413, /v1 uncached)."),
    "PROMPTCACHE_MAX_MESSAGES": ("100", "Most messages cached (/chat: 413 above; /v1: uncached)."),
    "PROMPTCACHE_SEMANTIC_TOOLS": (
        "off",
        "`on`: tool- or schema-bound requests ending in a user turn may use the semantic tier.",
    ),
    "PROMPTCACHE_MAX_N": (
        "8",
        "Most choices (`n`) fanned out as calls (an OpenAI-compatible upstream takes `n` itself).",
    ),
    "PROMPTCACHE_API_KEYS": (
        "",
        "Comma-separated `key:tenant` pairs (a key may be given as `sha256:<hex>`, its digest); "
        "when set, requests need `Authorization: Bearer KEY` and each tenant gets its own cache. "
        "Empty = no auth, one tenant `default`.",
    ),
    "PROMPTCACHE_API_KEYS_SSM_PARAMETER": (
        "",
        "SSM SecureString holding PROMPTCACHE_API_KEYS (deployed: read once per cold start).",
    ),
    "PROMPTCACHE_ADMIN_KEY": (
        "",
        "With PROMPTCACHE_API_KEYS set: a key apart from the tenants' (plain or `sha256:<hex>`) "
        "that reads every tenant's `/stats` and `/v1/models` (a tenant's key reads its own "
        "only), answers the admin API (`/admin/...`) and chats for the tenant named by "
        "`X-Promptcache-Tenant`, where it may lower the threshold. Empty = no admin.",
    ),
    "PROMPTCACHE_ADMIN_KEY_SSM_PARAMETER": (
        "",
        "SSM SecureString holding PROMPTCACHE_ADMIN_KEY (deployed: read once per cold start).",
    ),
    "PROMPTCACHE_RATE_LIMIT_PER_MINUTE": (
        "0",
        "Requests per minute per tenant (0 = no limit; 429 above), counted in the store: "
        "every process and Lambda container sharing it shares the budget.",
    ),
    "PROMPTCACHE_CORS_ORIGINS": ("*", "Allowed CORS origin."),
    "PROMPTCACHE_UPSTREAM_TIMEOUT": (f"{UPSTREAM_TIMEOUT:g}", "Seconds to wait for the LLM."),
    "PROMPTCACHE_BACKEND_TIMEOUT": ("5", "Seconds to wait for the store, embedder and stats."),
    "PROMPTCACHE_PRICE_PER_1K_TOKENS": (
        f"{PRICE_PER_1K_TOKENS:g}",
        "USD per 1,000 tokens used to estimate the money saved by hits.",
    ),
    "OPENAI_BASE_URL": ("", "OpenAI-compatible upstream (Ollama, vLLM, llama.cpp, OpenAI)."),
    "OPENAI_API_KEY": ("", "API key for the OpenAI-compatible upstream."),
    "ANTHROPIC_API_KEY": ("", "API key for Claude (the Anthropic upstream)."),
    "ANTHROPIC_API_KEY_SSM_PARAMETER": (
        "",
        "SSM SecureString holding the Anthropic key (deployed: read once per cold start).",
    ),
    "ANTHROPIC_BASE_URL": (
        "https://api.anthropic.com",
        "Anthropic API base (a stand-in's URL in tests).",
    ),
    "PROMPTCACHE_ANTHROPIC_MAX_TOKENS": (
        str(ANTHROPIC_MAX_TOKENS),
        "`max_tokens` sent to Claude when a request sets none (Claude requires one).",
    ),
    "CLOUDFLARE_ACCOUNT_ID": ("", "Cloudflare account for Workers AI and KV."),
    "CLOUDFLARE_API_TOKEN": ("", "Cloudflare API token (Workers AI + KV edit)."),
    "CLOUDFLARE_API_TOKEN_SSM_PARAMETER": (
        "",
        "SSM SecureString holding the Cloudflare token (deployed: read once per cold start).",
    ),
    "CLOUDFLARE_KV_NAMESPACE_ID": ("", "Workers KV namespace holding the durable stats."),
    "CLOUDFLARE_API_BASE_URL": (
        "https://api.cloudflare.com/client/v4",
        "Cloudflare API base (a stand-in's URL in tests).",
    ),
    "UPSTASH_REDIS_REST_URL": ("", "Upstash Redis REST endpoint."),
    "UPSTASH_REDIS_REST_TOKEN": ("", "Upstash Redis REST token."),
    "UPSTASH_REDIS_REST_TOKEN_SSM_PARAMETER": (
        "",
        "SSM SecureString holding the Upstash token (deployed: read once per cold start).",
    ),
    "PROMPTCACHE_UPSTASH_CHUNK_BYTES": (
        str(UPSTASH_CHUNK_BYTES),
        "Bytes of a namespace's vector log read per Upstash request when loading it (>= 4096).",
    ),
}
