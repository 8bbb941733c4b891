"""The whole stack of one stage, composed from the components: what ``__main__`` deploys.

Order of the data flow: the Cloudflare KV namespace and the Upstash database come first; their
id, URL and token (with the Cloudflare API token from config) feed the SSM secrets and the
functions' environment; the functions feed the HTTP API. With ``promptcache:streamingUrl``, one
more function serves the same routes through a Function URL that streams (components/streaming.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pulumi

from infra import artifacts as artifacts_mod
from infra.artifacts import Artifacts
from infra.components.cloudflare_kv import StatsNamespace, StatsNamespaceArgs
from infra.components.function import HandlerFunction, HandlerFunctionArgs
from infra.components.http_api import FunctionTarget, HttpApi, HttpApiArgs
from infra.components.layer import CoreLayer, CoreLayerArgs
from infra.components.secrets import SecretParameters, SecretParametersArgs
from infra.components.streaming import (
    StreamingEndpoint,
    StreamingEndpointArgs,
    web_adapter_layer_arn,
)
from infra.components.upstash import (
    CacheDatabase,
    CacheDatabaseArgs,
    CacheVectorIndex,
    CacheVectorIndexArgs,
)
from infra.config import StackConfig
from promptcache.routes import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS, ROUTES

#: The handler that answers requests no route matches (its resolver returns the JSON 404/405).
FALLBACK_HANDLER = "health"
#: Headers the browser may read on a cross-origin response.
ALLOW_HEADERS = tuple(header.lower() for header in CORS_ALLOW_HEADERS)
EXPOSE_HEADERS = tuple(header.lower() for header in CORS_EXPOSE_HEADERS)
#: SSM parameter names (under /promptcache/<stage>) of the secrets.
CLOUDFLARE_TOKEN_PARAMETER = "cloudflare-api-token"
UPSTASH_TOKEN_PARAMETER = "upstash-redis-rest-token"
VECTOR_TOKEN_PARAMETER = "upstash-vector-rest-token"
#: The deployed embedder's dimension (Workers AI @cf/baai/bge-base-en-v1.5).
DEPLOYED_EMBEDDER_DIM = 768
API_KEYS_PARAMETER = "api-keys"
ADMIN_KEY_PARAMETER = "admin-key"
ANTHROPIC_KEY_PARAMETER = "anthropic-api-key"
#: The streaming function's name after the prefix (promptcache:streamingUrl).
STREAMING_FUNCTION = "chat-stream"
#: The handler modules that answer chat and so may ask the verifier (the streaming function, which
#: serves every route, too); the others never load it.
VERIFIED_MODULES = ("chat",)


def handler_modules(routes: Mapping[tuple[str, str], str] = ROUTES) -> list[str]:
    """One function per handler module named by the routes (plus the fallback)."""
    return sorted(set(routes.values()) | {FALLBACK_HANDLER})


def function_environment(
    cfg: StackConfig,
    *,
    kv_namespace_id: pulumi.Input[str],
    upstash_rest_url: pulumi.Input[str],
    secret_parameter_names: Mapping[str, pulumi.Input[str]],
    vector_rest_url: pulumi.Input[str] | None = None,
) -> dict[str, pulumi.Input[str]]:
    """The functions' settings (names from promptcache.settings.SETTINGS): secrets only by the
    name of the SSM parameter that holds them."""
    env: dict[str, pulumi.Input[str]] = {
        "PROMPTCACHE_STORE": "upstash",
        "PROMPTCACHE_EMBEDDER": "workers-ai",
        "PROMPTCACHE_LLM": "workers-ai",
        "PROMPTCACHE_STATS": "cloudflare-kv",
        "PROMPTCACHE_TTL_SECONDS": str(cfg.ttl_seconds),
        "PROMPTCACHE_RATE_LIMIT_PER_MINUTE": str(cfg.rate_limit_per_minute),
        "PROMPTCACHE_UPSTREAM_TIMEOUT": str(cfg.upstream_timeout_seconds),
        "CLOUDFLARE_ACCOUNT_ID": cfg.cloudflare_account_id,
        "CLOUDFLARE_KV_NAMESPACE_ID": kv_namespace_id,
        "CLOUDFLARE_API_TOKEN_SSM_PARAMETER": secret_parameter_names[CLOUDFLARE_TOKEN_PARAMETER],
        "UPSTASH_REDIS_REST_URL": upstash_rest_url,
        "UPSTASH_REDIS_REST_TOKEN_SSM_PARAMETER": secret_parameter_names[UPSTASH_TOKEN_PARAMETER],
        "POWERTOOLS_SERVICE_NAME": "promptcache",
        "POWERTOOLS_METRICS_NAMESPACE": f"promptcache-{cfg.stage}",
        "POWERTOOLS_LOG_LEVEL": cfg.log_level,
        # explicit, so no function loads the verifier by a default: verified_environment turns
        # it on where its layer is attached
        "PROMPTCACHE_VERIFIER_MODEL": "off",
    }
    if API_KEYS_PARAMETER in secret_parameter_names:
        env["PROMPTCACHE_API_KEYS_SSM_PARAMETER"] = secret_parameter_names[API_KEYS_PARAMETER]
    if ADMIN_KEY_PARAMETER in secret_parameter_names:
        env["PROMPTCACHE_ADMIN_KEY_SSM_PARAMETER"] = secret_parameter_names[ADMIN_KEY_PARAMETER]
    if ANTHROPIC_KEY_PARAMETER in secret_parameter_names:  # Claude answers, Workers AI by @cf/
        env["PROMPTCACHE_LLM"] = "anthropic"
        env["ANTHROPIC_API_KEY_SSM_PARAMETER"] = secret_parameter_names[ANTHROPIC_KEY_PARAMETER]
    env["PROMPTCACHE_INDEX"] = cfg.semantic_index
    if vector_rest_url is not None:
        env["UPSTASH_VECTOR_REST_URL"] = vector_rest_url
        env["UPSTASH_VECTOR_REST_TOKEN_SSM_PARAMETER"] = secret_parameter_names[
            VECTOR_TOKEN_PARAMETER
        ]
    if cfg.model:
        env["PROMPTCACHE_MODEL"] = cfg.model
    if cfg.threshold:
        env["PROMPTCACHE_THRESHOLD"] = cfg.threshold
    return env


def verified_environment(
    cfg: StackConfig, environment: Mapping[str, pulumi.Input[str]]
) -> dict[str, pulumi.Input[str]]:
    """A chat function's settings: the others', with the trained verifier as the stack sets it."""
    return {**environment, "PROMPTCACHE_VERIFIER_MODEL": cfg.verifier}


def streaming_environment(
    cfg: StackConfig, environment: Mapping[str, pulumi.Input[str]]
) -> dict[str, pulumi.Input[str]]:
    """The streaming function's settings: the other functions', with the model given the
    streaming function's longer timeout (the component adds the Web Adapter's own)."""
    return {
        **environment,
        "PROMPTCACHE_UPSTREAM_TIMEOUT": str(cfg.streaming_upstream_timeout_seconds),
    }


@dataclass
class Deployment:
    config: StackConfig
    kv: StatsNamespace
    database: CacheDatabase
    secrets: SecretParameters
    layer: CoreLayer
    functions: dict[str, HandlerFunction]
    api: HttpApi
    environment: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    streaming: StreamingEndpoint | None = None
    vector: CacheVectorIndex | None = None
    verifier_layer: CoreLayer | None = None

    @property
    def outputs(self) -> dict[str, pulumi.Input[object]]:
        """The stack outputs: endpoints and names, never a secret."""
        names: dict[str, pulumi.Input[str]] = {m: fn.name for m, fn in self.functions.items()}
        streaming: dict[str, pulumi.Input[object]] = {}
        if self.vector is not None:
            streaming["upstashVectorEndpoint"] = self.vector.endpoint
        if self.streaming is not None:
            names[STREAMING_FUNCTION] = self.streaming.function_name
            streaming["streamingUrl"] = self.streaming.url
        return {
            "stage": self.config.stage,
            "apiUrl": self.api.url,
            "functionNames": names,
            "layerArn": self.layer.arn,
            **(
                {} if self.verifier_layer is None else {"verifierLayerArn": self.verifier_layer.arn}
            ),
            "kvNamespaceId": self.kv.id,
            "upstashEndpoint": self.database.endpoint,
            "secretParameterNames": self.secrets.names,
            **streaming,
        }


def deploy(cfg: StackConfig, built: Artifacts | None = None) -> Deployment:
    modules = handler_modules()
    verified = cfg.verifier == "local"
    built = built or artifacts_mod.load(
        cfg.build_dir, cfg.architecture, cfg.python_version, modules, verifier=verified
    )

    kv = StatsNamespace(
        f"{cfg.prefix}-stats",
        StatsNamespaceArgs(account_id=cfg.cloudflare_account_id, title=f"{cfg.prefix}-stats"),
    )
    database = CacheDatabase(
        f"{cfg.prefix}-cache",
        CacheDatabaseArgs(
            name=f"{cfg.prefix}-cache",
            primary_region=cfg.upstash_primary_region,
            budget=cfg.upstash_budget,
            eviction=cfg.upstash_eviction,
        ),
    )
    vector = None
    if cfg.semantic_index == "upstash-vector":
        vector = CacheVectorIndex(
            f"{cfg.prefix}-index",
            CacheVectorIndexArgs(
                name=f"{cfg.prefix}-index",
                region=cfg.upstash_primary_region,
                dimension=DEPLOYED_EMBEDDER_DIM,
                plan=cfg.vector_index_plan,
            ),
        )
    secrets = SecretParameters(
        f"{cfg.prefix}-secrets",
        SecretParametersArgs(
            path=f"/promptcache/{cfg.stage}",
            values={
                CLOUDFLARE_TOKEN_PARAMETER: cfg.cloudflare_api_token,
                UPSTASH_TOKEN_PARAMETER: database.rest_token,
                **({VECTOR_TOKEN_PARAMETER: vector.rest_token} if vector is not None else {}),
                **({API_KEYS_PARAMETER: cfg.api_keys} if cfg.api_keys is not None else {}),
                **({ADMIN_KEY_PARAMETER: cfg.admin_key} if cfg.admin_key is not None else {}),
                **(
                    {ANTHROPIC_KEY_PARAMETER: cfg.anthropic_api_key}
                    if cfg.anthropic_api_key is not None
                    else {}
                ),
            },
            kms_key_arn=cfg.secrets_kms_key_arn,
            tags=cfg.tags,
        ),
    )

    def layer_from(suffix: str, zip_path: Path, code_hash: str, description: str) -> CoreLayer:
        return CoreLayer(
            f"{cfg.prefix}-{suffix}",
            CoreLayerArgs(
                name=f"{cfg.prefix}-{suffix}",
                zip_path=zip_path,
                source_code_hash=code_hash,
                runtime=cfg.runtime,
                architecture=cfg.architecture,
                description=description,
            ),
        )

    layer = layer_from(
        "core",
        built.layer_zip,
        built.layer_hash,
        "promptcache core package and its runtime dependencies",
    )
    verifier_layer = None
    if verified:
        if built.verifier_zip is None:
            command = artifacts_mod.build_command(
                cfg.architecture, cfg.python_version, cfg.build_dir
            )
            raise artifacts_mod.ArtifactError(
                "promptcache:verifier is local but the artifacts hold no verifier layer: "
                f"run `{command}`"
            )
        verifier_layer = layer_from(
            "verifier",
            built.verifier_zip,
            built.verifier_hash,
            "promptcache verifier: onnxruntime, tokenizers, the trained weights",
        )
    verifier_layers: list[pulumi.Input[str]] = (
        [] if verifier_layer is None else [verifier_layer.arn]
    )
    environment = function_environment(
        cfg,
        kv_namespace_id=kv.id,
        upstash_rest_url=database.rest_url,
        secret_parameter_names=secrets.names,
        vector_rest_url=None if vector is None else vector.rest_url,
    )

    def function_args(
        name: str,
        module: str,
        timeout: int,
        env: Mapping[str, pulumi.Input[str]],
        extra_layers: Sequence[pulumi.Input[str]] = (),
    ) -> HandlerFunctionArgs:
        return HandlerFunctionArgs(
            name=name,
            module=module,
            code_zip=built.functions_zip,
            code_hash=built.functions_hash,
            layer_arn=layer.arn,
            runtime=cfg.runtime,
            architecture=cfg.architecture,
            memory_mb=cfg.memory_mb,
            timeout_seconds=timeout,
            environment=env,
            log_retention_days=cfg.log_retention_days,
            secret_parameter_arns=list(secrets.arns.values()),
            kms_key_arn=cfg.secrets_kms_key_arn,
            tags=cfg.tags,
            extra_layer_arns=extra_layers,
        )

    def module_args(module: str) -> HandlerFunctionArgs:
        name = f"{cfg.prefix}-{module}"
        if module in VERIFIED_MODULES:
            env = verified_environment(cfg, environment)
            return function_args(name, module, cfg.timeout_seconds, env, verifier_layers)
        return function_args(name, module, cfg.timeout_seconds, environment)

    functions = {
        module: HandlerFunction(f"{cfg.prefix}-{module}", module_args(module)) for module in modules
    }
    api = HttpApi(
        f"{cfg.prefix}-http",
        HttpApiArgs(
            name=cfg.prefix,
            routes=dict(ROUTES),
            functions={
                m: FunctionTarget(name=f.name, invoke_arn=f.invoke_arn)
                for m, f in functions.items()
            },
            fallback=FALLBACK_HANDLER,
            cors_allow_origins=cfg.cors_allow_origins,
            cors_allow_headers=ALLOW_HEADERS,
            cors_expose_headers=EXPOSE_HEADERS,
            throttle_rate_limit=cfg.throttle_rate_limit,
            throttle_burst_limit=cfg.throttle_burst_limit,
            integration_timeout_ms=cfg.timeout_seconds * 1000,
            log_retention_days=cfg.log_retention_days,
            tags=cfg.tags,
        ),
    )
    streaming = None
    if cfg.streaming_url:
        streaming = StreamingEndpoint(
            f"{cfg.prefix}-stream",
            StreamingEndpointArgs(
                function=function_args(
                    f"{cfg.prefix}-{STREAMING_FUNCTION}",
                    STREAMING_FUNCTION,
                    cfg.streaming_timeout_seconds,
                    streaming_environment(cfg, verified_environment(cfg, environment)),
                    verifier_layers,
                ),
                adapter_layer_arn=web_adapter_layer_arn(
                    cfg.aws_region, cfg.architecture, cfg.web_adapter_layer_version
                ),
                cors_allow_origins=cfg.cors_allow_origins,
                cors_allow_methods=sorted({method for method, _ in ROUTES}),
                cors_allow_headers=ALLOW_HEADERS,
                cors_expose_headers=EXPOSE_HEADERS,
            ),
        )
    return Deployment(
        cfg,
        kv,
        database,
        secrets,
        layer,
        functions,
        api,
        environment,
        streaming,
        vector,
        verifier_layer,
    )
