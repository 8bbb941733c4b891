"""Smoke test of the built artifacts: the layer and function zip, built by infra.build for this
machine (real pip, manylinux wheels), unzipped, and run in a fresh interpreter that sees nothing
else. The handlers get the deployed environment (infra.program.function_environment) pointed at
loopback stand-ins speaking the real protocols: Workers AI and KV (Cloudflare REST), Upstash REST
over a real redis-server, and SSM (moto's server) holding the two tokens as SecureStrings.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infra import build
from infra.config import StackConfig
from infra.program import (
    CLOUDFLARE_TOKEN_PARAMETER,
    UPSTASH_TOKEN_PARAMETER,
    function_environment,
    verified_environment,
)
from promptcache.routes import ROUTES

pytestmark = [pytest.mark.infra, pytest.mark.integration]

HERE = Path(__file__).resolve().parent
REGION = "us-east-1"


@pytest.fixture(scope="module")
def host_build(tmp_path_factory: pytest.TempPathFactory) -> build.BuildResult:
    """The real build (pip from PyPI) for this machine and interpreter."""
    return build.build(build.Target.host(), tmp_path_factory.mktemp("host-build"))


@pytest.fixture(scope="module")
def unzipped(
    host_build: build.BuildResult, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(host_build.layer.path) as zf:
        zf.extractall(root / "opt")
    with zipfile.ZipFile(host_build.functions.path) as zf:
        zf.extractall(root / "task")
    return {"code": root / "task", "layer": root / "opt" / "python"}


@pytest.fixture(scope="module")
def unzipped_verified(
    host_build: build.BuildResult, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The core layer, then the verifier layer, unpacked into one /opt as Lambda does."""
    assert host_build.verifier is not None
    root = tmp_path_factory.mktemp("unzipped-verified")
    for layer in (host_build.layer, host_build.verifier):
        with zipfile.ZipFile(layer.path) as zf:
            zf.extractall(root / "opt")
    with zipfile.ZipFile(host_build.functions.path) as zf:
        zf.extractall(root / "task")
    return {"code": root / "task", "layer": root / "opt" / "python"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ssm() -> Iterator[str]:
    """moto's server (the SSM protocol on loopback); yields its URL."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_the_host_build_fits_lambda_and_reports_its_sizes(host_build: build.BuildResult) -> None:
    names = set(host_build.distributions)
    assert {"numpy", "httpx", "aws_lambda_powertools", "aws-xray-sdk", "boto3", "botocore"} <= {
        n.replace("_", "-") if n == "aws_xray_sdk" else n for n in names
    }
    assert 0 < host_build.layer.unzipped_bytes < build.UNZIPPED_LIMIT_BYTES
    assert host_build.layer.zipped_bytes < build.DIRECT_UPLOAD_LIMIT_BYTES
    with zipfile.ZipFile(host_build.layer.path) as zf:
        wheel = next(
            n for n in zf.namelist() if n.startswith("python/numpy-") and n.endswith("/WHEEL")
        )
        tags = zf.read(wheel).decode()
    assert "manylinux_2_" in tags and build.Target.host().machine in tags
    assert "MiB unzipped" in host_build.report()


def _invoke(
    unzipped: dict[str, Path], requests: list[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> dict[str, Any]:
    """The requests, run by invoke_artifact.py in an interpreter that sees only the artifacts."""
    (tmp_path / "requests.json").write_text(json.dumps(requests))
    proc = subprocess.run(
        [
            sys.executable, "-I", "-S", str(HERE / "invoke_artifact.py"),
            str(unzipped["code"]), str(unzipped["layer"]),
            str(tmp_path / "requests.json"), str(tmp_path / "results.json"),
        ],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads((tmp_path / "results.json").read_text())
    return result


def _deployed_env(
    tmp_path: Path, cloudflare_api: Any, upstash: Any, ssm: str, verifier: str = "off"
) -> dict[str, str]:
    # The deployed environment, as the Pulumi program computes it for a stage ...
    cfg = StackConfig(
        stage="smoke", architecture="x86_64", python_version="3.12", memory_mb=1024,
        timeout_seconds=29, log_retention_days=1, log_level="WARNING", throttle_rate_limit=1,
        throttle_burst_limit=1, cors_allow_origins=("*",),
        cloudflare_account_id=cloudflare_api.account_id,
        cloudflare_api_token=cast(Any, "not read by function_environment"), api_keys=None,
        upstash_primary_region=REGION, upstash_budget=1, upstash_eviction=False,
        secrets_kms_key_arn=None, model=None, threshold=None, ttl_seconds=3600,
        rate_limit_per_minute=0, build_dir=tmp_path, verifier=verifier,
    )  # fmt: skip
    names = {
        CLOUDFLARE_TOKEN_PARAMETER: "/promptcache/smoke/cloudflare-api-token",
        UPSTASH_TOKEN_PARAMETER: "/promptcache/smoke/upstash-redis-rest-token",
    }
    env = function_environment(
        cfg,
        kv_namespace_id=cloudflare_api.namespace_id,
        upstash_rest_url=upstash.url,
        secret_parameter_names=names,
    )
    # ... whose tokens are SecureStrings in SSM, as `pulumi up` leaves them.
    client = boto3.client(
        "ssm", endpoint_url=ssm, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    client.put_parameter(
        Name=names[CLOUDFLARE_TOKEN_PARAMETER],
        Value=cloudflare_api.token,
        Type="SecureString",
        Overwrite=True,
    )
    client.put_parameter(
        Name=names[UPSTASH_TOKEN_PARAMETER],
        Value=upstash.token,
        Type="SecureString",
        Overwrite=True,
    )
    env = {k: str(v) for k, v in verified_environment(cfg, env).items()}
    env.update(
        {
            # Only where the backends are: loopback instead of Cloudflare, AWS and Upstash.
            "CLOUDFLARE_API_BASE_URL": cloudflare_api.base_url,
            "AWS_ENDPOINT_URL_SSM": ssm,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
        }
    )
    return env


def test_the_built_handlers_answer_v2_events_from_the_artifact_alone(
    unzipped: dict[str, Path],
    tmp_path: Path,
    cloudflare_api: Any,
    upstash: Any,
    ssm: str,
) -> None:
    env = _deployed_env(tmp_path, cloudflare_api, upstash, ssm)
    json_headers = {"content-type": "application/json"}
    prompt = json.dumps({"prompt": "What is the capital of France?"})
    requests = [
        {"handler": "health", "method": "GET", "path": "/health"},
        {
            "handler": "chat",
            "method": "POST",
            "path": "/chat",
            "headers": json_headers,
            "body": prompt,
        },
        {
            "handler": "chat",
            "method": "POST",
            "path": "/chat",
            "headers": json_headers,
            "body": prompt,
        },
        {
            "handler": "chat",
            "method": "POST",
            "path": "/chat",
            "headers": json_headers,
            "body": "{oops",
        },
        {"handler": "stats", "method": "GET", "path": "/stats"},
        # What API Gateway's $default route hands to the health function:
        {"handler": "health", "method": "GET", "path": "/no-such-route"},
        {"handler": "health", "method": "GET", "path": "/chat"},
    ]
    # Every route of the product, on the handler the infrastructure wires it to.
    chat_body = {"messages": [{"role": "user", "content": "Name a prime number."}]}
    for (method, path), module in sorted(ROUTES.items()):
        body = json.dumps(chat_body) if method == "POST" else None
        requests.append(
            {
                "handler": module,
                "method": method,
                "path": path,
                "headers": json_headers,
                "body": body,
            }
        )
    out = _invoke(unzipped, requests, env, tmp_path)

    for module, origin in out["origins"].items():
        expected = unzipped["code"] if module in ("chat", "stats", "health") else unzipped["layer"]
        assert Path(origin).is_relative_to(expected), f"{module} came from {origin}"
    assert not any("site-packages" in p for p in out["path"])

    health, miss, hit, bad, stats, unknown, wrong_method, *routes = out["results"]
    body = json.loads(health["body"])
    assert health["statusCode"] == 200, body
    assert body["status"] == "ok", body
    assert json.loads(miss["body"])["tier"] == "miss", miss["body"]
    assert json.loads(hit["body"])["tier"] == "exact", hit["body"]
    assert json.loads(hit["body"])["response"] == json.loads(miss["body"])["response"]
    assert (
        bad["statusCode"] == 400 and "not valid JSON" in json.loads(bad["body"])["error"]["message"]
    )
    assert stats["statusCode"] == 200 and json.loads(stats["body"])
    assert unknown["statusCode"] == 404 and json.loads(unknown["body"])["error"]["code"]
    assert wrong_method["statusCode"] == 405 and "POST" in wrong_method["headers"]["Allow"]
    for request, result in zip(requests[7:], routes, strict=True):
        route = f"{request['method']} {request['path']}"
        assert result["statusCode"] not in (404, 405), (
            f"{route} is not served by {request['handler']}"
        )
        assert result["statusCode"] < 500, (route, result)
    # The tokens reached the backends from SSM: the model was asked once, the store answered.
    assert sum(cloudflare_api.calls[m] for m in cloudflare_api.calls if "llama" in m) >= 1


def test_the_verifier_layer_judges_candidates_from_the_artifacts_alone(
    host_build: build.BuildResult,
    unzipped_verified: dict[str, Path],
    tmp_path: Path,
    cloudflare_api: Any,
    upstash: Any,
    ssm: str,
) -> None:
    assert host_build.verifier is not None
    assert {"onnxruntime", "tokenizers"} == set(host_build.verifier_distributions or {})
    assert host_build.total_unzipped_bytes < build.UNZIPPED_LIMIT_BYTES
    assert host_build.verifier.zipped_bytes < build.DIRECT_UPLOAD_LIMIT_BYTES
    env = _deployed_env(tmp_path, cloudflare_api, upstash, ssm, verifier="local")
    assert env["PROMPTCACHE_VERIFIER_MODEL"] == "local"
    headers = {"content-type": "application/json"}

    def chat(prompt: str) -> dict[str, Any]:
        body = json.dumps({"prompt": prompt})
        return {"handler": "chat", "method": "POST", "path": "/chat", "headers": headers,
                "body": body}  # fmt: skip

    requests = [
        chat("How do I reverse a list in Python?"),
        chat("How can I reverse a list in Python?"),  # a candidate: the verifier judges it
        {"handler": "health", "method": "GET", "path": "/health"},
    ]
    out = _invoke(unzipped_verified, requests, env, tmp_path)
    # The verifier's runtime and module came from the layers, nothing else.
    for name in ("onnxruntime", "tokenizers", "promptcache.adapters.local_verifier"):
        assert Path(out["origins"][name]).is_relative_to(unzipped_verified["layer"]), name
    first, second, health = out["results"]
    assert first["statusCode"] == 200 and json.loads(first["body"])["tier"] == "miss"
    assert second["statusCode"] == 200, second["body"]
    # It was asked (its time is part of the answer's Server-Timing), whatever it decided.
    assert "verify;dur=" in second["headers"]["Server-Timing"], second["headers"]
    assert json.loads(health["body"])["status"] == "ok"
