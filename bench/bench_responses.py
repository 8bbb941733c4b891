"""What keeping responses costs an exact hit on ``POST /v1/responses``.

Run: ``.venv/bin/python -m bench.bench_responses`` (about a minute). ``--requests`` sets how many
hits of each kind are timed (default 400); ``--prompts`` how many distinct stored requests they
cycle through (default 50).

Each kind asks the same stored questions (instructions and one user question, one internal
request: one entry shared by every kind), each an exact hit:

- ``chat completions``: ``client.chat.completions.create`` with a system and a user turn.
- ``responses, store: false``: ``client.responses.create`` with ``instructions`` and ``input``;
  nothing kept: the Responses face's translation and shaping alone.
- ``responses, kept``: the same with ``store`` left at its default: the response and its
  conversation are kept (one more store write per request).
- ``responses, follow-up``: a ``previous_response_id`` follow-up of a kept response, itself
  stored: one store read (the chain) and one write (the new response) around the hit.

The kinds take turns request by request (one of each, then again), so that drift on a shared
machine falls on all of them alike. Over HTTP: the official ``openai`` client against
``promptcache serve`` on loopback (SQLite store, local embedder; one keep-alive connection), timed
around each call. In process: ``PromptCache.keep`` and ``PromptCache.kept`` of one response on
the same kind of SQLite store, the write and the read alone. The upstream is the test suite's
local OpenAI-compatible stand-in (it answers the misses only). Prints a Markdown table (medians,
p95, ratios to chat completions) and writes it to bench/results/responses.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

from promptcache import runtime
from promptcache.settings import Settings
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

RESULTS = Path(__file__).resolve().parent / "results" / "responses.md"
MODEL = "bench-model"
INSTRUCTIONS = "You are a concise assistant. Answer in two sentences at most."
KINDS = ("chat completions", "responses, store: false", "responses, kept", "responses, follow-up")


def question(i: int) -> str:
    return f"What should I pack for a weekend trip number {i} to the mountains?"


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def timed(call: Callable[..., Any], *args: Any) -> float:
    """Milliseconds of ``call(*args)``."""
    start = time.perf_counter()
    call(*args)
    return (time.perf_counter() - start) * 1000


def over_http(upstream: OpenAIUpstream, tmp: Path, prompts: int, requests: int) -> dict[str, Any]:
    env = {
        "PROMPTCACHE_DATA_DIR": str(tmp / "http"),
        "OPENAI_BASE_URL": upstream.base_url,
        "PROMPTCACHE_MODEL": MODEL,
    }
    server = ServerProcess(env, tmp / "server.log").start()
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    try:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0) as client:
            roots, follow = [], "And what should I leave at home?"
            for i in range(prompts):  # the misses: one entry per question, one per follow-up
                root = client.responses.create(
                    model=MODEL, instructions=INSTRUCTIONS, input=question(i)
                )
                roots.append(root.id)
                client.responses.create(model=MODEL, previous_response_id=root.id, input=follow)

            def chat(i: int) -> Any:
                return client.chat.completions.with_raw_response.create(
                    model=MODEL,
                    messages=[
                        {"role": "system", "content": INSTRUCTIONS},
                        {"role": "user", "content": question(i)},
                    ],
                )

            def respond(i: int, **extra: Any) -> Any:
                return client.responses.with_raw_response.create(
                    model=MODEL, instructions=INSTRUCTIONS, input=question(i), **extra
                )

            def chained(i: int) -> Any:
                return client.responses.with_raw_response.create(
                    model=MODEL, previous_response_id=roots[i], input=follow
                )

            calls: dict[str, Callable[[int], Any]] = {
                "chat completions": chat,
                "responses, store: false": lambda i: respond(i, store=False),
                "responses, kept": respond,
                "responses, follow-up": chained,
            }
            for kind, call in calls.items():  # every kind is an exact hit before timing
                for i in range(prompts):
                    assert call(i).headers["x-promptcache-tier"] == "exact", kind
            for n in range(requests):
                for kind, call in calls.items():
                    samples[kind].append(timed(call, n % prompts))
    finally:
        server.stop()
    return {kind: summary(s) for kind, s in samples.items()}


def in_process(upstream: OpenAIUpstream, tmp: Path, requests: int) -> dict[str, Any]:
    """``keep`` (the write) and ``kept`` (the read) of a kept response of typical size."""
    env = {
        "PROMPTCACHE_STORE": "sqlite",
        "PROMPTCACHE_DATA_DIR": str(tmp / "inproc"),
        "PROMPTCACHE_EMBEDDER": "local",
        "PROMPTCACHE_LLM": "openai",
        "OPENAI_BASE_URL": upstream.base_url,
        "PROMPTCACHE_MODEL": MODEL,
    }
    cache = runtime.build(Settings.from_env(env))
    text = "Pack layers, a rain jacket and good boots. Leave heavy books at home. " * 4
    document = {
        "v": 1,
        "tenant": "default",
        "response": {"id": "resp_x", "object": "response", "output_text": text},
        "turns": [{"role": "user", "content": question(1)}, {"role": "assistant", "content": text}],
    }
    names = [f"response:bench:{i}" for i in range(requests)]
    writes = [timed(cache.keep, name, document) for name in names]
    reads = [timed(cache.kept, name) for name in names]
    return {"keep": summary(writes), "kept": summary(reads)}


def table(http: dict[str, Any], inproc: dict[str, Any], prompts: int, requests: int) -> str:
    base = http["chat completions"][0]
    lines = [
        "# Exact hits on /v1/responses: what keeping the response costs",
        "",
        f"{requests} exact hits of each kind, taking turns, cycling through {prompts} stored "
        f"questions. Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Command: `.venv/bin/python -m bench.bench_responses`.",
        "",
        "| request (over HTTP, SQLite store) | median (ms) | p95 | ratio to chat completions |",
        "|---|---:|---:|---:|",
    ]
    for kind in KINDS:
        median, p95 = http[kind]
        lines.append(f"| {kind} | {median:.3f} | {p95:.3f} | {median / base:.2f} |")
    lines += [
        "",
        "| in process, SQLite store | median (ms) | p95 |",
        "|---|---:|---:|",
        f"| `PromptCache.keep` (one write) | {inproc['keep'][0]:.3f} | {inproc['keep'][1]:.3f} |",
        f"| `PromptCache.kept` (one read) | {inproc['kept'][0]:.3f} | {inproc['kept'][1]:.3f} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    with OpenAIUpstream() as upstream, tempfile.TemporaryDirectory() as tmp:
        http = over_http(upstream, Path(tmp), args.prompts, args.requests)
        inproc = in_process(upstream, Path(tmp), args.requests)
    text = table(http, inproc, args.prompts, args.requests)
    print(text)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
