"""Exact hits through `promptcache serve` under concurrent clients: throughput, p50 and p99.

Run: ``.venv/bin/python -m bench.bench_concurrency`` (about a minute). ``--clients`` (16),
``--seconds`` per round (10), ``--rounds`` (3), ``--prompts`` (64). ``--baseline DIR`` also
serves the same prompts from the code in DIR (a directory holding ``promptcache`` and
``promptcache_handlers``, e.g. symlinks into another checkout's ``functions/``), rounds of the two
servers alternating, and reports both with their ratio.

A loopback load generator in a second process would be fairer to the server than threads in
this one, but keeps the number honest only if the machine has cores to spare; here client and
server share two cores, so the figures are a floor and the ratio between runs on the same machine
is what to read. Every answer is checked against the prompt it was sent for: ``wrong`` counts
answers that belong to another request (the fault this benchmark was written to measure).

Setup: ``--prompts`` distinct prompts stored one at a time (SQLite store, local embedder, an
instant local OpenAI-compatible upstream), then ``--clients`` threads, each with its own
keep-alive connection, ask them again at random for ``--seconds``; ``--rounds`` rounds, medians
over rounds. Prints a Markdown table and writes it to bench/results/concurrency.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

RESULTS = Path(__file__).resolve().parent / "results" / "concurrency.md"


def round_of(url: str, prompts: dict[str, str], clients: int, seconds: float) -> dict[str, float]:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    wrong = [0] * clients
    failed = [0] * clients
    barrier = threading.Barrier(clients + 1)
    stop = threading.Event()
    keys = list(prompts)

    def client(i: int) -> None:
        rnd = random.Random(i)
        with httpx.Client(timeout=30) as c:
            barrier.wait()
            while not stop.is_set():
                prompt = rnd.choice(keys)
                t0 = time.perf_counter()
                try:
                    r = c.post(url + "/chat", json={"prompt": prompt})
                except httpx.HTTPError:
                    failed[i] += 1
                    continue
                latencies[i].append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    failed[i] += 1
                elif r.json().get("response") != prompts[prompt]:
                    wrong[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = sorted(x for per in latencies for x in per)
    return {
        "requests": len(flat),
        "rps": len(flat) / elapsed,
        "p50": statistics.median(flat),
        "p99": flat[min(len(flat) - 1, int(0.99 * len(flat)))],
        "wrong": sum(wrong),
        "failed": sum(failed),
    }


def serve(tmp: Path, name: str, upstream: OpenAIUpstream, pythonpath: str | None) -> ServerProcess:
    env = {
        "PROMPTCACHE_DATA_DIR": str(tmp / name),
        "OPENAI_BASE_URL": upstream.base_url,
        "PROMPTCACHE_MODEL": "bench-model",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return ServerProcess(env, tmp / f"{name}.log").start()


def fill(url: str, count: int) -> dict[str, str]:
    prompts: dict[str, str] = {}
    with httpx.Client(timeout=30) as c:
        for i in range(count):
            prompt = f"Question {i}: what is the tracking code of parcel {i * 7919}?"
            prompts[prompt] = c.post(url + "/chat", json={"prompt": prompt}).json()["response"]
    return prompts


def row(label: str, rounds: list[dict[str, float]]) -> str:
    def med(name: str) -> float:
        return statistics.median(r[name] for r in rounds)

    return (
        f"| {label} | {med('rps'):.0f} | {med('p50'):.2f} | {med('p99'):.2f} | "
        f"{sum(int(r['wrong']) for r in rounds)} of {sum(int(r['requests']) for r in rounds)} | "
        f"{sum(int(r['failed']) for r in rounds)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--baseline", help="PYTHONPATH of the code to compare with")
    args = parser.parse_args()

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    variants = {"this checkout": None}
    if args.baseline:
        variants["baseline"] = args.baseline
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp, OpenAIUpstream() as upstream:
        servers = {
            name: serve(Path(tmp), f"s{i}", upstream, path)
            for i, (name, path) in enumerate(variants.items())
        }
        try:
            prompts = {name: fill(server.url, args.prompts) for name, server in servers.items()}
            for i in range(args.rounds):
                order = list(servers.items())
                for name, server in order if i % 2 == 0 else order[::-1]:  # neither always first
                    results[name].append(
                        round_of(server.url, prompts[name], args.clients, args.seconds)
                    )
        finally:
            for server in servers.values():
                server.stop()

    load = os.getloadavg()[0]
    lines = [
        f"Exact hits through `promptcache serve`, {args.clients} concurrent keep-alive clients "
        f"(threads of one process on the same machine), {args.rounds} rounds of "
        f"{args.seconds:g} s per server, rounds alternating (and which goes first), medians over "
        "rounds.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {load:.1f} at the end; commit {commit}"
        + (f", baseline {args.baseline}" if args.baseline else "")
        + ".",
        "",
        "| server | requests/s | p50 ms | p99 ms | answers of another request | failed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [row(name, rounds) for name, rounds in results.items()]
    if args.baseline:
        mine, base = results["this checkout"], results["baseline"]
        ratio = statistics.median(r["rps"] for r in mine) / statistics.median(
            r["rps"] for r in base
        )
        p50 = statistics.median(r["p50"] for r in mine) / statistics.median(r["p50"] for r in base)
        lines += ["", f"Ratio this checkout / baseline: throughput {ratio:.2f}x, p50 {p50:.2f}x."]
    lines += [""]
    for name, rounds in results.items():
        lines.append(
            f"Rounds, {name}: "
            + "; ".join(f"{r['rps']:.0f}/s p50 {r['p50']:.2f} p99 {r['p99']:.2f}" for r in rounds)
        )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
