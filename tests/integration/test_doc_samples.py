"""Every sample of README.md, QUICKSTART.md and docs/ marked ``<!-- sample: run ... -->`` runs
against a real ``promptcache serve`` whose model is a local OpenAI-compatible stand-in, and
succeeds (the marks: tests/support/doc_samples.py and docs/development.md).

A sample's ``http://127.0.0.1:8080`` becomes the test server's address and ``.venv/bin/`` this
virtualenv's ``bin/``. ``python`` samples run with this virtualenv's interpreter; ``sh`` samples
with bash (``set -eo pipefail``) and a ``curl`` that fails on any HTTP error status, so a sample
whose request the server refuses fails here. Each runs in its own scratch directory with the
server's settings in its environment (so ``promptcache warm`` fills the server's store)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.doc_samples import BASE_URL, Block, runnable
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent
TENANT_KEY = "doc-sample-key-team-a"
OTHER_KEY = "doc-sample-key-team-b"
ADMIN_KEY = "doc-sample-admin-key"
#: Every curl of a sample fails on an HTTP error and never hangs.
CURL = 'curl() { command curl --fail-with-body --max-time 60 "$@"; }\n'
SAMPLES = runnable()


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as server:
        yield server


def _server(tmp: Path, upstream: OpenAIUpstream, **extra: str) -> Iterator[ServerProcess]:
    env = {
        "PROMPTCACHE_DATA_DIR": str(tmp / "data"),
        "OPENAI_BASE_URL": upstream.base_url,
        "PROMPTCACHE_MODEL": "test-model",
        **extra,
    }
    server = ServerProcess(env, tmp / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def open_server(
    tmp_path_factory: pytest.TempPathFactory, upstream: OpenAIUpstream
) -> Iterator[ServerProcess]:
    yield from _server(tmp_path_factory.mktemp("doc-open"), upstream)


@pytest.fixture(scope="module")
def keyed_server(
    tmp_path_factory: pytest.TempPathFactory, upstream: OpenAIUpstream
) -> Iterator[ServerProcess]:
    yield from _server(
        tmp_path_factory.mktemp("doc-keys"),
        upstream,
        PROMPTCACHE_API_KEYS=f"{TENANT_KEY}:team-a,{OTHER_KEY}:team-b",
        PROMPTCACHE_ADMIN_KEY=ADMIN_KEY,
    )


def source(block: Block, chain: list[Block], server: ServerProcess) -> str:
    code = "".join(b.code for b in [*chain, block])
    assert BASE_URL in code or ".venv/bin/" in code, f"{block.id} names no server or command"
    return code.replace(BASE_URL, server.url).replace(".venv/bin/", f"{VENV_BIN}/")


def test_the_samples_are_found() -> None:
    languages = {block.language for block, _ in SAMPLES}
    assert languages == {"sh", "python"}
    assert any("keys" in block.options for block, _ in SAMPLES)


@pytest.mark.parametrize(("block", "chain"), SAMPLES, ids=[b.id for b, _ in SAMPLES])
def test_sample_runs(block: Block, chain: list[Block], request: pytest.FixtureRequest) -> None:
    keyed = "keys" in block.options
    server: ServerProcess = request.getfixturevalue("keyed_server" if keyed else "open_server")
    code = source(block, chain, server)
    tmp: Path = request.getfixturevalue("tmp_path")
    env = {
        **os.environ,
        **server.env,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TENANT_KEY": TENANT_KEY,
        "ADMIN_KEY": ADMIN_KEY,
    }
    if block.language == "python":
        argv = [sys.executable, "-c", code]
    else:
        if shutil.which("curl") is None:
            pytest.fail("curl is missing (the sh samples use it): apt-get install -y curl")
        argv = ["bash", "-c", "set -eo pipefail\n" + CURL + code]
    done = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=240)
    report = f"{block.id} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, report
    assert done.stdout.strip(), f"{block.id} printed nothing\n{done.stderr[-3000:]}"
