"""The artifact build (infra.build) and the program's refusal of unusable artifacts
(infra.artifacts). The pip step is the network boundary: here it is replaced by a step that
installs nothing or writes files of a chosen size; the smoke test runs the real one."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from infra import artifacts, build
from infra.build import BuildError, Target
from tests.infra.conftest import noop_installer

pytestmark = pytest.mark.infra

MODULES = ("chat", "health", "stats")


def test_platform_tags_cover_every_glibc_up_to_the_runtime() -> None:
    tags = Target.lambda_runtime("arm64", "3.12").platforms()
    assert tags[0] == "manylinux_2_34_aarch64"
    assert "manylinux_2_28_aarch64" in tags  # numpy 2.x ships only 2_27/2_28 wheels
    assert tags[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert not any("2_35" in t or "x86_64" in t for t in tags)
    x86 = Target.lambda_runtime("x86_64", "3.13").platforms()
    assert x86[0] == "manylinux_2_34_x86_64" and "manylinux_2_5_x86_64" in x86


@pytest.mark.parametrize(
    ("arch", "python", "message"),
    [
        ("amd64", "3.12", "architecture must be one of arm64, x86_64"),
        ("arm64", "3.11", "python must be one of 3.12, 3.13, 3.14"),
    ],
)
def test_unsupported_targets_are_refused(arch: str, python: str, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        Target.lambda_runtime(arch, python)


def test_runtime_dependencies_come_from_pyproject(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["httpx>=0.27", "numpy>=2"]\n')
    assert build.runtime_dependencies(pyproject) == ["httpx>=0.27", "numpy>=2", "boto3"]
    pyproject.write_text('[project]\nname = "x"\ndependencies = "numpy"\n')
    with pytest.raises(BuildError, match=r"\[project\]\.dependencies must be a list of strings"):
        build.runtime_dependencies(pyproject)
    with pytest.raises(BuildError, match="cannot read"):
        build.runtime_dependencies(tmp_path / "missing.toml")


def test_build_writes_the_layer_the_function_zip_and_a_manifest(tmp_path: Path) -> None:
    target = Target.lambda_runtime("arm64", "3.12")
    result = build.build(target, tmp_path, installer=noop_installer)
    with zipfile.ZipFile(result.layer.path) as zf:
        names = zf.namelist()
    assert "python/promptcache/__init__.py" in names and "python/promptcache/http/api.py" in names
    assert "python/promptcache/http/static/dashboard.js" in names
    assert all(n.startswith("python/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # The layer holds what Lambda runs: no tool module (eval, calibrate, CLI, local server).
    assert not any("promptcache_tools" in n or "/evaluation/" in n or n.rsplit("/", 1)[-1] in
                   ("cli.py", "server.py") for n in names)  # fmt: skip
    with zipfile.ZipFile(result.functions.path) as zf:
        # The handlers, run.sh and what run.sh runs (the server and the CLI): no other tool.
        serve = [f"promptcache_tools/{name}" for name in build.SERVE_MODULES]
        assert sorted(zf.namelist()) == sorted([*(f"{m}.py" for m in MODULES), "run.sh", *serve])
    assert result.handlers == MODULES
    manifest = json.loads((tmp_path / "promptcache-layer-arm64-py3.12.json").read_text())
    assert manifest["target"] == {
        "arch": "arm64",
        "python": "3.12",
        "glibc": [2, 34],
        "runtime": "python3.12",
    }
    assert manifest["layer"]["unzipped_bytes"] == result.layer.unzipped_bytes > 0
    assert manifest["functions"]["handlers"] == list(MODULES)
    assert "layer" in result.report() and "unzipped" in result.report()


def test_builds_are_reproducible(tmp_path: Path) -> None:
    target = Target.lambda_runtime("x86_64", "3.13")
    first = build.build(target, tmp_path / "a", installer=noop_installer)
    second = build.build(target, tmp_path / "b", installer=noop_installer)
    assert first.layer.sha256 == second.layer.sha256
    assert first.functions.sha256 == second.functions.sha256


def _filler(size: int, compressible: bool = False) -> build.Installer:
    def install(target: Target, deps: Sequence[str], dest: Path, *, no_deps: bool = False) -> None:
        data = b"\0" * size if compressible else os.urandom(size)
        (dest / ("filler-verifier.bin" if no_deps else "filler.bin")).write_bytes(data)

    return install


def test_a_layer_over_the_unzipped_limit_fails_the_build(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"unzipped .*Lambda's limit is 2\.0 MiB"):
        build.build(
            Target.lambda_runtime("arm64", "3.12"),
            tmp_path,
            installer=_filler(3 * build.MiB, compressible=True),
            unzipped_limit=2 * build.MiB,
        )


def test_a_zipped_layer_too_big_to_upload_fails_the_build(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"zipped layer is .* must stay under 1\.0 MiB"):
        build.build(
            Target.lambda_runtime("arm64", "3.12"),
            tmp_path,
            installer=_filler(2 * build.MiB),
            upload_limit=1 * build.MiB,
        )


def test_the_command_line_reports_errors_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build.main(["--arch", "arm64", "--python", "3.9", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: python must be one of 3.12")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- the program's checks
def _build(out: Path, sources: dict[str, Path], arch: str = "arm64", python: str = "3.12") -> None:
    build.build(Target.lambda_runtime(arch, python), out, installer=noop_installer, **sources)  # type: ignore[arg-type]


def test_fresh_artifacts_are_accepted(tmp_path: Path, sources: dict[str, Path]) -> None:
    _build(tmp_path / "out", sources)
    found = artifacts.load(tmp_path / "out", "arm64", "3.12", MODULES, **sources)  # type: ignore[arg-type]
    assert found.layer_zip.name == "promptcache-layer-arm64-py3.12.zip"
    assert found.handlers == MODULES


def test_artifacts_older_than_the_sources_are_refused(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    _build(tmp_path / "out", sources)
    core_api = sources["core_dir"] / "http" / "api.py"
    core_api.write_text(core_api.read_text() + "\n# changed\n")
    with pytest.raises(
        artifacts.ArtifactError, match="older than the sources.*python -m infra.build"
    ):
        artifacts.load(tmp_path / "out", "arm64", "3.12", MODULES, **sources)  # type: ignore[arg-type]


def test_changed_dependencies_make_artifacts_stale(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    _build(tmp_path / "out", sources)
    text = (
        sources["pyproject"]
        .read_text()
        .replace("dependencies = [", 'dependencies = [\n    "six",', 1)
    )
    sources["pyproject"].write_text(text)
    with pytest.raises(artifacts.ArtifactError, match="older than the sources"):
        artifacts.load(tmp_path / "out", "arm64", "3.12", MODULES, **sources)  # type: ignore[arg-type]


def test_artifacts_for_another_target_are_refused(tmp_path: Path, sources: dict[str, Path]) -> None:
    _build(tmp_path / "out", sources, "x86_64", "3.12")
    with pytest.raises(artifacts.ArtifactError, match="no Lambda artifacts for python3.12 arm64"):
        artifacts.load(tmp_path / "out", "arm64", "3.12", MODULES, **sources)  # type: ignore[arg-type]
    out = tmp_path / "out"
    (out / "promptcache-layer-x86_64-py3.12.json").rename(
        out / "promptcache-layer-arm64-py3.12.json"
    )
    with pytest.raises(
        artifacts.ArtifactError, match=r"describes a build for \('x86_64', '3.12'\)"
    ):
        artifacts.load(out, "arm64", "3.12", MODULES, **sources)  # type: ignore[arg-type]


def test_a_handler_missing_from_the_function_zip_is_refused(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    _build(tmp_path / "out", sources)
    with pytest.raises(artifacts.ArtifactError, match="no module for models"):
        artifacts.load(tmp_path / "out", "arm64", "3.12", (*MODULES, "models"), **sources)  # type: ignore[arg-type]


def test_a_missing_or_broken_artifact_is_refused(tmp_path: Path, sources: dict[str, Path]) -> None:
    out = tmp_path / "out"
    _build(out, sources)
    (out / "promptcache-functions.zip").unlink()
    with pytest.raises(artifacts.ArtifactError, match="promptcache-functions.zip is missing"):
        artifacts.load(out, "arm64", "3.12", MODULES, **sources)  # type: ignore[arg-type]
    (out / "promptcache-layer-arm64-py3.12.json").write_text("{not json")
    with pytest.raises(artifacts.ArtifactError, match="is unreadable"):
        artifacts.load(out, "arm64", "3.12", MODULES, **sources)  # type: ignore[arg-type]
