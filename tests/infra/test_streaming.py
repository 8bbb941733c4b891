"""The optional streaming endpoint (promptcache:streamingUrl): what the program provisions, run
against the recording mocks, and the function itself: ``run.sh`` from the built artifacts,
started the way the Lambda Web Adapter's bootstrap starts it, streaming an answer from the
loopback stand-ins while the model is still writing it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import boto3
import httpx
import pulumi
import pytest

from infra import artifacts, build
from infra.components.streaming import (
    READINESS_CHECK_HEALTHY_STATUS,
    READINESS_CHECK_PATH,
    adapter_environment,
    web_adapter_layer_arn,
)
from infra.config import ConfigError, StackConfig
from infra.program import (
    CLOUDFLARE_TOKEN_PARAMETER,
    UPSTASH_TOKEN_PARAMETER,
    function_environment,
    streaming_environment,
)
from promptcache.routes import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS, ROUTES
from promptcache.settings import SETTINGS, Settings
from tests.infra.conftest import (
    ACCOUNT,
    REGION,
    SECRET_VALUES,
    ProgramRun,
    api_id,
    clear_strings,
    noop_installer,
    run_program,
)
from tests.infra.test_artifact_smoke import host_build, ssm  # noqa: F401  (fixtures)
from tests.support.load import Tenant, Workload

pytestmark = pytest.mark.infra

FUNCTION = "aws:lambda/function:Function"
FUNCTION_URL = "aws:lambda/functionUrl:FunctionUrl"
PERMISSION = "aws:lambda/permission:Permission"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
PARAMETER = "aws:ssm/parameter:Parameter"
ON = {"promptcache:streamingUrl": True}
ADAPTER_ARM64_30 = f"arn:aws:lambda:{REGION}:753240598075:layer:LambdaAdapterLayerArm64:30"


@pytest.fixture(scope="module")
def streaming(artifacts_dir: Path) -> ProgramRun:
    return run_program("dev", artifacts_dir, ON)


def _stream_function(run: ProgramRun, stage: str = "dev") -> dict[str, Any]:
    return run.by_name(FUNCTION)[f"promptcache-{stage}-chat-stream"]


# ---------------------------------------------------------------- off by default
def test_off_by_default_nothing_more_is_created(dev: ProgramRun) -> None:
    assert not dev.of_type(FUNCTION_URL)
    assert not dev.of_type("promptcache:index:StreamingEndpoint")
    assert "promptcache-dev-chat-stream" not in dev.by_name(FUNCTION)
    assert {p["principal"] for p in dev.inputs(PERMISSION)} == {"apigateway.amazonaws.com"}
    assert "streamingUrl" not in dev.outputs
    assert "chat-stream" not in dev.outputs["functionNames"]


def test_on_it_adds_one_function_its_url_and_two_permissions(
    dev: ProgramRun, streaming: ProgramRun
) -> None:
    def counts(run: ProgramRun) -> dict[str, int]:
        return {t: len(run.of_type(t)) for t in {r.typ for r in run.resources}}

    before, after = counts(dev), counts(streaming)
    added = {t: after[t] - before.get(t, 0) for t in after if after[t] != before.get(t, 0)}
    assert added == {
        "promptcache:index:StreamingEndpoint": 1,
        "promptcache:index:HandlerFunction": 1,
        "promptcache:index:FunctionRole": 1,
        FUNCTION: 1,
        LOG_GROUP: 1,
        ROLE: 1,
        ROLE_POLICY: 1,
        FUNCTION_URL: 1,
        PERMISSION: 2,
    }


# ---------------------------------------------------------------- the function
def test_the_function_runs_run_sh_with_the_core_and_adapter_layers(
    streaming: ProgramRun, artifacts_dir: Path
) -> None:
    fn = _stream_function(streaming)
    assert fn["handler"] == "run.sh" == build.STARTUP_SCRIPT
    assert fn["runtime"] == "python3.12" and fn["architectures"] == ["arm64"]
    assert fn["layers"] == [
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:promptcache-dev-core:1",
        ADAPTER_ARM64_30,
    ]
    assert isinstance(fn["code"], pulumi.FileArchive)
    assert Path(fn["code"].path) == artifacts_dir / build.FUNCTIONS_ZIP
    chat = streaming.by_name(FUNCTION)["promptcache-dev-chat"]
    assert fn["sourceCodeHash"] == chat["sourceCodeHash"]  # the same zip as the other functions
    assert fn["timeout"] == 300 and fn["memorySize"] == 1024
    assert fn["role"] == f"arn:aws:iam::{ACCOUNT}:role/promptcache-dev-chat-stream"
    assert fn["loggingConfig"]["logGroup"] == "/aws/lambda/promptcache-dev-chat-stream"
    assert (
        streaming.by_name(LOG_GROUP)["/aws/lambda/promptcache-dev-chat-stream"]["retentionInDays"]
        == 7
    )  # Pulumi.dev.yaml


def test_the_environment_is_the_deployed_configuration_plus_the_adapter(
    streaming: ProgramRun,
) -> None:
    env = _stream_function(streaming)["environment"]["variables"]
    chat = streaming.by_name(FUNCTION)["promptcache-dev-chat"]["environment"]["variables"]
    assert env == {
        **chat,
        "PROMPTCACHE_UPSTREAM_TIMEOUT": "297",  # streamingTimeoutSeconds minus 3
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
        "AWS_LWA_INVOKE_MODE": "response_stream",
        "AWS_LWA_PORT": "8080",
        "AWS_LWA_READINESS_CHECK_PATH": "/health",
        "AWS_LWA_READINESS_CHECK_HEALTHY_STATUS": "200,503",
        "POWERTOOLS_METRICS_DISABLED": "false",
    }
    app = {k: v for k, v in env.items() if not k.startswith(("AWS_LWA_", "AWS_LAMBDA_"))}
    assert all(name in SETTINGS or name.startswith("POWERTOOLS_") for name in app), sorted(app)
    settings = Settings.from_env(app)
    assert (settings.store, settings.embedder, settings.llm) == (
        "upstash",
        "workers-ai",
        "workers-ai",
    )
    assert settings.upstream_timeout == 297
    assert not any(name.endswith(("_TOKEN", "_API_KEY", "_API_KEYS")) for name in env)


def test_timeout_and_adapter_version_follow_the_config(artifacts_dir: Path) -> None:
    run = run_program(
        "staging",
        artifacts_dir,
        {
            **ON,
            "promptcache:streamingTimeoutSeconds": 900,
            "promptcache:webAdapterLayerVersion": 28,
            "promptcache:lambdaArchitecture": "x86_64",
            "promptcache:pythonVersion": "3.13",
        },
    )
    fn = _stream_function(run, "staging")
    assert fn["timeout"] == 900
    assert fn["environment"]["variables"]["PROMPTCACHE_UPSTREAM_TIMEOUT"] == "897"
    assert fn["architectures"] == ["x86_64"] and fn["runtime"] == "python3.13"
    assert fn["layers"][1] == f"arn:aws:lambda:{REGION}:753240598075:layer:LambdaAdapterLayerX86:28"
    # The API's functions keep the HTTP API's limit.
    assert run.by_name(FUNCTION)["promptcache-staging-chat"]["timeout"] == 29


def test_the_adapter_layer_arn() -> None:
    assert web_adapter_layer_arn("eu-west-1", "arm64", 30) == (
        "arn:aws:lambda:eu-west-1:753240598075:layer:LambdaAdapterLayerArm64:30"
    )
    assert web_adapter_layer_arn("ap-south-1", "x86_64", 27) == (
        "arn:aws:lambda:ap-south-1:753240598075:layer:LambdaAdapterLayerX86:27"
    )
    with pytest.raises(ValueError, match="sparc"):
        web_adapter_layer_arn("eu-west-1", "sparc", 30)


# ---------------------------------------------------------------- the URL and who may call it
def test_the_url_streams_without_iam_auth(streaming: ProgramRun) -> None:
    (url,) = streaming.inputs(FUNCTION_URL)
    assert url["functionName"] == "promptcache-dev-chat-stream"
    assert url["invokeMode"] == "RESPONSE_STREAM"
    assert url["authorizationType"] == "NONE"
    assert "qualifier" not in url


def test_cors_on_the_url_follows_cors_allow_origins(
    streaming: ProgramRun, artifacts_dir: Path
) -> None:
    (url,) = streaming.inputs(FUNCTION_URL)
    cors = url["cors"]
    assert cors["allowOrigins"] == ["*"]  # Pulumi.yaml's default
    assert set(cors["allowMethods"]) == {m for m, _ in ROUTES}
    assert all(len(m) <= 6 for m in cors["allowMethods"])  # Lambda's limit: no OPTIONS here
    assert cors["allowHeaders"] == [h.lower() for h in CORS_ALLOW_HEADERS]
    assert cors["exposeHeaders"] == [h.lower() for h in CORS_EXPOSE_HEADERS]
    run = run_program(
        "dev",
        artifacts_dir,
        {**ON, "promptcache:corsAllowOrigins": ["https://app.example.com", "https://b.example"]},
    )
    (url,) = run.inputs(FUNCTION_URL)
    assert url["cors"]["allowOrigins"] == ["https://app.example.com", "https://b.example"]


def test_public_invocation_is_granted_only_through_the_url(streaming: ProgramRun) -> None:
    granted = [
        p for p in streaming.inputs(PERMISSION) if p["function"] == "promptcache-dev-chat-stream"
    ]
    by_action = {p["action"]: p for p in granted}
    assert len(granted) == 2 and set(by_action) == {
        "lambda:InvokeFunctionUrl",
        "lambda:InvokeFunction",
    }
    url, invoke = by_action["lambda:InvokeFunctionUrl"], by_action["lambda:InvokeFunction"]
    assert url["principal"] == "*" and url["functionUrlAuthType"] == "NONE"
    # Without this condition anyone could invoke the function directly, bypassing the URL.
    assert invoke["principal"] == "*" and invoke["invokedViaFunctionUrl"] is True
    assert "sourceArn" not in invoke and "functionUrlAuthType" not in invoke
    # The HTTP API's permissions are unchanged and never name the streaming function.
    api = [p for p in streaming.inputs(PERMISSION) if p["principal"] == "apigateway.amazonaws.com"]
    assert len(api) == len(ROUTES) + 1
    assert all(p["function"] != "promptcache-dev-chat-stream" for p in api)


# ---------------------------------------------------------------- IAM
def test_the_role_has_no_wildcard_action_and_reaches_only_its_log_group_and_the_secrets(
    streaming: ProgramRun,
) -> None:
    policies = {p["name"]: p for p in streaming.inputs(ROLE_POLICY)}
    policy = policies["promptcache-dev-chat-stream-least-privilege"]
    statements = {s["Sid"]: s for s in json.loads(policy["policy"])["Statement"]}
    for statement in statements.values():
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            assert "*" not in action and re.fullmatch(r"[a-z0-9]+:[A-Za-z]+", action), action
    assert set(statements) == {"OwnLogGroup", "Tracing", "ReadSecrets"}
    assert statements["OwnLogGroup"]["Resource"] == [
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/promptcache-dev-chat-stream:*"
    ]
    assert statements["ReadSecrets"]["Action"] == ["ssm:GetParameter"]
    assert statements["ReadSecrets"]["Resource"] == sorted(
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{p}" for p in streaming.by_name(PARAMETER)
    )
    (role,) = [r for r in streaming.inputs(ROLE) if r["name"] == "promptcache-dev-chat-stream"]
    assert not role.get("managedPolicyArns")
    assume = json.loads(role["assumeRolePolicy"])["Statement"]
    assert assume == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]


def test_api_keys_reach_the_streaming_function_by_parameter_name(artifacts_dir: Path) -> None:
    keys = "key-for-tests-0c1d:team-a"
    run = run_program("dev", artifacts_dir, {**ON, "promptcache:apiKeys": keys})
    fn = _stream_function(run)
    variables = fn["environment"]["variables"]
    assert variables["PROMPTCACHE_API_KEYS_SSM_PARAMETER"] == "/promptcache/dev/api-keys"
    assert not any(keys in text for r in run.resources for text in clear_strings(r.inputs))
    policy = {p["name"]: p for p in run.inputs(ROLE_POLICY)}[
        "promptcache-dev-chat-stream-least-privilege"
    ]
    (read,) = [s for s in json.loads(policy["policy"])["Statement"] if s["Sid"] == "ReadSecrets"]
    assert f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/promptcache/dev/api-keys" in read["Resource"]


# ---------------------------------------------------------------- outputs, secrets, stages
def test_the_streaming_url_is_an_output(streaming: ProgramRun) -> None:
    out = streaming.outputs
    # Without Lambda's trailing slash: "$URL/v1/chat/completions" must not start with "//".
    assert out["streamingUrl"] == (
        f"https://{api_id('promptcache-dev-chat-stream')}.lambda-url.{REGION}.on.aws"
    )
    assert out["functionNames"]["chat-stream"] == "promptcache-dev-chat-stream"
    assert not streaming.secret_outputs


def test_no_secret_appears_in_clear(streaming: ProgramRun) -> None:
    for resource in streaming.resources:
        for text in clear_strings(resource.inputs):
            assert not any(s in text for s in SECRET_VALUES), (resource.typ, resource.name)
    for text in clear_strings(streaming.outputs):
        assert not any(s in text for s in SECRET_VALUES)


def test_names_and_tags_carry_the_stage(streaming: ProgramRun, artifacts_dir: Path) -> None:
    prod = run_program("prod", artifacts_dir, ON)

    def names(run: ProgramRun) -> list[str]:
        out = [i["name"] for t in (FUNCTION, ROLE, ROLE_POLICY, LOG_GROUP) for i in run.inputs(t)]
        return [n for n in out if "chat-stream" in n]

    dev_names, prod_names = names(streaming), names(prod)
    assert len(dev_names) == len(prod_names) == 4
    assert not set(dev_names) & set(prod_names)
    assert all(re.search(r"(^|[-/])dev-", n) for n in dev_names), dev_names
    assert all(re.search(r"(^|[-/])prod-", n) for n in prod_names), prod_names
    assert _stream_function(prod, "prod")["tags"]["stage"] == "prod"
    assert _stream_function(prod, "prod")["memorySize"] == 1769  # Pulumi.prod.yaml
    assert prod.outputs["streamingUrl"] != streaming.outputs["streamingUrl"]


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"promptcache:streamingTimeoutSeconds": 901},
            "streamingTimeoutSeconds must be between 3 and 900",
        ),
        ({"promptcache:webAdapterLayerVersion": 26}, "webAdapterLayerVersion must be between 27"),
        ({"aws:region": "cn-north-1"}, "streamingUrl needs aws:region set to a region of the aws"),
    ],
)
def test_invalid_streaming_settings_stop_the_program(
    overrides: dict[str, Any], message: str, artifacts_dir: Path
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_program("dev", artifacts_dir, {**ON, **overrides})


# ---------------------------------------------------------------- the packaged run.sh
def test_the_function_zip_holds_an_executable_run_sh(tmp_path: Path) -> None:
    result = build.build(
        build.Target.lambda_runtime("arm64", "3.12"), tmp_path, installer=noop_installer
    )
    with zipfile.ZipFile(result.functions.path) as zf:
        info = zf.getinfo(build.STARTUP_SCRIPT)
        script = zf.read(info)
    mode = info.external_attr >> 16
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o755
    assert script.startswith(b"#!/bin/sh\n") and b"\r" not in script
    assert b"exec python -m promptcache_tools.cli serve --host 127.0.0.1" in script
    assert b"AWS_LWA_PORT" in script


def _sources(tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the core and the handlers, so a test can change them."""
    core, handlers = tmp_path / "src" / "promptcache", tmp_path / "src" / "handlers"
    shutil.copytree(build.CORE_DIR, core, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(build.HANDLERS_DIR, handlers, ignore=shutil.ignore_patterns("__pycache__"))
    return core, handlers


def _build(out: Path, core: Path, handlers: Path) -> build.BuildResult:
    return build.build(
        build.Target.lambda_runtime("arm64", "3.12"), out, installer=noop_installer,
        core_dir=core, handlers_dir=handlers,
    )  # fmt: skip


def test_run_sh_is_zipped_executable_even_if_the_checkout_lost_the_bit(tmp_path: Path) -> None:
    core, handlers = _sources(tmp_path)
    (handlers / "run.sh").chmod(0o644)
    result = _build(tmp_path / "out", core, handlers)
    with zipfile.ZipFile(result.functions.path) as zf:
        assert stat.S_IMODE(zf.getinfo("run.sh").external_attr >> 16) == 0o755


def test_a_changed_run_sh_makes_the_artifacts_stale(tmp_path: Path) -> None:
    core, handlers = _sources(tmp_path)
    out = tmp_path / "out"
    _build(out, core, handlers)
    artifacts.load(out, "arm64", "3.12", ("chat",), core_dir=core, handlers_dir=handlers)
    (handlers / "run.sh").write_text((handlers / "run.sh").read_text() + "# changed\n")
    with pytest.raises(artifacts.ArtifactError, match="older than the sources"):
        artifacts.load(out, "arm64", "3.12", ("chat",), core_dir=core, handlers_dir=handlers)


def test_a_build_without_run_sh_fails(tmp_path: Path) -> None:
    core, handlers = _sources(tmp_path)
    (handlers / "run.sh").unlink()
    with pytest.raises(build.BuildError, match="no run.sh in"):
        _build(tmp_path / "out", core, handlers)


# ---------------------------------------------------------------- run.sh, run from the artifacts
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(status: int) -> bool:
    """``AWS_LWA_READINESS_CHECK_HEALTHY_STATUS``, read as the adapter reads it."""
    for part in READINESS_CHECK_HEALTHY_STATUS.split(","):
        lo, _, hi = part.partition("-")
        if int(lo) <= status <= int(hi or lo):
            return True
    return False


def _extract(zip_path: Path, dest: Path) -> None:
    """Unzip as Lambda does, keeping each file's mode (zipfile.extractall drops it)."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, dest))
            mode = stat.S_IMODE(info.external_attr >> 16)
            if mode and not info.is_dir():
                path.chmod(mode)


@pytest.fixture(scope="module")
def unzipped_as_lambda(
    host_build: build.BuildResult,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lambda")
    _extract(host_build.layer.path, root / "opt")
    _extract(host_build.functions.path, root / "task")
    return {"code": root / "task", "layer": root / "opt" / "python"}


@pytest.fixture
def started(
    unzipped_as_lambda: dict[str, Path],
    tmp_path: Path,
    cloudflare_api: Any,
    upstash: Any,
    ssm: str,  # noqa: F811
) -> Iterator[tuple[str, Path]]:
    """``run.sh`` from the unzipped function zip, with the streaming function's deployed
    environment pointed at the stand-ins, started as the adapter's ``/opt/bootstrap`` starts it;
    yields the server's base URL (once ready by the adapter's readiness rule) and its log."""
    cfg = StackConfig(
        stage="stream-smoke", architecture="x86_64", python_version="3.12", memory_mb=1024,
        timeout_seconds=29, log_retention_days=1, log_level="WARNING", throttle_rate_limit=1,
        throttle_burst_limit=1, cors_allow_origins=("*",),
        cloudflare_account_id=cloudflare_api.account_id,
        cloudflare_api_token=cast(Any, "not read by function_environment"), api_keys=None,
        upstash_primary_region=REGION, upstash_budget=1, upstash_eviction=False,
        secrets_kms_key_arn=None, model=None, threshold=None, ttl_seconds=3600,
        rate_limit_per_minute=0, build_dir=tmp_path, streaming_url=True,
        streaming_timeout_seconds=60, aws_region=REGION,
    )  # fmt: skip
    names = {
        CLOUDFLARE_TOKEN_PARAMETER: "/promptcache/stream-smoke/cloudflare-api-token",
        UPSTASH_TOKEN_PARAMETER: "/promptcache/stream-smoke/upstash-redis-rest-token",
    }
    client = boto3.client(
        "ssm", endpoint_url=ssm, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    client.put_parameter(
        Name=names[CLOUDFLARE_TOKEN_PARAMETER],
        Value=cloudflare_api.token,
        Type="SecureString",
        Overwrite=True,  # the moto server lives for the module, this fixture for a test
    )
    client.put_parameter(
        Name=names[UPSTASH_TOKEN_PARAMETER],
        Value=upstash.token,
        Type="SecureString",
        Overwrite=True,
    )
    port = _free_port()
    deployed = streaming_environment(
        cfg,
        function_environment(
            cfg,
            kv_namespace_id=cloudflare_api.namespace_id,
            upstash_rest_url=upstash.url,
            secret_parameter_names=names,
        ),
    )
    env = {k: str(v) for k, v in {**deployed, **adapter_environment(port)}.items()}
    # A python without site-packages first on PATH: run.sh's `python` sees only the stdlib, the
    # function code and the layer, as on Lambda.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    (shim / "python").chmod(0o755)
    env.update(
        {
            # What Lambda sets for the runtime: the code's directory and the handler ...
            "LAMBDA_TASK_ROOT": str(unzipped_as_lambda["code"]),
            "_HANDLER": build.STARTUP_SCRIPT,
            # ... and the runtime's own path after the layer (here the layer stands in for it,
            # since run.sh's /opt/python does not exist on this machine).
            "PYTHONPATH": str(unzipped_as_lambda["layer"]),
            "PATH": f"{shim}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            # Only where the backends are: loopback instead of Cloudflare, AWS and Upstash.
            "CLOUDFLARE_API_BASE_URL": cloudflare_api.base_url,
            "AWS_ENDPOINT_URL_SSM": ssm,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    )
    log = tmp_path / "function.log"
    with log.open("wb") as sink:
        # The adapter layer's /opt/bootstrap, word for word.
        proc = subprocess.Popen(
            ["/bin/bash", "-c", 'exec -- "${LAMBDA_TASK_ROOT}/${_HANDLER}"'],
            env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"run.sh exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"never ready:\n{log.read_text()}"
            try:
                if _healthy(httpx.get(base + READINESS_CHECK_PATH, timeout=5).status_code):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield base, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _stream(base: str, body: dict[str, Any]) -> tuple[httpx.Headers, list[tuple[float, str]]]:
    """The response headers and each content delta with its arrival time."""
    deltas: list[tuple[float, str]] = []
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            assert "error" not in chunk, chunk
            for choice in chunk["choices"]:
                if choice["delta"].get("content"):
                    deltas.append((time.monotonic(), choice["delta"]["content"]))
        return response.headers, deltas


@pytest.mark.integration
def test_run_sh_serves_a_stream_from_the_artifacts_as_it_is_generated(
    started: tuple[str, Path], cloudflare_api: Any
) -> None:
    base, log = started
    delay = 0.2
    cloudflare_api.stream_delay = delay
    question = "Why is the sky blue over the open sea?"
    body = {"stream": True, "messages": [{"role": "user", "content": question}]}

    headers, deltas = _stream(base, body)
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-promptcache-tier"] == "miss"
    answer = "".join(text for _, text in deltas)
    assert answer.endswith(f"You asked: {question}"), answer
    # Streamed, not buffered: the deltas arrived while the model was still writing (one word
    # every `delay` seconds), not all at once at the end.
    assert len(deltas) >= 8
    assert deltas[-1][0] - deltas[0][0] >= 0.5 * delay * (len(deltas) - 1), deltas

    cloudflare_api.stream_delay = 0.0
    headers, replay = _stream(base, body)
    assert headers["x-promptcache-tier"] == "exact"
    assert "".join(text for _, text in replay) == answer
    assert sum(cloudflare_api.calls[m] for m in cloudflare_api.calls if "llama" in m) == 1

    # The deployed environment's metrics go to stdout (the function's log) as embedded metrics.
    output = log.read_text()
    assert '"_aws"' in output and "promptcache-stream-smoke" in output, output[-3000:]


@pytest.mark.integration
def test_run_sh_answers_concurrent_mixed_requests_each_with_its_own_answer(
    started: tuple[str, Path],
) -> None:
    """What the Lambda Web Adapter runs, under the concurrency it allows (it forwards many
    requests at once): every answer belongs to its own request (tests/support/load.py)."""
    base, log = started

    def echoes(prompt: str, text: str) -> bool:
        return re.fullmatch(r"\[Workers AI stand-in, [^\]]+\] You asked: " + re.escape(prompt),
                            text) is not None  # fmt: skip

    load = Workload(base, [Tenant("default", None)], echoes)
    load.prepare(per_tenant=24, paraphrases=8)
    requests = max(200, int(os.environ.get("TEST_LOAD_REQUESTS", "3000")) // 3)
    outcome = load.run(clients=32, requests=requests)
    assert outcome.problems == [], "\n".join(outcome.problems[:40])
    assert outcome.requests == requests
    assert "Traceback" not in log.read_text()
