"""The built Lambda artifacts, as the Pulumi program finds them.

The program never builds: it deploys what ``python -m infra.build`` wrote, and refuses artifacts
that are missing, built for another architecture or Python, or older than the sources, naming
the command that fixes it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pulumi

from infra.build import (
    CORE_DIR,
    HANDLERS_DIR,
    PYPROJECT,
    REPO,
    Target,
    runtime_dependencies,
    source_digest,
)


class ArtifactError(pulumi.RunError):
    """The built artifacts cannot be deployed as they are; the message says what to run."""


@dataclass(frozen=True)
class Artifacts:
    layer_zip: Path
    layer_sha256: str
    functions_zip: Path
    functions_sha256: str
    handlers: tuple[str, ...]
    layer_unzipped_bytes: int

    @staticmethod
    def _b64(hex_digest: str) -> str:
        return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")

    @property
    def layer_hash(self) -> str:
        """base64 sha256 of the layer zip, as Lambda's ``source_code_hash`` wants it."""
        return self._b64(self.layer_sha256)

    @property
    def functions_hash(self) -> str:
        return self._b64(self.functions_sha256)


def build_command(arch: str, python: str, out: Path) -> str:
    try:
        shown = out.relative_to(REPO)
    except ValueError:
        shown = out
    return f".venv/bin/python -m infra.build --arch {arch} --python {python} --out {shown}/"


def load(
    build_dir: Path,
    arch: str,
    python: str,
    handlers: Iterable[str],
    *,
    pyproject: Path = PYPROJECT,
    core_dir: Path = CORE_DIR,
    handlers_dir: Path = HANDLERS_DIR,
) -> Artifacts:
    """The artifacts for ``arch``/``python`` in ``build_dir``, checked against the sources."""
    target = Target.lambda_runtime(arch, python)
    fix = f"run `{build_command(arch, python, build_dir)}` from the repository root"
    manifest_path = build_dir / target.manifest
    if not manifest_path.is_file():
        raise ArtifactError(
            f"no Lambda artifacts for {target.runtime} {arch} in {build_dir}: {fix}"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        layer, functions = manifest["layer"], manifest["functions"]
        built_for = (manifest["target"]["arch"], manifest["target"]["python"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{manifest_path} is unreadable ({exc}): {fix}") from exc
    if built_for != (arch, python):
        raise ArtifactError(
            f"{manifest_path} describes a build for {built_for}, not {(arch, python)}: {fix}"
        )
    layer_zip, functions_zip = build_dir / layer["file"], build_dir / functions["file"]
    for path in (layer_zip, functions_zip):
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: {fix}")
    expected = source_digest(target, runtime_dependencies(pyproject), core_dir, handlers_dir)
    if manifest.get("source_digest") != expected:
        raise ArtifactError(
            f"the artifacts in {build_dir} are older than the sources (functions/, pyproject.toml "
            f"dependencies): {fix}"
        )
    built_handlers = tuple(functions.get("handlers", ()))
    missing = sorted(set(handlers) - set(built_handlers))
    if missing:
        raise ArtifactError(f"the function zip has no module for {', '.join(missing)}: {fix}")
    return Artifacts(
        layer_zip=layer_zip,
        layer_sha256=layer["sha256"],
        functions_zip=functions_zip,
        functions_sha256=functions["sha256"],
        handlers=built_handlers,
        layer_unzipped_bytes=int(layer["unzipped_bytes"]),
    )
