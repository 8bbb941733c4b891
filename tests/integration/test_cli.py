"""The CLI against the same data location as the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from promptcache import ChatRequest, Completion, Index, Message, PromptCache, Store, Tier, Usage
from promptcache.adapters.memory import MemoryStats
from promptcache.adapters.redis_index import RedisIndex
from promptcache.adapters.sqlite import SQLiteStore
from promptcache.adapters.upstash import UpstashStore
from promptcache.adapters.upstash_vector import UpstashVectorIndex
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess, free_port
from tests.unit.fakes import FakeEmbedder, blend, unit

pytestmark = pytest.mark.integration


def run(data: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROMPTCACHE_DATA_DIR": str(data), **settings}
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


@pytest.mark.parametrize("kind", ["redis", "upstash-vector"])
def test_reindex_moves_entries_from_the_process_index_to_a_server_index(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Entries stored with PROMPTCACHE_INDEX=process (SQLite, or the Upstash store) keep their
    vectors in the store's log only; ``promptcache reindex`` copies them into the server index,
    and a lookup through it finds them. Run twice, the index is the same."""
    data = tmp_path / "data"
    redis_server = request.getfixturevalue("redis_server")
    redis_client = request.getfixturevalue("redis_client")  # an empty Redis
    clients: list[httpx.Client] = []
    store: Store
    if kind == "redis":
        data.mkdir()
        store = SQLiteStore(data / "cache.sqlite3")
        env = {"PROMPTCACHE_INDEX": "redis"}
        env["PROMPTCACHE_REDIS_URL"] = f"redis://127.0.0.1:{redis_server.port}/0"

        def make_index() -> Index:
            return RedisIndex(redis_server.client())

        def vectors() -> int:
            return len(list(redis_client.scan_iter(match="promptcache:vec:*")))

    else:
        upstash = request.getfixturevalue("upstash")
        vec = request.getfixturevalue("upstash_vector")
        clients.append(httpx.Client(timeout=10))
        store = UpstashStore(clients[-1], upstash.url, upstash.token)
        env = {
            "PROMPTCACHE_STORE": "upstash",
            "UPSTASH_REDIS_REST_URL": upstash.url,
            "UPSTASH_REDIS_REST_TOKEN": upstash.token,
            "PROMPTCACHE_INDEX": "upstash-vector",
            "UPSTASH_VECTOR_REST_URL": vec.url,
            "UPSTASH_VECTOR_REST_TOKEN": vec.token,
        }

        def make_index() -> Index:
            clients.append(httpx.Client(timeout=10))
            return UpstashVectorIndex(clients[-1], vec.url, vec.token)

        def vectors() -> int:
            return int(vec.info()["vectorCount"])

    def ask(prompt: str, model: str = "m") -> ChatRequest:
        return ChatRequest(messages=(Message("user", prompt),), model=model)

    base = unit("base")
    before = PromptCache(store=store, embedder=FakeEmbedder(), stats=MemoryStats())
    ids = [
        before.store_answer(ask(p, m), Completion(f"answer {p}", m, Usage()), vector=v).id
        for p, m, v in [
            ("stored", "m", base),
            ("another", "m", unit("another")),
            ("stored", "other-model", base),
        ]
    ]
    try:
        for _ in range(2):  # idempotent
            result = run(data, "reindex", **env)
            assert result.returncode == 0, result.stderr
            assert f"reindexed 3 entries of 2 namespaces into the {kind} index" in result.stderr
            assert vectors() == 3
        after = PromptCache(
            store=store,
            index=make_index(),
            embedder=FakeEmbedder({"paraphrase": blend(base, unit("p"), 0.95)}),
            stats=MemoryStats(),
        )
        for model, entry_id in [("m", ids[0]), ("other-model", ids[2])]:
            hit, _ = after.lookup(ask("paraphrase", model))
            assert hit is not None and hit.tier is Tier.SEMANTIC and hit.entry.id == entry_id
    finally:
        for client in clients:
            client.close()


def test_reindex_refuses_the_process_index_and_an_unreachable_one(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    result = run(tmp_path, "reindex")  # PROMPTCACHE_INDEX=process, the default
    assert result.returncode == 2 and "nothing to reindex" in result.stderr
    fast = {"PROMPTCACHE_BACKEND_TIMEOUT": "1"}
    result = run(
        tmp_path,
        "reindex",
        PROMPTCACHE_INDEX="redis",
        PROMPTCACHE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        **fast,
    )
    assert result.returncode == 2, result.stderr
    assert "reindex into the redis index failed" in result.stderr
    assert "ConnectionError" in result.stderr
    vec = request.getfixturevalue("upstash_vector")
    for url, token, why in [
        (f"http://127.0.0.1:{free_port()}", "t", "ConnectError"),
        (vec.url, "wrong-token", "HTTP 401"),
    ]:
        result = run(
            tmp_path,
            "reindex",
            PROMPTCACHE_INDEX="upstash-vector",
            UPSTASH_VECTOR_REST_URL=url,
            UPSTASH_VECTOR_REST_TOKEN=token,
            **fast,
        )
        assert result.returncode == 2, result.stderr
        assert "reindex into the upstash-vector index failed" in result.stderr
        assert why in result.stderr
