"""Pulumi unit tests: the real program (infra/__main__.py) run against recording mocks.

pulumi-cloudflare takes seconds to import: the program's modules are imported once per session.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import runpy
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.settings import get_root_resource, set_root_resource

from infra import build

# The provider SDKs warn at import time about resources they renamed (none of which the program
# uses), and pulumi-cloudflare takes seconds to import: import them once, quietly, per session.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    for _module in (
        "pulumi_aws.apigatewayv2",
        "pulumi_aws.cloudwatch",
        "pulumi_aws.iam",
        "pulumi_aws.lambda_",
        "pulumi_aws.ssm",
        "pulumi_cloudflare",
        "upstash_pulumi",
    ):
        getattr(importlib.import_module(_module), "_utilities", None)  # loads the lazy module

REPO = build.REPO
ACCOUNT = "123456789012"
REGION = "us-east-1"
CF_ACCOUNT_ID = "0123456789abcdef0123456789abcdef"
#: Secret values the tests give the program; they must never appear outside a secret.
CF_TOKEN = "cf-runtime-token-for-tests-7f3a9c"
UPSTASH_TOKEN = "upstash-rest-token-for-tests-91bc2e"
UPSTASH_PASSWORD = "upstash-password-for-tests-55d0aa"
VECTOR_TOKEN = "upstash-vector-token-for-tests-3c7d41"
SECRET_VALUES = (CF_TOKEN, UPSTASH_TOKEN, UPSTASH_PASSWORD, VECTOR_TOKEN)

_SIG, _SECRET = rpc._special_sig_key, rpc._special_secret_sig


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(_SIG) == _SECRET


def reveal(value: Any) -> Any:
    """The value with every secret wrapper removed."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def clear_strings(value: Any) -> Iterator[str]:
    """Every string of ``value`` that is not inside a secret wrapper."""
    if is_secret(value):
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from clear_strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from clear_strings(v)


# ---------------------------------------------------------------- project and stack files
def project_file() -> dict[str, Any]:
    return yaml.safe_load((REPO / "Pulumi.yaml").read_text(encoding="utf-8"))


def stack_file(stage: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / f"Pulumi.{stage}.yaml").read_text(encoding="utf-8"))


def _config_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def stack_config(
    stage: str, overrides: Mapping[str, Any] | None = None
) -> tuple[dict[str, str], list[str]]:
    """What the Pulumi CLI hands the program for ``stage``: Pulumi.yaml's defaults, then the
    example stack file, then the values a user sets (account id, secrets), then ``overrides``.
    Returns the config and the secret keys."""
    project = project_file()
    name = project["name"]
    config: dict[str, Any] = {
        f"{name}:{key}": decl["default"]
        for key, decl in project["config"].items()
        if isinstance(decl, dict) and "default" in decl
    }
    config.update(stack_file(stage)["config"])
    config[f"{name}:cloudflareAccountId"] = CF_ACCOUNT_ID
    config[f"{name}:cloudflareApiToken"] = CF_TOKEN
    config.update(overrides or {})
    secret_keys = [
        f"{name}:{key}"
        for key, decl in project["config"].items()
        if isinstance(decl, dict) and decl.get("secret")
    ]
    return {k: _config_string(v) for k, v in config.items()}, secret_keys


# ---------------------------------------------------------------- mocks
def api_id(name: str) -> str:
    """The id the mocked AWS gives the HTTP API called ``name``."""
    return hashlib.sha256(name.encode()).hexdigest()[:10]


def kv_namespace_id(title: str) -> str:
    """The id the mocked Cloudflare gives the KV namespace titled ``title`` (32 hex digits)."""
    return hashlib.md5(title.encode()).hexdigest()


class Recorder(pulumi.runtime.Mocks):
    """Answers like the providers would (ARNs, endpoints, ids) and records every registration."""

    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        inputs = args.inputs
        state = dict(inputs)
        rid = f"{args.name}-id"
        name = reveal(inputs.get("name", args.name))
        arn = None
        if args.typ == "aws:cloudwatch/logGroup:LogGroup":
            arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}"
        elif args.typ == "aws:ssm/parameter:Parameter":
            arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}"
        elif args.typ == "aws:iam/role:Role":
            arn = f"arn:aws:iam::{ACCOUNT}:role/{name}"
        elif args.typ == "aws:lambda/layerVersion:LayerVersion":
            arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{inputs['layerName']}:1"
        elif args.typ == "aws:lambda/function:Function":
            arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
            state["invokeArn"] = (
                f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{arn}/invocations"
            )
        elif args.typ == "aws:lambda/functionUrl:FunctionUrl":
            rid = api_id(reveal(inputs["functionName"]))
            state["urlId"] = rid
            state["functionUrl"] = f"https://{rid}.lambda-url.{REGION}.on.aws/"
        elif args.typ == "aws:apigatewayv2/api:Api":
            rid = api_id(name)
            state["apiEndpoint"] = f"https://{rid}.execute-api.{REGION}.amazonaws.com"
            state["executionArn"] = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{rid}"
        elif args.typ == "upstash:index/redisDatabase:RedisDatabase":
            state["endpoint"] = f"{inputs['databaseName']}-12345.upstash.io"
            state["restToken"] = UPSTASH_TOKEN
            state["password"] = UPSTASH_PASSWORD
        elif args.typ == "upstash:index/vectorIndex:VectorIndex":
            state["endpoint"] = f"{inputs['name']}-67890-vector.upstash.io"
            state["token"] = VECTOR_TOKEN
            state["readOnlyToken"] = VECTOR_TOKEN + "-read-only"
        elif args.typ == "cloudflare:index/workersKvNamespace:WorkersKvNamespace":
            rid = kv_namespace_id(inputs["title"])
        if arn:
            state["arn"] = arn
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        raise AssertionError(f"the program should make no provider calls; it called {args.token}")


@dataclass
class ProgramRun:
    stage: str
    resources: list[pulumi.runtime.MockResourceArgs]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]

    def inputs(self, typ: str) -> list[dict[str, Any]]:
        return [reveal(r.inputs) for r in self.of_type(typ)]

    def by_name(self, typ: str) -> dict[str, dict[str, Any]]:
        """Physical name (``name`` input) -> revealed inputs."""
        return {i["name"]: i for i in self.inputs(typ)}


def run_program(
    stage: str,
    build_dir: Path,
    overrides: Mapping[str, Any] | None = None,
    program: Callable[[], object] | None = None,
) -> ProgramRun:
    """Runs infra/__main__.py (or ``program``) as ``pulumi up`` would, against the mocks."""
    config, secret_keys = stack_config(
        stage, {"promptcache:buildDir": str(build_dir), **(overrides or {})}
    )
    recorder = Recorder()
    set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(recorder, project="promptcache", stack=stage, preview=False)
    pulumi.runtime.set_all_config(config, secret_keys)
    main = program or (lambda: runpy.run_path(str(REPO / "infra"), run_name="__main__"))

    captured: dict[str, Any] = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        main()
        outputs = get_root_resource().outputs  # type: ignore[union-attr]
        names = sorted(outputs)
        values = [pulumi.Output.from_input(outputs[n]) for n in names]

        def keep(resolved: list[Any]) -> None:
            secret = resolved[len(names) :]
            captured["value"] = (
                dict(zip(names, resolved[: len(names)], strict=True)),
                {n for n, s in zip(names, secret, strict=True) if s},
            )

        # Resolves once every resource is registered; is_secret() per output.
        return pulumi.Output.all(*values, *[v.is_secret() for v in values]).apply(keep)

    run()
    outputs, secret_outputs = captured["value"]
    return ProgramRun(stage, recorder.resources, outputs, secret_outputs)


def noop_installer(target: build.Target, deps: Any, dest: Path, *, no_deps: bool = False) -> None:
    """The layers' pip step for program tests: the program only needs the files to exist."""


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    """A private copy of the sources, so a test can change them."""
    core, handlers = tmp_path / "src" / "promptcache", tmp_path / "src" / "handlers"
    shutil.copytree(build.CORE_DIR, core, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(build.HANDLERS_DIR, handlers, ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = tmp_path / "src" / "pyproject.toml"
    shutil.copy(build.PYPROJECT, pyproject)
    return {"core_dir": core, "handlers_dir": handlers, "pyproject": pyproject}


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Artifacts for every target the example stacks use (arm64, Python 3.12) and one other
    (x86_64, 3.13), built by infra.build without the network step."""
    out = tmp_path_factory.mktemp("artifacts")
    for arch, python in (("arm64", "3.12"), ("x86_64", "3.13")):
        build.build(build.Target.lambda_runtime(arch, python), out, installer=noop_installer)
    return out


@pytest.fixture(scope="session")
def dev(artifacts_dir: Path) -> ProgramRun:
    return run_program("dev", artifacts_dir)


@pytest.fixture(scope="session")
def prod(artifacts_dir: Path) -> ProgramRun:
    return run_program("prod", artifacts_dir)
