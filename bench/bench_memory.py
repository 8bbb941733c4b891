"""Server memory under namespace churn: RSS of `promptcache serve` while callers send distinct
models, then distinct ``max_tokens`` values (each a namespace of its own), this checkout against
a baseline in the same run.

Run: ``.venv/bin/python -m bench.bench_memory --baseline /work/main/functions`` (a few minutes).
``--models`` (5,000) distinct models, then ``--max-tokens`` (1,000) distinct values, one miss
each, from ``--clients`` (8) keep-alive clients; the server's RSS (VmRSS of /proc) is sampled
every ``--every`` (500) requests, and ``/stats`` is fetched at the end (its size and time). The
servers run one after the other on fresh SQLite stores with the local embedder and an instant
local OpenAI-compatible upstream. Prints a Markdown table and writes bench/results/memory.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

RESULTS = Path(__file__).resolve().parent / "results" / "memory.md"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def churn(server: ServerProcess, bodies: list[dict[str, object]], clients: int, every: int):  # type: ignore[no-untyped-def]
    """Send every body once; returns RSS samples (requests sent, MB) and the failures."""
    assert server.proc is not None
    pid = server.proc.pid
    samples = [(0, rss_mb(pid))]
    failures = [0]
    sent = [0]
    lock = threading.Lock()
    position = iter(range(len(bodies)))

    def client() -> None:
        with httpx.Client(timeout=60) as c:
            while True:
                with lock:
                    i = next(position, None)
                if i is None:
                    return
                try:
                    ok = c.post(server.url + "/chat", json=bodies[i]).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    failures[0] += not ok
                    sent[0] += 1
                    if sent[0] % every == 0:
                        samples.append((sent[0], rss_mb(pid)))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples.append((sent[0], rss_mb(pid)))
    return samples, failures[0]


def run(
    name: str, pythonpath: str | None, args: argparse.Namespace, upstream: OpenAIUpstream, tmp: Path
) -> dict[str, object]:  # type: ignore[no-untyped-def]
    env = {
        "PROMPTCACHE_DATA_DIR": str(tmp / name),
        "OPENAI_BASE_URL": upstream.base_url,
        "PROMPTCACHE_MODEL": "bench-model",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    bodies: list[dict[str, object]] = [
        {"prompt": "What is the capital of France?", "model": f"model-{i}"}
        for i in range(args.models)
    ] + [
        {"prompt": "What is the capital of France?", "max_tokens": 16 + i}
        for i in range(args.max_tokens)
    ]
    server = ServerProcess(env, tmp / f"{name}.log").start()
    try:
        httpx.post(server.url + "/chat", json={"prompt": "warm up"}, timeout=60)
        started = time.perf_counter()
        samples, failures = churn(server, bodies, args.clients, args.every)
        seconds = time.perf_counter() - started
        t0 = time.perf_counter()
        stats = httpx.get(server.url + "/stats", timeout=120)
        stats_ms = (time.perf_counter() - t0) * 1000
    finally:
        server.stop()
    return {
        "samples": samples,
        "failures": failures,
        "seconds": seconds,
        "stats_bytes": len(stats.content),
        "stats_ms": stats_ms,
        "stats_status": stats.status_code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=5000)
    parser.add_argument("--max-tokens", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--baseline", help="PYTHONPATH of the code to compare with")
    args = parser.parse_args()
    variants: dict[str, str | None] = {"this checkout": None}
    if args.baseline:
        variants["baseline"] = args.baseline
    with tempfile.TemporaryDirectory() as tmp, OpenAIUpstream() as upstream:
        results = {
            name: run(f"s{i}", path, args, upstream, Path(tmp))
            for i, (name, path) in enumerate(variants.items())
        }
        # label the runs by variant name, not by directory
        results = dict(zip(variants, results.values(), strict=True))
    lines = [
        f"`promptcache serve` RSS under namespace churn: {args.models} distinct models, then "
        f"{args.max_tokens} distinct max_tokens values, one miss each, {args.clients} clients; "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}.",
        "",
        "| code | RSS start MB | RSS peak MB | RSS end MB | end / start | failures | requests/s | "
        "/stats bytes | /stats ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        samples = r["samples"]  # type: ignore[assignment]
        start, peak, end = samples[0][1], max(s[1] for s in samples), samples[-1][1]  # type: ignore[index,union-attr]
        total = samples[-1][0]  # type: ignore[index]
        lines.append(
            f"| {name} | {start:.0f} | {peak:.0f} | {end:.0f} | {end / start:.2f} | "
            f"{r['failures']} | {total / r['seconds']:.0f} | {r['stats_bytes']:,} | "  # type: ignore[operator]
            f"{r['stats_ms']:.0f} |"
        )
    lines += ["", "RSS (MB) after n requests:", ""]
    for name, r in results.items():
        series = ", ".join(f"{n}: {mb:.0f}" for n, mb in r["samples"])  # type: ignore[attr-defined]
        lines.append(f"- {name}: {series}")
    if args.baseline:
        mine = results["this checkout"]["samples"][-1][1]  # type: ignore[index]
        base = results["baseline"]["samples"][-1][1]  # type: ignore[index]
        lines += ["", f"Ratio this checkout / baseline, RSS at the end: {mine / base:.2f}x."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
