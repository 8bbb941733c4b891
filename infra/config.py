"""The stack's configuration, read once and validated into a frozen object.

Every key is declared, typed and described in Pulumi.yaml, which also holds the defaults: the
Pulumi CLI applies them before the program runs, so this module requires every key and only
checks the values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pulumi

from infra.build import ARCHITECTURES, LAMBDA_PYTHONS, REPO

PROJECT = "promptcache"
#: CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: promptcache:semanticIndex: each function's own in-process index, or an Upstash Vector index.
SEMANTIC_INDEXES = ("process", "upstash-vector")
#: promptcache:verifier: on the chat functions, the trained verifier (its layer), the Workers AI
#: reranker, or none.
VERIFIERS = ("off", "local", "workers-ai")
#: Upstash Vector plans (the provider's ``type``).
VECTOR_INDEX_PLANS = ("free", "paid", "fixed", "pro")
#: An HTTP API waits for an integration 30 s at most (not adjustable).
HTTP_API_MAX_TIMEOUT_SECONDS = 30
#: A Lambda function runs 900 s at most; a Function URL waits as long.
LAMBDA_MAX_TIMEOUT_SECONDS = 900
#: The first Lambda Web Adapter layer version (1.0.0) with the settings the streaming function uses.
WEB_ADAPTER_MIN_LAYER_VERSION = 27
#: Region prefixes outside the aws partition, where AWS publishes the adapter layer elsewhere.
_OTHER_PARTITIONS = ("cn-", "us-gov-", "us-iso", "eusc-")
_STAGE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")


class ConfigError(pulumi.RunError):
    """A stack setting is missing or invalid; the message names the key and what to set."""


@dataclass(frozen=True)
class StackConfig:
    stage: str
    architecture: str
    python_version: str
    memory_mb: int
    timeout_seconds: int
    log_retention_days: int
    log_level: str
    throttle_rate_limit: int
    throttle_burst_limit: int
    cors_allow_origins: tuple[str, ...]
    cloudflare_account_id: str
    cloudflare_api_token: pulumi.Output[str]
    api_keys: pulumi.Output[str] | None
    upstash_primary_region: str
    upstash_budget: int
    upstash_eviction: bool
    secrets_kms_key_arn: str | None
    model: str | None
    threshold: str | None
    ttl_seconds: int
    rate_limit_per_minute: int
    build_dir: Path
    #: The optional streaming endpoint (a Function URL); off unless promptcache:streamingUrl.
    streaming_url: bool = False
    streaming_timeout_seconds: int = 300
    web_adapter_layer_version: int = 30
    aws_region: str = ""
    #: The optional admin key (promptcache:adminKey): reads every tenant's /stats and /v1/models
    #: and answers the admin API (/admin/...).
    admin_key: pulumi.Output[str] | None = None
    #: The optional Anthropic key (promptcache:anthropicApiKey): Claude is the default upstream.
    anthropic_api_key: pulumi.Output[str] | None = None
    #: Where the semantic tier searches (promptcache:semanticIndex): process or upstash-vector.
    semantic_index: str = "process"
    vector_index_plan: str = "paid"
    #: The verifier (promptcache:verifier): off, local (the verifier layer) or workers-ai.
    verifier: str = "off"

    @property
    def prefix(self) -> str:
        """Every physical name starts with it: ``promptcache-<stage>``."""
        return f"{PROJECT}-{self.stage}"

    @property
    def tags(self) -> dict[str, str]:
        return {"project": PROJECT, "stage": self.stage, "managed-by": "pulumi"}

    @property
    def runtime(self) -> str:
        return f"python{self.python_version}"

    @property
    def upstream_timeout_seconds(self) -> int:
        """The model call ends before the function and the gateway give up."""
        return max(1, self.timeout_seconds - 3)

    @property
    def streaming_upstream_timeout_seconds(self) -> int:
        """The streaming function's model call ends before the function gives up."""
        return max(1, self.streaming_timeout_seconds - 3)

    @classmethod
    def load(cls, config: pulumi.Config | None = None, stage: str | None = None) -> StackConfig:
        config = config or pulumi.Config(PROJECT)
        stage = stage or pulumi.get_stack()
        if not _STAGE.match(stage):
            raise ConfigError(
                f"stack name {stage!r} becomes part of every resource name: use 1-20 lowercase "
                "letters, digits or hyphens, starting with a letter (dev, staging, prod)"
            )

        def integer(key: str, lo: int, hi: int) -> int:
            value = config.require_int(key)
            if not lo <= value <= hi:
                raise ConfigError(f"{PROJECT}:{key} must be between {lo} and {hi}; got {value}")
            return value

        def choice(key: str, choices: tuple[str, ...]) -> str:
            value = config.require(key)
            if value not in choices:
                raise ConfigError(
                    f"{PROJECT}:{key} must be one of {', '.join(choices)}; got {value!r}"
                )
            return value

        retention = config.require_int("logRetentionDays")
        if retention not in LOG_RETENTION_DAYS:
            raise ConfigError(
                f"{PROJECT}:logRetentionDays must be one of CloudWatch's periods "
                f"({', '.join(map(str, LOG_RETENTION_DAYS))}); got {retention}"
            )
        origins = config.require_object("corsAllowOrigins")
        if (
            not isinstance(origins, list)
            or not origins
            or not all(isinstance(o, str) and o for o in origins)
        ):
            raise ConfigError(f"{PROJECT}:corsAllowOrigins must be a non-empty list of origins")
        account = config.require("cloudflareAccountId").strip()
        if not re.fullmatch(r"[0-9a-f]{32}", account):
            raise ConfigError(
                f"{PROJECT}:cloudflareAccountId must be the 32-hex-digit id from the Cloudflare "
                f"dashboard; got {account!r}"
            )
        threshold = (config.get("threshold") or "").strip() or None
        if threshold is not None:
            try:
                ok = 0.0 <= float(threshold) <= 1.0
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(
                    f"{PROJECT}:threshold must be a number from 0 to 1 or empty; got {threshold!r}"
                )
        region = (config.get("upstashPrimaryRegion") or "").strip() or (
            pulumi.Config("aws").get("region") or ""
        )
        if not region:
            raise ConfigError(
                f"set aws:region (or {PROJECT}:upstashPrimaryRegion for the Upstash database)"
            )
        kms = (config.get("secretsKmsKeyArn") or "").strip() or None
        if kms is not None and not kms.startswith("arn:"):
            raise ConfigError(
                f"{PROJECT}:secretsKmsKeyArn must be a KMS key ARN or empty; got {kms!r}"
            )
        burst = integer("throttleBurstLimit", 1, 5000)
        rate = integer("throttleRateLimit", 1, 10000)
        build_dir = Path(config.require("buildDir"))
        streaming = config.require_bool("streamingUrl")
        streaming_timeout = integer("streamingTimeoutSeconds", 3, LAMBDA_MAX_TIMEOUT_SECONDS)
        adapter_version = integer("webAdapterLayerVersion", WEB_ADAPTER_MIN_LAYER_VERSION, 10_000)
        aws_region = (pulumi.Config("aws").get("region") or "").strip()
        semantic_index = choice("semanticIndex", SEMANTIC_INDEXES)
        vector_plan = choice("vectorIndexPlan", VECTOR_INDEX_PLANS)
        verifier = choice("verifier", VERIFIERS)
        if streaming and (not aws_region or aws_region.startswith(_OTHER_PARTITIONS)):
            raise ConfigError(
                f"{PROJECT}:streamingUrl needs aws:region set to a region of the aws partition, "
                f"where the Lambda Web Adapter layer is published by account 753240598075; "
                f"got {aws_region!r}"
            )
        return cls(
            stage=stage,
            architecture=choice("lambdaArchitecture", tuple(ARCHITECTURES)),
            python_version=choice("pythonVersion", tuple(LAMBDA_PYTHONS)),
            memory_mb=integer("memorySize", 128, 10240),
            timeout_seconds=integer("timeoutSeconds", 3, HTTP_API_MAX_TIMEOUT_SECONDS),
            log_retention_days=retention,
            log_level=choice("logLevel", LOG_LEVELS),
            throttle_rate_limit=rate,
            throttle_burst_limit=burst,
            cors_allow_origins=tuple(origins),
            cloudflare_account_id=account,
            cloudflare_api_token=config.require_secret("cloudflareApiToken"),
            api_keys=config.get_secret("apiKeys"),
            admin_key=config.get_secret("adminKey"),
            anthropic_api_key=config.get_secret("anthropicApiKey"),
            upstash_primary_region=region,
            upstash_budget=integer("upstashBudget", 1, 100_000),
            upstash_eviction=config.require_bool("upstashEviction"),
            secrets_kms_key_arn=kms,
            model=(config.get("model") or "").strip() or None,
            threshold=threshold,
            ttl_seconds=integer("ttlSeconds", 0, 10 * 365 * 86400),
            rate_limit_per_minute=integer("rateLimitPerMinute", 0, 10**9),
            build_dir=build_dir if build_dir.is_absolute() else REPO / build_dir,
            streaming_url=streaming,
            streaming_timeout_seconds=streaming_timeout,
            web_adapter_layer_version=adapter_version,
            aws_region=aws_region,
            semantic_index=semantic_index,
            vector_index_plan=vector_plan,
            verifier=verifier,
        )
