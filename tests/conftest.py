"""Shared fixtures. Backend-specific fixtures live in tests/support/fixtures_*.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess, local_server

pytest_plugins: list[str] = [
    "tests.support.fixtures_cloudflare",
    "tests.support.fixtures_upstash",
]

# Tests never read the user's settings or data.
for _name in list(os.environ):
    if _name.startswith(("PROMPTCACHE_", "OPENAI_", "CLOUDFLARE_", "UPSTASH_")):
        del os.environ[_name]
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

TESTS = Path(__file__).parent
#: Every test is marked by its folder, so `-m "not integration"` leaves no integration test in.
FOLDER_MARKS = {
    "unit": "unit",
    "contract": "contract",
    "integration": "integration",
    "infra": "infra",
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(TESTS):
            folder = item.path.relative_to(TESTS).parts[0]
            if folder in FOLDER_MARKS:
                item.add_marker(FOLDER_MARKS[folder])


@pytest.fixture(scope="session")
def local_embedder():  # type: ignore[no-untyped-def]
    from promptcache.adapters.local_embedder import LocalEmbedder

    return LocalEmbedder()


@pytest.fixture
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture
def serve(tmp_path: Path, upstream: OpenAIUpstream) -> Iterator[ServerProcess]:
    """`promptcache serve` on a SQLite store in tmp_path, answering misses from `upstream`."""
    with local_server(tmp_path, upstream.base_url) as server:
        yield server
