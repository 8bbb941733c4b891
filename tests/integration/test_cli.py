"""The CLI against the same data location as the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

pytestmark = pytest.mark.integration


def run(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROMPTCACHE_DATA_DIR": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "promptcache_tools.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_warm_then_serve_then_stats_then_clear(tmp_path: Path, upstream: OpenAIUpstream) -> None:
    data = tmp_path / "data"
    warm = tmp_path / "warm.jsonl"
    warm.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {
                    "prompt": "How do I reset my password?",
                    "response": "Use the reset link.",
                    "model": "test-model",
                },
                {
                    "prompt": "What is the capital of France?",
                    "response": "Paris.",
                    "model": "test-model",
                },
                {
                    "prompt": "What is the capital of France?",
                    "response": "Paris (other model).",
                    "model": "other",
                },
            ]
        )
        + "\n\n"
    )
    result = run(data, "warm", str(warm))
    assert result.returncode == 0, result.stderr
    assert "stored 3 entries" in result.stderr
    assert "warming" in result.stderr  # the progress bar

    server = ServerProcess(
        {
            "PROMPTCACHE_DATA_DIR": str(data),
            "OPENAI_BASE_URL": upstream.base_url,
            "PROMPTCACHE_MODEL": "test-model",
        },
        tmp_path / "server.log",
    ).start()
    try:
        exact = httpx.post(
            server.url + "/chat", json={"prompt": "What is the capital of France?"}
        ).json()
        assert exact["tier"] == "exact" and exact["response"] == "Paris."
        other = httpx.post(
            server.url + "/chat",
            json={"prompt": "What is the capital of France?", "model": "other"},
        ).json()
        assert other["response"] == "Paris (other model)."
        semantic = httpx.post(
            server.url + "/chat", json={"prompt": "What is the way to reset my password?"}
        ).json()
        assert semantic["tier"] == "semantic" and semantic["response"] == "Use the reset link."
        assert upstream.calls == 0
    finally:
        server.stop()

    stats = run(data, "stats")
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    assert report["entries"] == 3 and report["hits"]["total"] == 3

    cleared = run(data, "clear")
    assert cleared.returncode == 0 and "removed 3 entries" in cleared.stderr
    assert json.loads(run(data, "stats").stdout)["entries"] == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "ok", "response": "fine"}\n{"prompt": "broken"', ":2: not valid JSON"),
        ('{"prompt": "ok"}\n', ":1: 'response' must be a non-empty string"),
        ('["a", "b"]\n', ":1: each line must be a JSON object"),
        (
            '{"prompt": "ok", "response": "fine", "model": 3}\n',
            "'model' must be a non-empty string",
        ),
    ],
)
def test_bad_warm_files_store_nothing(tmp_path: Path, content: str, message: str) -> None:
    data = tmp_path / "data"
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "kept", "response": "kept answer"}\n')
    assert run(data, "warm", "--quiet", str(good)).returncode == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    result = run(data, "warm", str(bad))
    assert result.returncode == 2
    assert message in result.stderr
    assert json.loads(run(data, "stats").stdout)["entries"] == 1


def test_missing_file_and_bad_setting_are_clear_errors(tmp_path: Path) -> None:
    result = run(tmp_path, "warm", str(tmp_path / "absent.jsonl"))
    assert result.returncode == 2 and "absent.jsonl" in result.stderr
    env = {**os.environ, "PROMPTCACHE_DATA_DIR": str(tmp_path), "PROMPTCACHE_THRESHOLD": "2"}
    bad = subprocess.run(
        [sys.executable, "-m", "promptcache_tools.cli", "stats"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "PROMPTCACHE_THRESHOLD" in bad.stderr


def test_compact_drops_expired_entries(tmp_path: Path) -> None:
    data = tmp_path / "data"
    warm = tmp_path / "warm.jsonl"
    warm.write_text('{"prompt": "short-lived", "response": "gone soon"}\n')
    env = {**os.environ, "PROMPTCACHE_DATA_DIR": str(data), "PROMPTCACHE_TTL_SECONDS": "1"}
    cmd = [sys.executable, "-m", "promptcache_tools.cli"]
    assert (
        subprocess.run([*cmd, "warm", "--quiet", str(warm)], env=env, timeout=120).returncode == 0
    )
    import time

    time.sleep(1.2)
    result = subprocess.run([*cmd, "compact"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "(1 dropped)" in result.stderr
    memory = subprocess.run(
        [*cmd, "compact"],
        env={**env, "PROMPTCACHE_STORE": "memory"},
        capture_output=True,
        text=True,
    )
    assert memory.returncode == 2 and "no log to compact" in memory.stderr
