"""Per-request cost of the accounting (counting one answer), in process and over Upstash.

Run: ``.venv/bin/python -m bench.bench_accounting`` (about a minute). ``--requests`` per round
(2000 in process, a tenth of it over Upstash), ``--rounds`` (5). ``--baseline DIR`` also measures
the code in DIR (a directory holding the ``promptcache`` package, e.g. a symlink to another
checkout's ``functions/promptcache``), rounds of the two alternating (and which goes first), and
reports both with their ratio.

What is timed: ``Accounting.hit`` and ``Accounting.answered`` (half each, as a cache with a 50 %
hit rate would call them; four tenants, two models), the whole call: building the counters and
``Stats.add`` on MemoryStats, SQLiteStats (a file in a temporary directory) and UpstashStats
through the REST stand-in (tests/support/upstash_standin.py) in front of a real redis-server on
loopback, so one round trip per request whatever the number of counters. Each variant runs in its
own process; medians over rounds of the mean per request. For Upstash it also counts the REST
requests and the bytes sent per answer. Prints a Markdown table and writes it to
bench/results/accounting.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "accounting.md"
REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("memory", "sqlite", "upstash")


def worker(backend: str, requests: int, upstash_url: str, token: str) -> dict[str, float]:
    """Runs in the variant's process: the mean seconds per counted answer on ``backend``."""
    import httpx

    from promptcache._accounting import Accounting
    from promptcache._boundary import GuardedStats

    try:
        from promptcache._tally import Tally
    except ImportError:  # a baseline from before the tally had a module of its own
        from promptcache._accounting import Tally  # type: ignore[attr-defined,no-redef]
    from promptcache._types import CacheHit, ChatRequest, Completion, Entry, Message, Tier, Usage
    from promptcache.adapters.memory import MemoryStats
    from promptcache.adapters.sqlite import SQLiteStats, SQLiteStore
    from promptcache.adapters.upstash import UpstashStats

    client = httpx.Client(timeout=30.0)
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "memory":
            stats: Any = MemoryStats()
        elif backend == "sqlite":
            stats = SQLiteStats(SQLiteStore(Path(tmp) / "bench.sqlite3"))
        else:
            stats = UpstashStats(client, upstash_url, token, prefix=f"bench{os.getpid()}:")
        accounting = Accounting(GuardedStats(stats), 0.002)
        answers = []
        for i in range(64):
            request = ChatRequest(
                messages=(Message("user", f"question {i}"),),
                model=f"model-{i % 2}",
                tenant=f"tenant-{i % 4}",
            )
            entry = Entry(
                id=f"{i:032x}",
                namespace=f"tenant-{i % 4}:m:e:8",
                exact_key=f"k{i}",
                prompt=f"question {i}",
                response="answer",
                model=request.model,
                usage=Usage(12, 40),
                created_at=time.time(),
                expires_at=None,
            )
            answers.append((request, entry, Completion("answer", request.model, Usage(12, 40))))
        for request, entry, completion in answers[:8]:  # warm up (connections, tables)
            accounting.answered(request, completion, Tally(), entry=entry)
        start = time.perf_counter()
        for n in range(requests):
            request, entry, completion = answers[n % len(answers)]
            if n % 2:
                hit = CacheHit(entry=entry, tier=Tier.EXACT, similarity=1.0)
                accounting.hit(request, hit, Tally())
            else:
                accounting.answered(request, completion, Tally(), entry=entry)
        elapsed = time.perf_counter() - start
        counters = len(stats.read())
        if backend == "upstash":
            stats.reset()
    client.close()
    return {"seconds_per_request": elapsed / requests, "counters": counters}


def run_variant(path: str | None, backend: str, requests: int, upstash: Any) -> dict[str, float]:
    env = {**os.environ}
    roots = [str(REPO)] + ([path] if path else [str(REPO / "functions")])
    env["PYTHONPATH"] = os.pathsep.join(roots)
    before = (upstash.total_requests, upstash.bytes_in) if upstash is not None else (0, 0)
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_accounting", "--worker", backend,
         "--requests", str(requests), "--upstash-url", upstash.url if upstash else "",
         "--token", upstash.token if upstash else ""],
        env=env, capture_output=True, text=True, check=True, cwd=str(REPO),
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    if upstash is not None and backend == "upstash":
        calls = upstash.total_requests - before[0]
        result["rest_per_request"] = calls / (requests + 8)  # the warm-up answers too
        result["bytes_per_request"] = (upstash.bytes_in - before[1]) / (requests + 8)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="PYTHONPATH holding the promptcache to compare with")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--upstash-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--token", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.requests, args.upstash_url, args.token)))
        return

    from tests.support.redis_server import RedisServer
    from tests.support.upstash_standin import UpstashStandIn

    variants: dict[str, str | None] = {"this checkout": None}
    if args.baseline:
        variants["baseline"] = args.baseline
    results: dict[tuple[str, str], list[dict[str, float]]] = {
        (v, b): [] for v in variants for b in BACKENDS
    }
    with RedisServer() as redis_server, UpstashStandIn(redis_server.port) as upstash:
        for i in range(args.rounds):
            order = list(variants.items())
            for name, path in order if i % 2 == 0 else order[::-1]:
                for backend in BACKENDS:
                    n = args.requests if backend != "upstash" else max(20, args.requests // 10)
                    results[(name, backend)].append(run_variant(path, backend, n, upstash))

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        f"Per-request cost of the accounting (`Accounting.hit` / `answered`, half each, "
        f"4 tenants x 2 models), {args.rounds} rounds, {args.requests} answers per round in "
        f"process ({max(20, args.requests // 10)} over Upstash), variants alternating, medians "
        "over rounds of the mean per answer.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end; commit "
        f"{commit}" + (f", baseline {args.baseline}" if args.baseline else "") + ".",
        "",
        "| code | stats backend | µs per answer | counters stored | REST calls per answer "
        "| bytes sent per answer |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (name, backend), rounds in results.items():
        us = statistics.median(r["seconds_per_request"] for r in rounds) * 1e6
        counters = int(statistics.median(r["counters"] for r in rounds))
        rest = bytes_ = "–"
        if backend == "upstash":
            rest = f"{statistics.median(r['rest_per_request'] for r in rounds):.2f}"
            bytes_ = f"{statistics.median(r['bytes_per_request'] for r in rounds):.0f}"
        lines.append(f"| {name} | {backend} | {us:.1f} | {counters} | {rest} | {bytes_} |")
    if args.baseline:
        lines += [""]
        for backend in BACKENDS:
            mine = statistics.median(
                r["seconds_per_request"] for r in results[("this checkout", backend)]
            )
            base = statistics.median(
                r["seconds_per_request"] for r in results[("baseline", backend)]
            )
            lines.append(f"Ratio this checkout / baseline, {backend}: {mine / base:.2f}x.")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
