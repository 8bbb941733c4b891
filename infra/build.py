"""Build the Lambda artifacts the Pulumi program deploys.

    .venv/bin/python -m infra.build --arch arm64 --python 3.12 --out build/

Writes four files into ``--out``:

- ``promptcache-layer-<arch>-py<version>.zip``: the layer. ``python/promptcache`` (the core
  package, functions/promptcache) plus the runtime dependencies listed in pyproject.toml's
  ``[project].dependencies``, installed by pip from binary manylinux wheels for the Lambda
  architecture and Python version, whatever machine runs the build (PyPI alone is enough).
- ``promptcache-functions.zip``: the function code, the handler modules (``chat.py``,
  ``stats.py``, ``health.py``) at the zip root, and ``run.sh`` (executable), the entry point of
  the optional streaming function (``promptcache serve`` behind the Lambda Web Adapter).
- ``promptcache-verifier-layer-<arch>-py<version>.zip``: the verifier's layer, attached only
  with ``promptcache:verifier local``: onnxruntime and tokenizers (without their dependencies:
  numpy is the core layer's, the rest only serves their tools), the trained weights
  (``promptcache/models/verifier.onnx``) and the tokenizer beside them, both checked against the
  sha256 the runtime pins. ``--no-verifier`` leaves it out.
- ``promptcache-layer-<arch>-py<version>.json``: the manifest: target, sizes, the installed
  distributions and digests of the sources. The Pulumi program refuses artifacts that are
  missing, built for another target or older than the sources.

Prints the sizes; exits non-zero with a message when the unzipped layers and code exceed Lambda's
250 MB limit, or when a zipped layer is too big to upload without an S3 bucket.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parent.parent
CORE_DIR = REPO / "functions" / "promptcache"
HANDLERS_DIR = REPO / "functions" / "handlers"
TOOLS_DIR = REPO / "functions" / "tools"
PYPROJECT = REPO / "pyproject.toml"
DEFAULT_OUT = REPO / "build"

#: Lambda architecture -> the machine name in wheel platform tags.
ARCHITECTURES = {"arm64": "aarch64", "x86_64": "x86_64"}
#: Lambda's Python runtimes this project supports -> the glibc of their OS (Amazon Linux 2023).
#: numpy 2.x wheels need glibc 2.28 or newer, hence python3.12 and later.
LAMBDA_PYTHONS = {"3.12": (2, 34), "3.13": (2, 34), "3.14": (2, 34)}
#: Oldest glibc a manylinux wheel can target, per machine.
_OLDEST_GLIBC_MINOR = {"x86_64": 5, "aarch64": 17}

MiB = 1024 * 1024
#: Lambda: a function's code plus all its layers, unzipped.
UNZIPPED_LIMIT_BYTES = 250 * MiB
#: Lambda: a zip uploaded with the request itself (no S3 bucket), as the Pulumi program does.
DIRECT_UPLOAD_LIMIT_BYTES = 50 * MiB

#: Installed into the layer besides pyproject's dependencies. Deployed, runtime.py reads the
#: secrets from SSM through Powertools parameters, which needs boto3. Lambda's runtime has a
#: boto3, but the botocore that aws-xray-sdk brings into the layer would shadow the runtime's and
#: pair that boto3 with a botocore it was not released with: the layer carries both, resolved
#: together.
LAYER_EXTRA_DEPENDENCIES = ("boto3",)

FUNCTIONS_ZIP = "promptcache-functions.zip"
#: The streaming function's handler: a script in functions/handlers, zipped with mode 0755.
STARTUP_SCRIPT = "run.sh"
#: What ``run.sh`` runs (``python -m promptcache_tools.cli serve``): the tool modules the function
#: code carries, as the package ``promptcache_tools``. The other tools (eval, calibrate) are never
#: deployed, and the layer holds no tool at all.
TOOLS_PACKAGE = "promptcache_tools"
SERVE_MODULES = ("__init__.py", "cli.py", "server.py")
#: The verifier layer's distributions, at the versions pyproject's ``local`` extra allows.
VERIFIER_DISTRIBUTIONS = ("onnxruntime", "tokenizers")
#: Parts of onnxruntime that build, convert or quantize models: never imported to run one.
VERIFIER_PRUNE = ("onnxruntime/transformers", "onnxruntime/quantization", "onnxruntime/tools")
#: Where the verifier layer puts the weights and the tokenizer (promptcache.adapters.local_verifier
#: reads them there): the core package's models/ directory, which the core layer leaves empty.
VERIFIER_DIR = "python/promptcache/models"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: same inputs, same bytes, no redeploy
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".onnx")  # .onnx: not in the layer (see build)


class BuildError(Exception):
    """The artifacts cannot be built (or would not fit Lambda); the message says why."""


@dataclass(frozen=True)
class Target:
    """What the layer is built for: a Lambda architecture, a Python version and its glibc."""

    arch: str
    python: str
    glibc: tuple[int, int]

    @classmethod
    def lambda_runtime(cls, arch: str, python: str) -> Target:
        if arch not in ARCHITECTURES:
            raise BuildError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}; got {arch!r}"
            )
        if python not in LAMBDA_PYTHONS:
            raise BuildError(
                f"python must be one of {', '.join(LAMBDA_PYTHONS)} (Lambda runtimes with glibc "
                f"2.28+, which numpy 2 needs); got {python!r}"
            )
        return cls(arch, python, LAMBDA_PYTHONS[python])

    @classmethod
    def host(cls) -> Target:
        """This machine and interpreter (for the smoke test: the artifact runs here)."""
        machine = platform.machine()
        arch = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "x86_64", "AMD64": "x86_64"}.get(
            machine
        )
        if arch is None:
            raise BuildError(f"no Lambda architecture matches this machine ({machine})")
        libc, version = platform.libc_ver()
        if libc != "glibc":
            raise BuildError(
                f"the host build needs glibc; this machine has {libc or 'an unknown libc'}"
            )
        major, minor = (int(p) for p in version.split(".")[:2])
        return cls(arch, f"{sys.version_info.major}.{sys.version_info.minor}", (major, minor))

    @property
    def machine(self) -> str:
        return ARCHITECTURES[self.arch]

    @property
    def runtime(self) -> str:
        return f"python{self.python}"

    @property
    def layer_zip(self) -> str:
        return f"promptcache-layer-{self.arch}-py{self.python}.zip"

    @property
    def verifier_zip(self) -> str:
        return f"promptcache-verifier-layer-{self.arch}-py{self.python}.zip"

    @property
    def manifest(self) -> str:
        return f"promptcache-layer-{self.arch}-py{self.python}.json"

    def platforms(self) -> list[str]:
        """Every manylinux tag whose wheels run on this glibc, newest first.

        pip does not expand ``manylinux_2_34`` to older tags by itself, so a single
        ``manylinux2014`` tag would make it skip the many wheels (numpy 2.x among them) that
        only ship ``manylinux_2_27``/``2_28`` builds.
        """
        major, minor = self.glibc
        oldest = _OLDEST_GLIBC_MINOR[self.machine]
        tags = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, oldest - 1, -1)]
        return [*tags, f"manylinux2014_{self.machine}"]


@dataclass(frozen=True)
class Artifact:
    path: Path
    zipped_bytes: int
    unzipped_bytes: int
    files: int
    sha256: str


@dataclass(frozen=True)
class BuildResult:
    target: Target
    layer: Artifact
    functions: Artifact
    handlers: tuple[str, ...]
    distributions: dict[str, str]
    source_digest: str
    manifest: Path
    verifier: Artifact | None = None
    verifier_distributions: dict[str, str] | None = None
    verifier_digest: str | None = None

    @property
    def total_unzipped_bytes(self) -> int:
        """What a function with every layer takes unzipped (Lambda's 250 MB counts them all)."""
        extra = self.verifier.unzipped_bytes if self.verifier else 0
        return self.layer.unzipped_bytes + self.functions.unzipped_bytes + extra

    def report(self) -> str:
        total = self.total_unzipped_bytes
        verifier = (
            [
                f"verifier   {self.verifier.path}",
                f"           {_mb(self.verifier.unzipped_bytes)} unzipped, "
                f"{_mb(self.verifier.zipped_bytes)} zipped, {self.verifier.files} files",
            ]
            if self.verifier
            else ["verifier   not built (--no-verifier)"]
        )
        return "\n".join(
            [
                f"target     {self.target.runtime} {self.target.arch} "
                f"(manylinux, glibc {self.target.glibc[0]}.{self.target.glibc[1]})",
                f"layer      {self.layer.path}",
                f"           {_mb(self.layer.unzipped_bytes)} unzipped, "
                f"{_mb(self.layer.zipped_bytes)} zipped, {self.layer.files} files, "
                f"{len(self.distributions)} distributions",
                f"functions  {self.functions.path}",
                f"           {_mb(self.functions.unzipped_bytes)} unzipped, "
                f"{_mb(self.functions.zipped_bytes)} zipped ({', '.join(self.handlers)})",
                *verifier,
                f"total      {_mb(total)} unzipped of Lambda's {_mb(UNZIPPED_LIMIT_BYTES)}",
            ]
        )


def _mb(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n / 1024:.1f} KiB"


# ---------------------------------------------------------------- inputs
def runtime_dependencies(pyproject: Path = PYPROJECT) -> list[str]:
    """The layer's dependencies: pyproject.toml's ``[project].dependencies`` (plus
    ``LAYER_EXTRA_DEPENDENCIES``)."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"cannot read [project] from {pyproject}: {exc}") from exc
    deps = project.get("dependencies")
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise BuildError(f"{pyproject}: [project].dependencies must be a list of strings")
    return [*deps, *LAYER_EXTRA_DEPENDENCIES]


def verifier_dependencies(pyproject: Path = PYPROJECT) -> list[str]:
    """The verifier layer's distributions: ``VERIFIER_DISTRIBUTIONS`` as pyproject's ``local``
    extra pins them (the versions the embedded verifier is tested with)."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        local = project["optional-dependencies"]["local"]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(
            f"cannot read [project.optional-dependencies].local from {pyproject}: {exc}"
        ) from exc
    chosen = {}
    for spec in local if isinstance(local, list) else []:
        name = re.split(r"[<>=!~;\[\s]", str(spec), maxsplit=1)[0].strip().lower()
        if name in VERIFIER_DISTRIBUTIONS:
            chosen[name] = str(spec)
    missing = [d for d in VERIFIER_DISTRIBUTIONS if d not in chosen]
    if missing:
        raise BuildError(
            f"{pyproject}: the local extra must list {', '.join(missing)} (the verifier runs on "
            "them)"
        )
    return [chosen[d] for d in VERIFIER_DISTRIBUTIONS]


@dataclass(frozen=True)
class VerifierFiles:
    """The trained weights and the tokenizer, each checked against the runtime's pinned sha256."""

    model: Path
    tokenizer: Path
    model_sha256: str
    tokenizer_sha256: str


def verifier_pins() -> tuple[str, str, str]:
    """(model file name, model sha256, tokenizer sha256) as promptcache.adapters pins them."""
    from promptcache.adapters.local_embedder import TOKENIZER_SHA256
    from promptcache.adapters.local_verifier import MODEL_FILE, MODEL_SHA256

    return MODEL_FILE, MODEL_SHA256, TOKENIZER_SHA256


def verifier_files(core_dir: Path = CORE_DIR, tokenizer: Path | None = None) -> VerifierFiles:
    """The weights in ``core_dir``'s models/ and the tokenizer of the installed embedder package
    (or ``tokenizer``), refused unless their bytes are the ones the runtime pins."""
    from promptcache.adapters.local_embedder import TOKENIZER_PACKAGE, TOKENIZER_RELPATH

    model_file, model_sha, tokenizer_sha = verifier_pins()
    if tokenizer is None:
        spec = importlib.util.find_spec(TOKENIZER_PACKAGE)
        if spec is None or spec.origin is None:
            raise BuildError(
                f"the verifier layer carries the tokenizer of the package {TOKENIZER_PACKAGE!r}, "
                "which is not installed: run `make setup` (or build with --no-verifier)"
            )
        tokenizer = Path(spec.origin).parent / TOKENIZER_RELPATH
    model = core_dir / "models" / model_file
    checks = ((model, model_sha, "weights"), (tokenizer, tokenizer_sha, "tokenizer"))
    for path, pinned, what in checks:
        if not path.is_file():
            raise BuildError(f"the verifier's {what} {path} are missing")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != pinned:
            raise BuildError(
                f"the verifier's {what} {path} have sha256 {digest}; the runtime pins {pinned} "
                "and would refuse them (retrained? pin the new sha256 in "
                "promptcache/adapters/local_verifier.py)"
            )
    return VerifierFiles(model, tokenizer, model_sha, tokenizer_sha)


def verifier_digest(target: Target, deps: Sequence[str]) -> str:
    """What the verifier layer is built from: target, distributions and the pinned files."""
    _, model_sha, tokenizer_sha = verifier_pins()
    body = [asdict(target), sorted(deps), model_sha, tokenizer_sha]
    return hashlib.sha256(json.dumps(body).encode()).hexdigest()


def _source_files(root: Path) -> Iterable[Path]:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (
            path.is_file()
            and not _SKIP_DIRS.intersection(rel.parts)
            and path.suffix not in _SKIP_SUFFIXES
        ):
            yield path


def handler_files(handlers_dir: Path = HANDLERS_DIR) -> list[Path]:
    """The handler modules: every module of functions/handlers except the package marker."""
    return sorted(p for p in handlers_dir.glob("*.py") if p.name != "__init__.py")


def serve_files(tools_dir: Path = TOOLS_DIR) -> list[Path]:
    """The tool modules the streaming function runs (``SERVE_MODULES`` of functions/tools)."""
    return [tools_dir / name for name in SERVE_MODULES if (tools_dir / name).is_file()]


def source_digest(
    target: Target,
    deps: Sequence[str],
    core_dir: Path = CORE_DIR,
    handlers_dir: Path = HANDLERS_DIR,
    tools_dir: Path = TOOLS_DIR,
) -> str:
    """What the artifacts are built from: target, dependency specifiers, core, handlers (with the
    startup script) and the tool modules the startup script runs."""
    h = hashlib.sha256()
    h.update(json.dumps([asdict(target), sorted(deps)]).encode())
    script = handlers_dir / STARTUP_SCRIPT
    for label, files, base in (
        ("core", list(_source_files(core_dir)), core_dir),
        (
            "handlers",
            [*handler_files(handlers_dir), *([script] if script.is_file() else [])],
            handlers_dir,
        ),
        ("tools", serve_files(tools_dir), tools_dir),
    ):
        for path in files:
            h.update(f"\0{label}/{path.relative_to(base).as_posix()}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------- steps
class Installer(Protocol):
    """The network step: install ``deps`` into ``dest`` for ``target`` (without their own
    dependencies with ``no_deps``)."""

    def __call__(
        self, target: Target, deps: Sequence[str], dest: Path, *, no_deps: bool = False
    ) -> None: ...


def pip_install(target: Target, deps: Sequence[str], dest: Path, *, no_deps: bool = False) -> None:
    """Install ``deps`` into ``dest`` from binary wheels for ``target`` (never this machine's)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--no-compile",
        "--target",
        str(dest),
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        target.python,
    ]
    for tag in target.platforms():
        cmd += ["--platform", tag]
    if no_deps:
        cmd.append("--no-deps")
    cmd += list(deps)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise BuildError(
            f"pip could not install the layer's dependencies for {target.runtime} {target.arch} "
            f"(exit {proc.returncode}):\n{tail}"
        )


def _prune(root: Path) -> None:
    """Drop what never runs on Lambda: bytecode caches and console scripts with local shebangs."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_dir() and path.name in _SKIP_DIRS:
            shutil.rmtree(path)
        elif path.is_file() and path.suffix in _SKIP_SUFFIXES:
            path.unlink()
    shutil.rmtree(root / "bin", ignore_errors=True)


def _distributions(site: Path) -> dict[str, str]:
    return {
        d.metadata["Name"]: d.version
        for d in sorted(
            metadata.distributions(path=[str(site)]), key=lambda d: d.metadata["Name"].lower()
        )
    }


def write_zip(root: Path, zip_path: Path) -> Artifact:
    """Zip ``root``'s files (sorted, fixed timestamps, normalized modes): reproducible bytes."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(zip_path.suffix + ".tmp")
    unzipped = files = 0
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=_ZIP_TIME)
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            zf.writestr(info, data, compresslevel=9)
            unzipped += len(data)
            files += 1
    tmp.replace(zip_path)
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    return Artifact(zip_path, zip_path.stat().st_size, unzipped, files, digest)


def build(
    target: Target,
    out: Path = DEFAULT_OUT,
    *,
    installer: Installer = pip_install,
    pyproject: Path = PYPROJECT,
    core_dir: Path = CORE_DIR,
    handlers_dir: Path = HANDLERS_DIR,
    tools_dir: Path = TOOLS_DIR,
    unzipped_limit: int = UNZIPPED_LIMIT_BYTES,
    upload_limit: int = DIRECT_UPLOAD_LIMIT_BYTES,
    verifier: bool = True,
    tokenizer: Path | None = None,
) -> BuildResult:
    deps = runtime_dependencies(pyproject)
    verifier_deps = verifier_dependencies(pyproject) if verifier else []
    files = verifier_files(core_dir, tokenizer) if verifier else None
    handlers = handler_files(handlers_dir)
    if not handlers:
        raise BuildError(f"no handler modules in {handlers_dir}")
    if not (handlers_dir / STARTUP_SCRIPT).is_file():
        raise BuildError(
            f"no {STARTUP_SCRIPT} in {handlers_dir} (the streaming function's entry point)"
        )
    tools = serve_files(tools_dir)
    if len(tools) != len(SERVE_MODULES):
        raise BuildError(
            f"{tools_dir} lacks {sorted(set(SERVE_MODULES) - {p.name for p in tools})}: "
            f"{STARTUP_SCRIPT} runs them"
        )
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="promptcache-build-") as tmpdir:
        work = Path(tmpdir)
        site = work / "layer" / "python"
        site.mkdir(parents=True)
        installer(target, deps, site)
        if (site / "promptcache").exists():
            raise BuildError(
                "a dependency installed a top-level 'promptcache' package into the layer"
            )
        shutil.copytree(
            core_dir,
            site / "promptcache",
            # the verifier's weights go into the verifier layer, with its runtime (onnxruntime,
            # tokenizers), attached only with promptcache:verifier local
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.onnx"),
        )
        _prune(site)
        distributions = _distributions(site)
        layer = write_zip(work / "layer", out / target.layer_zip)

        code = work / "functions"
        code.mkdir()
        for path in handlers:
            shutil.copy2(path, code / path.name)
        shutil.copyfile(handlers_dir / STARTUP_SCRIPT, code / STARTUP_SCRIPT)
        (code / STARTUP_SCRIPT).chmod(0o755)  # whatever the checkout kept: Lambda execs it
        (code / TOOLS_PACKAGE).mkdir()
        for path in tools:
            shutil.copy2(path, code / TOOLS_PACKAGE / path.name)
        functions = write_zip(code, out / FUNCTIONS_ZIP)

        verifier_layer, verifier_distributions = None, None
        stale = out / target.verifier_zip
        if files is None:
            stale.unlink(missing_ok=True)  # never deploy a verifier layer this build did not make
        else:
            root = work / "verifier"
            verifier_distributions = _verifier_site(target, verifier_deps, files, root, installer)
            overlap = sorted(_relative_files(root) & _relative_files(work / "layer"))
            if overlap:
                raise BuildError(
                    f"the verifier layer would overwrite {len(overlap)} file(s) of the core layer "
                    f"({', '.join(overlap[:3])}): remove onnxruntime/tokenizers from the core "
                    "layer's dependencies or the verifier layer's"
                )
            verifier_layer = write_zip(root, stale)

    total = layer.unzipped_bytes + functions.unzipped_bytes
    extra = verifier_layer.unzipped_bytes if verifier_layer else 0
    if total + extra > unzipped_limit:
        parts = f"{_mb(layer.unzipped_bytes)} layer" + (
            f", {_mb(extra)} verifier layer" if verifier_layer else ""
        )
        raise BuildError(
            f"the layers and code take {_mb(total + extra)} unzipped ({parts}); Lambda's limit "
            f"is {_mb(unzipped_limit)}: trim pyproject's [project].dependencies"
            + (" (or build with --no-verifier)" if verifier_layer else "")
        )
    for name, artifact in (("layer", layer), ("verifier layer", verifier_layer)):
        if artifact is not None and artifact.zipped_bytes > upload_limit:
            raise BuildError(
                f"the zipped {name} is {_mb(artifact.zipped_bytes)}; a layer uploaded without "
                f"an S3 bucket must stay under {_mb(upload_limit)}"
            )

    result = BuildResult(
        target=target,
        layer=layer,
        functions=functions,
        handlers=tuple(p.stem for p in handlers),
        distributions=distributions,
        source_digest=source_digest(target, deps, core_dir, handlers_dir, tools_dir),
        manifest=out / target.manifest,
        verifier=verifier_layer,
        verifier_distributions=verifier_distributions,
        verifier_digest=verifier_digest(target, verifier_deps) if verifier_layer else None,
    )
    write_manifest(result)
    return result


def _relative_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _verifier_site(
    target: Target,
    deps: Sequence[str],
    files: VerifierFiles,
    root: Path,
    installer: Installer,
) -> dict[str, str]:
    """The verifier layer's tree under ``root``: its two distributions without their
    dependencies, pruned, and the checked weights and tokenizer in promptcache/models/."""
    from promptcache.adapters.local_verifier import TOKENIZER_FILE

    site = root / "python"
    site.mkdir(parents=True)
    installer(target, deps, site, no_deps=True)
    for rel in VERIFIER_PRUNE:
        shutil.rmtree(site / rel, ignore_errors=True)
    _prune(site)
    models = root / VERIFIER_DIR
    if models.exists():
        raise BuildError(f"a dependency of the verifier installed {VERIFIER_DIR} into its layer")
    distributions = _distributions(site)
    models.mkdir(parents=True)
    shutil.copyfile(files.model, models / files.model.name)
    shutil.copyfile(files.tokenizer, models / TOKENIZER_FILE)
    return distributions


def write_manifest(result: BuildResult) -> None:
    def artifact(a: Artifact) -> dict[str, object]:
        return {
            "file": a.path.name,
            "zipped_bytes": a.zipped_bytes,
            "unzipped_bytes": a.unzipped_bytes,
            "files": a.files,
            "sha256": a.sha256,
        }

    body = {
        "target": {
            "arch": result.target.arch,
            "python": result.target.python,
            "glibc": list(result.target.glibc),
            "runtime": result.target.runtime,
        },
        "layer": artifact(result.layer),
        "functions": {**artifact(result.functions), "handlers": list(result.handlers)},
        "distributions": result.distributions,
        "source_digest": result.source_digest,
        "verifier": None
        if result.verifier is None
        else {
            **artifact(result.verifier),
            "distributions": result.verifier_distributions,
            "digest": result.verifier_digest,
        },
    }
    result.manifest.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.build",
        description="Build the Lambda layer (manylinux wheels for the target) and function zip.",
    )
    parser.add_argument(
        "--arch", choices=sorted(ARCHITECTURES), default="arm64", help="Lambda architecture"
    )
    parser.add_argument(
        "--python", default="3.12", help=f"Lambda Python version ({', '.join(LAMBDA_PYTHONS)})"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory (default: build/)"
    )
    parser.add_argument(
        "--host",
        action="store_true",
        help="build for this machine and interpreter instead (to run the artifact here)",
    )
    parser.add_argument(
        "--verifier",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also build the verifier layer (promptcache:verifier local); default: yes",
    )
    args = parser.parse_args(argv)
    try:
        target = Target.host() if args.host else Target.lambda_runtime(args.arch, args.python)
        result = build(target, args.out, verifier=args.verifier)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
