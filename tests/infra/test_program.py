"""The Pulumi program, run as `pulumi up` would run it, against recording mocks."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra.artifacts import ArtifactError
from infra.components.http_api import ACCESS_LOG_FORMAT
from infra.config import ConfigError
from promptcache.routes import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS, ROUTES
from promptcache.settings import SETTINGS, Settings
from tests.infra.conftest import (
    ACCOUNT,
    CF_ACCOUNT_ID,
    CF_TOKEN,
    REGION,
    REPO,
    SECRET_VALUES,
    UPSTASH_TOKEN,
    VECTOR_TOKEN,
    ProgramRun,
    api_id,
    clear_strings,
    is_secret,
    kv_namespace_id,
    project_file,
    run_program,
    stack_file,
)

pytestmark = pytest.mark.infra

FUNCTION = "aws:lambda/function:Function"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
PARAMETER = "aws:ssm/parameter:Parameter"
LAYER = "aws:lambda/layerVersion:LayerVersion"
API = "aws:apigatewayv2/api:Api"
INTEGRATION = "aws:apigatewayv2/integration:Integration"
ROUTE = "aws:apigatewayv2/route:Route"
STAGE = "aws:apigatewayv2/stage:Stage"
PERMISSION = "aws:lambda/permission:Permission"
KV = "cloudflare:index/workersKvNamespace:WorkersKvNamespace"
REDIS = "upstash:index/redisDatabase:RedisDatabase"
VECTOR = "upstash:index/vectorIndex:VectorIndex"
MODULES = sorted(set(ROUTES.values()) | {"health"})
STAGES = ("dev", "staging", "prod")


# ---------------------------------------------------------------- project and stack files
def test_every_project_key_is_typed_and_described() -> None:
    config = project_file()["config"]
    for key, decl in config.items():
        assert ":" not in key, f"{key}: provider keys are set per stack, not declared here"
        assert isinstance(decl, dict), f"{key} is not a declaration"
        assert decl.get("type") in ("string", "integer", "boolean", "array"), key
        assert len(decl.get("description", "")) > 20, f"{key} needs a description"
        if decl["type"] == "array":
            assert decl["items"]["type"] == "string", key
        if decl.get("secret"):
            assert "default" not in decl, f"secret {key} must not have a default"


def test_the_program_reads_exactly_the_declared_keys() -> None:
    source = (REPO / "infra" / "config.py").read_text(encoding="utf-8")
    read = set(
        re.findall(r'(?:config\.(?:require\w*|get\w*)|integer|choice)\("([a-zA-Z]+)"', source)
    )
    assert read == set(project_file()["config"])


_PY_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list}


@pytest.mark.parametrize("stage", STAGES)
def test_example_stack_files_are_valid_for_the_project(stage: str) -> None:
    """What the CLI checks before running the program: declared keys, right types, no secret in
    clear, no ciphertext copied from someone else's stack."""
    declared = project_file()["config"]
    text = (REPO / f"Pulumi.{stage}.yaml").read_text(encoding="utf-8")
    assert "secure:" not in text and "encryptionsalt" not in text
    config = stack_file(stage)["config"]
    assert config.get("aws:region")
    for key, value in config.items():
        namespace, _, name = key.partition(":")
        if namespace != "promptcache":
            continue
        assert name in declared, f"{key} is not declared in Pulumi.yaml"
        decl = declared[name]
        assert not decl.get("secret"), f"secret {key} must be set with --secret, not written here"
        expected = _PY_TYPES[decl["type"]]
        assert isinstance(value, expected) and not (expected is int and isinstance(value, bool)), (
            key
        )
    # Every key without a default is named in the file's instructions.
    for name, decl in declared.items():
        if "default" not in decl:
            assert f"promptcache:{name}" not in config
            flag = "--secret " if decl.get("secret") else ""
            assert f"pulumi config set {flag}promptcache:{name}" in text, name
    for provider_secret in ("cloudflare:apiToken", "upstash:apiKey"):
        assert f"pulumi config set --secret {provider_secret}" in text


# ---------------------------------------------------------------- resources
def test_every_resource_exists(dev: ProgramRun) -> None:
    counts = {t: len(dev.of_type(t)) for t in {r.typ for r in dev.resources}}
    routes = len(ROUTES) + 1  # plus $default
    assert counts == {
        "promptcache:index:StatsNamespace": 1,
        "promptcache:index:CacheDatabase": 1,
        "promptcache:index:SecretParameters": 1,
        "promptcache:index:CoreLayer": 1,
        "promptcache:index:HandlerFunction": len(MODULES),
        "promptcache:index:FunctionRole": len(MODULES),
        "promptcache:index:HttpApi": 1,
        KV: 1,
        REDIS: 1,
        PARAMETER: 2,
        LAYER: 1,
        LOG_GROUP: len(MODULES) + 1,
        ROLE: len(MODULES),
        ROLE_POLICY: len(MODULES),
        FUNCTION: len(MODULES),
        API: 1,
        INTEGRATION: len(set(ROUTES.values()) | {"health"}),
        ROUTE: routes,
        PERMISSION: routes,
        STAGE: 1,
    }


def test_functions(dev: ProgramRun, artifacts_dir: Path) -> None:
    functions = dev.by_name(FUNCTION)
    assert sorted(functions) == [f"promptcache-dev-{m}" for m in MODULES]
    (layer,) = dev.inputs(LAYER)
    layer_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:promptcache-dev-core:1"
    for module in MODULES:
        fn = functions[f"promptcache-dev-{module}"]
        assert fn["runtime"] == "python3.12"
        assert fn["architectures"] == ["arm64"]
        assert fn["handler"] == f"{module}.lambda_handler"
        assert fn["memorySize"] == 1024 and fn["timeout"] == 29
        assert fn["tracingConfig"] == {"mode": "Active"}
        assert fn["layers"] == [layer_arn]
        assert fn["role"] == f"arn:aws:iam::{ACCOUNT}:role/promptcache-dev-{module}"
        assert fn["loggingConfig"]["logGroup"] == f"/aws/lambda/promptcache-dev-{module}"
        assert isinstance(fn["code"], pulumi.FileArchive)
        assert Path(fn["code"].path) == artifacts_dir / "promptcache-functions.zip"
        assert fn["tags"] == {
            "project": "promptcache",
            "stage": "dev",
            "managed-by": "pulumi",
            "handler": module,
        }
    assert layer["layerName"] == "promptcache-dev-core"
    assert layer["compatibleRuntimes"] == ["python3.12"]
    assert layer["compatibleArchitectures"] == ["arm64"]
    assert Path(layer["code"].path) == artifacts_dir / "promptcache-layer-arm64-py3.12.zip"
    manifest = json.loads((artifacts_dir / "promptcache-layer-arm64-py3.12.json").read_text())
    assert base64.b64decode(layer["sourceCodeHash"]) == bytes.fromhex(manifest["layer"]["sha256"])


def test_log_groups_are_created_with_the_stage_retention(dev: ProgramRun) -> None:
    groups = dev.by_name(LOG_GROUP)
    expected = {f"/aws/lambda/promptcache-dev-{m}" for m in MODULES} | {
        "/aws/apigateway/promptcache-dev"
    }
    assert set(groups) == expected
    assert {g["retentionInDays"] for g in groups.values()} == {7}  # Pulumi.dev.yaml


def test_the_environment_is_a_valid_deployed_configuration(dev: ProgramRun) -> None:
    (db,) = dev.inputs(REDIS)
    (kv,) = dev.of_type(KV)
    for fn in dev.inputs(FUNCTION):
        env = fn["environment"]["variables"]
        assert all(name in SETTINGS or name.startswith("POWERTOOLS_") for name in env), sorted(env)
        settings = Settings.from_env(env)
        assert (settings.store, settings.embedder, settings.llm, settings.stats) == (
            "upstash",
            "workers-ai",
            "workers-ai",
            "cloudflare-kv",
        )
        assert settings.upstash_url == f"https://{db['databaseName']}-12345.upstash.io"
        assert settings.cloudflare_account_id == CF_ACCOUNT_ID
        assert settings.cloudflare_kv_namespace_id == kv_namespace_id(kv.inputs["title"])
        assert (
            settings.cloudflare_api_token_ssm_parameter == "/promptcache/dev/cloudflare-api-token"
        )
        assert settings.upstash_token_ssm_parameter == "/promptcache/dev/upstash-redis-rest-token"
        # The secrets themselves are never in the environment: only the parameter names.
        assert settings.cloudflare_api_token == "" and settings.upstash_token == ""
        assert settings.upstream_timeout == 26  # the function's 29 s minus 3
        assert env["POWERTOOLS_SERVICE_NAME"] == "promptcache"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "promptcache-dev"


# ---------------------------------------------------------------- the HTTP API
def _integration_function(run: ProgramRun, integration_id: str) -> str:
    integrations = {f"{r.name}-id": r.inputs for r in run.of_type(INTEGRATION)}
    uri = integrations[integration_id]["integrationUri"]
    match = re.search(r":function:([\w-]+)/invocations$", uri)
    assert match, uri
    return match.group(1)


def test_routes_point_at_the_right_functions(dev: ProgramRun) -> None:
    routes = {r["routeKey"]: r for r in dev.inputs(ROUTE)}
    expected = {f"{m} {p}": f"promptcache-dev-{module}" for (m, p), module in ROUTES.items()}
    expected["$default"] = "promptcache-dev-health"  # answers the JSON 404/405
    assert set(routes) == set(expected)
    for admin in ("GET /admin/entries", "POST /admin/flush", "POST /admin/forget"):
        assert expected[admin] == "promptcache-dev-chat" and admin in routes
    for path in ("/metrics", "/dashboard", "/dashboard.js", "/dashboard.css"):  # the stats function
        assert expected[f"GET {path}"] == "promptcache-dev-stats", path
    for key, function in expected.items():
        target = routes[key]["target"]
        assert target.startswith("integrations/")
        assert _integration_function(dev, target.removeprefix("integrations/")) == function, key
    for integration in dev.inputs(INTEGRATION):
        assert integration["integrationType"] == "AWS_PROXY"
        assert integration["payloadFormatVersion"] == "2.0"
        assert integration["timeoutMilliseconds"] == 29_000


def test_each_route_may_invoke_only_its_function(dev: ProgramRun) -> None:
    base = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{api_id('promptcache-dev')}/*/"
    permissions = {p["sourceArn"]: p for p in dev.inputs(PERMISSION)}
    # The source ARN holds the request path: a path parameter ({id}) is a wildcard there.
    expected = {
        base + f"{m}{p.replace('{id}', '*')}": f"promptcache-dev-{module}"
        for (m, p), module in ROUTES.items()
    }
    expected[base + "$default"] = "promptcache-dev-health"
    assert base + "DELETE/entries/*" in expected and base + "GET/entries/*" in expected
    assert set(permissions) == set(expected)
    for arn, function in expected.items():
        assert permissions[arn]["function"] == function
        assert permissions[arn]["principal"] == "apigateway.amazonaws.com"
        assert permissions[arn]["action"] == "lambda:InvokeFunction"


def test_stage_throttles_and_logs_access(dev: ProgramRun) -> None:
    (stage,) = dev.inputs(STAGE)
    assert stage["name"] == "$default" and stage["autoDeploy"] is True
    assert stage["defaultRouteSettings"]["throttlingRateLimit"] == 10  # Pulumi.dev.yaml
    assert stage["defaultRouteSettings"]["throttlingBurstLimit"] == 20
    logs = stage["accessLogSettings"]
    assert (
        logs["destinationArn"]
        == f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/apigateway/promptcache-dev"
    )
    fields = json.loads(logs["format"])
    assert logs["format"] == ACCESS_LOG_FORMAT
    assert {"requestId", "status", "routeKey", "integrationError"} <= set(fields)


def test_cors(dev: ProgramRun) -> None:
    (api,) = dev.inputs(API)
    assert api["protocolType"] == "HTTP" and api["name"] == "promptcache-dev"
    cors = api["corsConfiguration"]
    assert cors["allowOrigins"] == ["*"]
    assert set(cors["allowMethods"]) == {m for m, _ in ROUTES} | {"OPTIONS"}
    # the one CORS list (promptcache.routes), as the local server answers it
    assert cors["allowHeaders"] == [h.lower() for h in CORS_ALLOW_HEADERS]
    assert cors["exposeHeaders"] == [h.lower() for h in CORS_EXPOSE_HEADERS]
    assert {"x-promptcache-tenant", "retry-after", "x-promptcache-tier"} <= {
        *cors["allowHeaders"],
        *cors["exposeHeaders"],
    }


# ---------------------------------------------------------------- IAM
def _statements(run: ProgramRun) -> list[dict[str, Any]]:
    out = []
    for policy in run.inputs(ROLE_POLICY):
        out += json.loads(policy["policy"])["Statement"]
    for role in run.inputs(ROLE):
        out += json.loads(role["assumeRolePolicy"])["Statement"]
    return out


@pytest.mark.parametrize("stage", ["dev", "kms"])
def test_no_iam_statement_has_a_wildcard_action(
    stage: str, dev: ProgramRun, artifacts_dir: Path
) -> None:
    run = (
        dev
        if stage == "dev"
        else run_program("dev", artifacts_dir, {"promptcache:secretsKmsKeyArn": KMS_KEY})
    )
    statements = _statements(run)
    assert statements
    for statement in statements:
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert "*" not in action, statement
            assert re.fullmatch(r"[a-z0-9]+:[A-Za-z]+", action), action
        assert statement["Effect"] == "Allow"
    for role in run.inputs(ROLE):
        assert not role.get("managedPolicyArns"), "managed policies would hide wildcard actions"


def test_each_role_reaches_only_its_log_group_and_the_two_secrets(dev: ProgramRun) -> None:
    parameters = sorted(
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{p}" for p in dev.by_name(PARAMETER)
    )
    policies = {p["name"]: json.loads(p["policy"])["Statement"] for p in dev.inputs(ROLE_POLICY)}
    assert len(policies) == len(MODULES)
    for module in MODULES:
        statements = {s["Sid"]: s for s in policies[f"promptcache-dev-{module}-least-privilege"]}
        assert statements["OwnLogGroup"]["Resource"] == [
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/promptcache-dev-{module}:*"
        ]
        assert statements["ReadSecrets"]["Action"] == ["ssm:GetParameter"]
        assert statements["ReadSecrets"]["Resource"] == parameters
        assert "DecryptSecrets" not in statements  # aws/ssm needs no IAM grant


KMS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0f0e0d0c-0b0a-0908-0706-050403020100"


def test_a_customer_key_encrypts_the_secrets_and_only_it_may_decrypt(artifacts_dir: Path) -> None:
    run = run_program("dev", artifacts_dir, {"promptcache:secretsKmsKeyArn": KMS_KEY})
    assert {p["keyId"] for p in run.inputs(PARAMETER)} == {KMS_KEY}
    for policy in run.inputs(ROLE_POLICY):
        (decrypt,) = [
            s for s in json.loads(policy["policy"])["Statement"] if s["Sid"] == "DecryptSecrets"
        ]
        assert decrypt["Action"] == ["kms:Decrypt"] and decrypt["Resource"] == [KMS_KEY]


# ---------------------------------------------------------------- secrets
def test_secrets_are_secure_string_parameters_holding_pulumi_secrets(dev: ProgramRun) -> None:
    parameters = {r.inputs["name"]: r.inputs for r in dev.of_type(PARAMETER)}
    assert set(parameters) == {
        "/promptcache/dev/cloudflare-api-token",
        "/promptcache/dev/upstash-redis-rest-token",
    }
    for inputs in parameters.values():
        assert inputs["type"] == "SecureString"
        assert is_secret(inputs["value"])
    assert parameters["/promptcache/dev/cloudflare-api-token"]["value"]["value"] == CF_TOKEN
    assert (
        parameters["/promptcache/dev/upstash-redis-rest-token"]["value"]["value"] == UPSTASH_TOKEN
    )


def test_no_secret_appears_in_clear_anywhere(dev: ProgramRun) -> None:
    """Not in any resource's inputs (environment variables included), not in the outputs."""
    for resource in dev.resources:
        for text in clear_strings(resource.inputs):
            for secret in SECRET_VALUES:
                assert secret not in text, f"{resource.typ} {resource.name} holds a secret in clear"
    assert not dev.secret_outputs
    for text in clear_strings(dev.outputs):
        assert not any(secret in text for secret in SECRET_VALUES)


def _holds_a_secret(value: Any) -> bool:
    if is_secret(value):
        return True
    if isinstance(value, dict):
        return any(_holds_a_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_a_secret(v) for v in value)
    return False


def test_secrets_go_to_the_ssm_parameters_and_nowhere_else(dev: ProgramRun) -> None:
    """Not even as Pulumi secrets: a secret Output in an environment variable would still be a
    plain environment variable in Lambda."""
    holders = {(r.typ, r.name) for r in dev.resources if _holds_a_secret(r.inputs)}
    assert holders == {(PARAMETER, r.name) for r in dev.of_type(PARAMETER)}
    for fn in dev.of_type(FUNCTION):
        variables = fn.inputs["environment"]["variables"]
        assert not any(is_secret(v) for v in variables.values())
        assert not any(name.endswith(("_TOKEN", "_API_KEY", "_API_KEYS")) for name in variables)


def test_outputs(dev: ProgramRun) -> None:
    (db,) = dev.inputs(REDIS)
    (kv,) = dev.of_type(KV)
    out = dev.outputs
    assert set(out) == {
        "stage",
        "apiUrl",
        "functionNames",
        "layerArn",
        "kvNamespaceId",
        "upstashEndpoint",
        "secretParameterNames",
    }
    assert (
        out["apiUrl"] == f"https://{api_id('promptcache-dev')}.execute-api.{REGION}.amazonaws.com"
    )
    assert out["functionNames"] == {m: f"promptcache-dev-{m}" for m in MODULES}
    assert out["kvNamespaceId"] == kv_namespace_id(kv.inputs["title"])
    assert out["layerArn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:promptcache-dev-core:1"
    assert out["secretParameterNames"] == {
        "cloudflare-api-token": "/promptcache/dev/cloudflare-api-token",
        "upstash-redis-rest-token": "/promptcache/dev/upstash-redis-rest-token",
    }
    assert out["stage"] == "dev"
    assert out["upstashEndpoint"] == f"{db['databaseName']}-12345.upstash.io"


def test_cloudflare_kv_and_upstash(dev: ProgramRun) -> None:
    (kv,) = dev.inputs(KV)
    assert kv == {"accountId": CF_ACCOUNT_ID, "title": "promptcache-dev-stats"}
    (db,) = dev.inputs(REDIS)
    assert db["databaseName"] == "promptcache-dev-cache"
    assert db["region"] == "global" and db["primaryRegion"] == "us-east-1"  # aws:region
    assert db["budget"] == 5 and db["eviction"] is False and db["tls"] is True


# ---------------------------------------------------------------- stages
def _physical_names(run: ProgramRun) -> list[str]:
    names: list[str] = []
    for typ, key in (
        (FUNCTION, "name"),
        (ROLE, "name"),
        (ROLE_POLICY, "name"),
        (LOG_GROUP, "name"),
        (PARAMETER, "name"),
        (API, "name"),
        (LAYER, "layerName"),
        (KV, "title"),
        (REDIS, "databaseName"),
    ):
        names += [i[key] for i in run.inputs(typ)]
    return names


def test_each_stage_has_its_own_names_tags_and_settings(dev: ProgramRun, prod: ProgramRun) -> None:
    dev_names, prod_names = _physical_names(dev), _physical_names(prod)
    # functions, roles, role policies, log groups (+ the API's), parameters, API, layer, KV, Redis
    assert len(dev_names) == len(prod_names) == 4 * len(MODULES) + 1 + 2 + 1 + 1 + 1 + 1
    assert not set(dev_names) & set(prod_names)
    assert all(re.search(r"(^|[-/])dev([-/]|$)", n) for n in dev_names), dev_names
    assert all(re.search(r"(^|[-/])prod([-/]|$)", n) for n in prod_names), prod_names
    for run in (dev, prod):
        for r in run.resources:
            if "tags" in r.inputs:
                assert r.inputs["tags"]["stage"] == run.stage, r.name
    assert {f["memorySize"] for f in prod.inputs(FUNCTION)} == {1769}
    assert {g["retentionInDays"] for g in prod.inputs(LOG_GROUP)} == {90}
    (stage,) = prod.inputs(STAGE)
    assert stage["defaultRouteSettings"]["throttlingRateLimit"] == 200


def test_architecture_and_python_follow_the_config(artifacts_dir: Path) -> None:
    run = run_program(
        "staging",
        artifacts_dir,
        {"promptcache:lambdaArchitecture": "x86_64", "promptcache:pythonVersion": "3.13"},
    )
    assert {tuple(f["architectures"]) for f in run.inputs(FUNCTION)} == {("x86_64",)}
    assert {f["runtime"] for f in run.inputs(FUNCTION)} == {"python3.13"}
    (layer,) = run.inputs(LAYER)
    assert Path(layer["code"].path).name == "promptcache-layer-x86_64-py3.13.zip"
    assert layer["compatibleArchitectures"] == ["x86_64"]


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"promptcache:lambdaArchitecture": "sparc"},
            "lambdaArchitecture must be one of arm64, x86_64",
        ),
        ({"promptcache:pythonVersion": "3.11"}, "pythonVersion must be one of 3.12"),
        ({"promptcache:timeoutSeconds": 60}, "timeoutSeconds must be between 3 and 30"),
        ({"promptcache:memorySize": 64}, "memorySize must be between 128 and 10240"),
        (
            {"promptcache:logRetentionDays": 10},
            "logRetentionDays must be one of CloudWatch's periods",
        ),
        ({"promptcache:cloudflareAccountId": "my-account"}, "32-hex-digit id"),
        ({"promptcache:threshold": "high"}, "threshold must be a number from 0 to 1"),
        ({"promptcache:corsAllowOrigins": []}, "corsAllowOrigins must be a non-empty list"),
        ({"promptcache:secretsKmsKeyArn": "alias/mine"}, "secretsKmsKeyArn must be a KMS key ARN"),
        ({"promptcache:upstashBudget": 0}, "upstashBudget must be between 1"),
    ],
)
def test_invalid_settings_stop_the_program_naming_the_key(
    overrides: dict[str, Any], message: str, artifacts_dir: Path
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_program("dev", artifacts_dir, overrides)


def test_a_stack_name_that_cannot_be_part_of_names_is_refused(artifacts_dir: Path) -> None:
    with pytest.raises(ConfigError, match="stack name 'Prod_EU'"):
        run_program("dev", artifacts_dir, program=_load_as("Prod_EU"))


def _load_as(stage: str) -> Any:
    from infra.config import StackConfig

    return lambda: StackConfig.load(stage=stage)


def test_missing_artifacts_stop_the_program_with_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"python -m infra\.build --arch arm64 --python 3\.12"):
        run_program("dev", tmp_path)


def test_the_only_settings_a_user_must_add_are_documented_as_required(artifacts_dir: Path) -> None:
    declared = project_file()["config"]
    no_default = {k for k, d in declared.items() if "default" not in d}
    optional = {k for k in no_default if declared[k]["description"].startswith("Optional.")}
    assert no_default - optional == {"cloudflareAccountId", "cloudflareApiToken"}
    assert optional == {"apiKeys", "adminKey", "anthropicApiKey"}
    config_text = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    for key in no_default:
        assert f"promptcache:{key}" in config_text


API_KEYS = "key-for-tests-91c2:team-a,key-b-5d1e:team-b"


def test_api_keys_are_an_optional_secret_read_from_ssm(artifacts_dir: Path) -> None:
    run = run_program("dev", artifacts_dir, {"promptcache:apiKeys": API_KEYS})
    parameters = {r.inputs["name"]: r.inputs for r in run.of_type(PARAMETER)}
    keys = parameters["/promptcache/dev/api-keys"]
    assert keys["type"] == "SecureString" and is_secret(keys["value"])
    for fn in run.of_type(FUNCTION):
        variables = fn.inputs["environment"]["variables"]
        assert variables["PROMPTCACHE_API_KEYS_SSM_PARAMETER"] == "/promptcache/dev/api-keys"
        assert not any(API_KEYS in text for text in clear_strings(fn.inputs))
    for policy in run.inputs(ROLE_POLICY):
        (read,) = [
            s for s in json.loads(policy["policy"])["Statement"] if s["Sid"] == "ReadSecrets"
        ]
        assert (
            f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/promptcache/dev/api-keys" in read["Resource"]
        )
    for text in clear_strings(run.outputs):
        assert API_KEYS not in text
    for fn in run_program("dev", artifacts_dir).of_type(FUNCTION):  # no admin key: no parameter
        assert "PROMPTCACHE_ADMIN_KEY_SSM_PARAMETER" not in fn.inputs["environment"]["variables"]


ADMIN_KEY = "admin-key-for-tests-7f3a"


def test_the_admin_key_is_an_optional_secret_read_from_ssm(artifacts_dir: Path) -> None:
    run = run_program(
        "dev", artifacts_dir, {"promptcache:apiKeys": API_KEYS, "promptcache:adminKey": ADMIN_KEY}
    )
    parameters = {r.inputs["name"]: r.inputs for r in run.of_type(PARAMETER)}
    admin = parameters["/promptcache/dev/admin-key"]
    assert admin["type"] == "SecureString" and is_secret(admin["value"])
    assert "/promptcache/dev/api-keys" in parameters  # beside the API keys
    arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/promptcache/dev/admin-key"
    for fn in run.of_type(FUNCTION):
        variables = fn.inputs["environment"]["variables"]
        assert variables["PROMPTCACHE_ADMIN_KEY_SSM_PARAMETER"] == "/promptcache/dev/admin-key"
        assert "PROMPTCACHE_ADMIN_KEY" not in variables
        assert not any(ADMIN_KEY in text for text in clear_strings(fn.inputs))
    for policy in run.inputs(ROLE_POLICY):
        (read,) = [
            s for s in json.loads(policy["policy"])["Statement"] if s["Sid"] == "ReadSecrets"
        ]
        assert arn in read["Resource"]
    for resource in run.resources:
        assert not any(ADMIN_KEY in text for text in clear_strings(resource.inputs))
    for text in clear_strings(run.outputs):
        assert ADMIN_KEY not in text


ANTHROPIC_KEY = "sk-ant-for-tests-2b9c"


def test_the_anthropic_key_is_an_optional_secret_and_makes_claude_the_default(
    artifacts_dir: Path,
) -> None:
    run = run_program("dev", artifacts_dir, {"promptcache:anthropicApiKey": ANTHROPIC_KEY})
    parameters = {r.inputs["name"]: r.inputs for r in run.of_type(PARAMETER)}
    key = parameters["/promptcache/dev/anthropic-api-key"]
    assert key["type"] == "SecureString" and is_secret(key["value"])
    arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/promptcache/dev/anthropic-api-key"
    for fn in run.of_type(FUNCTION):
        variables = fn.inputs["environment"]["variables"]
        assert variables["ANTHROPIC_API_KEY_SSM_PARAMETER"] == "/promptcache/dev/anthropic-api-key"
        assert "ANTHROPIC_API_KEY" not in variables
        settings = Settings.from_env(variables)
        assert (settings.llm, settings.llm_routes) == ("anthropic", ("workers-ai",))
        assert settings.model == "claude-haiku-4-5" and settings.anthropic_api_key == ""
    for policy in run.inputs(ROLE_POLICY):
        (read,) = [
            s for s in json.loads(policy["policy"])["Statement"] if s["Sid"] == "ReadSecrets"
        ]
        assert arn in read["Resource"]
    for resource in run.resources:
        assert not any(ANTHROPIC_KEY in text for text in clear_strings(resource.inputs))
    for text in clear_strings(run.outputs):
        assert ANTHROPIC_KEY not in text
    for fn in run_program("dev", artifacts_dir).of_type(FUNCTION):  # no key: Workers AI, no param
        variables = fn.inputs["environment"]["variables"]
        assert "ANTHROPIC_API_KEY_SSM_PARAMETER" not in variables
        assert variables["PROMPTCACHE_LLM"] == "workers-ai"


def test_the_semantic_index_is_in_process_unless_the_stack_chooses_upstash_vector(
    dev: ProgramRun, artifacts_dir: Path
) -> None:
    assert dev.of_type(VECTOR) == []
    for fn in dev.of_type(FUNCTION):
        variables = fn.inputs["environment"]["variables"]
        assert variables["PROMPTCACHE_INDEX"] == "process"
        assert "UPSTASH_VECTOR_REST_URL" not in variables
    assert "upstashVectorEndpoint" not in dev.outputs

    run = run_program("dev", artifacts_dir, {"promptcache:semanticIndex": "upstash-vector"})
    (index,) = run.inputs(VECTOR)
    assert index["name"] == "promptcache-dev-index"
    assert (index["similarityFunction"], index["dimensionCount"]) == ("COSINE", 768)
    assert index["type"] == "paid" and index["region"] == REGION
    parameters = {r.inputs["name"]: r.inputs for r in run.of_type(PARAMETER)}
    token = parameters["/promptcache/dev/upstash-vector-rest-token"]
    assert token["type"] == "SecureString" and is_secret(token["value"])
    assert token["value"]["value"] == VECTOR_TOKEN
    arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/promptcache/dev/upstash-vector-rest-token"
    for policy in run.inputs(ROLE_POLICY):
        (read,) = [
            s for s in json.loads(policy["policy"])["Statement"] if s["Sid"] == "ReadSecrets"
        ]
        assert arn in read["Resource"]
    for fn in run.of_type(FUNCTION):
        assert not any(VECTOR_TOKEN in text for text in clear_strings(fn.inputs))
    for fn in run.inputs(FUNCTION):
        settings = Settings.from_env(fn["environment"]["variables"])
        assert settings.index == "upstash-vector"
        assert (
            settings.upstash_vector_url == "https://promptcache-dev-index-67890-vector.upstash.io"
        )
        assert settings.upstash_vector_token_ssm_parameter == (
            "/promptcache/dev/upstash-vector-rest-token"
        )
        assert settings.upstash_vector_token == ""
    assert run.outputs["upstashVectorEndpoint"] == "promptcache-dev-index-67890-vector.upstash.io"
    for text in clear_strings(run.outputs):
        assert VECTOR_TOKEN not in text


def test_an_unknown_semantic_index_stops_the_program(artifacts_dir: Path) -> None:
    with pytest.raises(ConfigError, match="semanticIndex must be one of process, upstash-vector"):
        run_program("dev", artifacts_dir, {"promptcache:semanticIndex": "redis"})


# ---------------------------------------------------------------- the verifier layer
VERIFIER_LAYER_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:promptcache-dev-verifier:1"
CORE_LAYER_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:promptcache-dev-core:1"


def test_the_verifier_is_off_everywhere_by_default_and_explicitly(dev: ProgramRun) -> None:
    assert [layer["layerName"] for layer in dev.inputs(LAYER)] == ["promptcache-dev-core"]
    for fn in dev.inputs(FUNCTION):
        assert fn["layers"] == [CORE_LAYER_ARN]
        # explicit, so no function's verifier depends on a runtime default
        assert fn["environment"]["variables"]["PROMPTCACHE_VERIFIER_MODEL"] == "off"
    assert "verifierLayerArn" not in dev.outputs


def test_local_attaches_the_verifier_layer_to_the_functions_that_answer_chat(
    artifacts_dir: Path,
) -> None:
    run = run_program(
        "dev", artifacts_dir, {"promptcache:verifier": "local", "promptcache:streamingUrl": True}
    )
    layers = {layer["layerName"]: layer for layer in run.inputs(LAYER)}
    assert sorted(layers) == ["promptcache-dev-core", "promptcache-dev-verifier"]
    verifier = layers["promptcache-dev-verifier"]
    manifest = json.loads((artifacts_dir / "promptcache-layer-arm64-py3.12.json").read_text())
    assert Path(verifier["code"].path) == artifacts_dir / manifest["verifier"]["file"]
    assert base64.b64decode(verifier["sourceCodeHash"]) == bytes.fromhex(
        manifest["verifier"]["sha256"]
    )
    assert verifier["compatibleRuntimes"] == ["python3.12"]
    assert verifier["compatibleArchitectures"] == ["arm64"]
    functions = run.by_name(FUNCTION)
    for name, fn in functions.items():
        variables = fn["environment"]["variables"]
        if name in ("promptcache-dev-chat", "promptcache-dev-chat-stream"):
            assert fn["layers"][:2] == [CORE_LAYER_ARN, VERIFIER_LAYER_ARN], name
            assert Settings.from_env(variables).verifier_model == "local"
        else:  # stats and health never judge a candidate: no layer, no model to load
            assert fn["layers"] == [CORE_LAYER_ARN], name
            assert variables["PROMPTCACHE_VERIFIER_MODEL"] == "off"
    # the streaming function: the core layer, the verifier layer, then the Web Adapter
    assert len(functions["promptcache-dev-chat-stream"]["layers"]) == 3
    assert run.outputs["verifierLayerArn"] == VERIFIER_LAYER_ARN


def test_an_unknown_verifier_stops_the_program(artifacts_dir: Path) -> None:
    with pytest.raises(
        ConfigError, match="verifier must be one of off, local, workers-ai; got 'bge'"
    ):
        run_program("dev", artifacts_dir, {"promptcache:verifier": "bge"})


def test_workers_ai_sets_the_reranker_on_the_chat_functions_without_a_layer(
    artifacts_dir: Path,
) -> None:
    run = run_program("dev", artifacts_dir, {"promptcache:verifier": "workers-ai"})
    assert [layer["layerName"] for layer in run.inputs(LAYER)] == ["promptcache-dev-core"]
    for name, fn in run.by_name(FUNCTION).items():
        assert fn["layers"] == [CORE_LAYER_ARN]
        settings = Settings.from_env(fn["environment"]["variables"])
        chat = name == "promptcache-dev-chat"
        assert settings.verifier_model == ("workers-ai" if chat else "off"), name


def test_local_without_a_verifier_layer_stops_the_program_with_the_build_command(
    artifacts_dir: Path, tmp_path: Path
) -> None:
    import shutil

    for path in artifacts_dir.glob("*arm64-py3.12*"):
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(artifacts_dir / "promptcache-functions.zip", tmp_path)
    (tmp_path / "promptcache-verifier-layer-arm64-py3.12.zip").unlink()
    run_program("dev", tmp_path)  # off: the verifier layer is not needed
    with pytest.raises(ArtifactError, match="verifier-layer-arm64-py3.12.zip is missing.*infra"):
        run_program("dev", tmp_path, {"promptcache:verifier": "local"})
