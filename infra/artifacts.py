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
    verifier_dependencies,
    verifier_digest,
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
    #: The verifier layer, when the stack attaches it (promptcache:verifier local).
    verifier_zip: Path | None = None
    verifier_sha256: str | None = None

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

    @property
    def verifier_hash(self) -> str:
        if self.verifier_sha256 is None:
            raise ArtifactError("these artifacts were loaded without the verifier layer")
        return self._b64(self.verifier_sha256)


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
    verifier: bool = False,
) -> Artifacts:
    """The artifacts for ``arch``/``python`` in ``build_dir``, checked against the sources; with
    ``verifier``, the verifier layer too, checked against the pinned weights."""
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
    verifier_zip, verifier_sha256 = None, None
    if verifier:
        built = manifest.get("verifier")
        if not isinstance(built, dict):
            raise ArtifactError(
                f"promptcache:verifier is local but {build_dir} has no verifier layer (built with "
                f"--no-verifier?): {fix}"
            )
        verifier_zip = build_dir / str(built.get("file"))
        if not verifier_zip.is_file():
            raise ArtifactError(f"{verifier_zip} is missing: {fix}")
        if built.get("digest") != verifier_digest(target, verifier_dependencies(pyproject)):
            raise ArtifactError(
                f"the verifier layer in {build_dir} was built from other weights or versions "
                f"than the sources pin (retrained, or pyproject's local extra changed): {fix}"
            )
        verifier_sha256 = str(built.get("sha256"))
    return Artifacts(
        layer_zip=layer_zip,
        layer_sha256=layer["sha256"],
        functions_zip=functions_zip,
        functions_sha256=functions["sha256"],
        handlers=built_handlers,
        layer_unzipped_bytes=int(layer["unzipped_bytes"]),
        verifier_zip=verifier_zip,
        verifier_sha256=verifier_sha256,
    )
