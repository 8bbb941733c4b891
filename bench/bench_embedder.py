"""Local embedder speed: cold load, one short prompt, batches. Medians over repeated runs.

Run: .venv/bin/python -m bench.bench_embedder
"""

from __future__ import annotations

import statistics
import time

PROMPTS = [
    "How do I reset my password?",
    "What is the best way to learn the Python programming language quickly?",
    "Translate 'good morning' into Spanish.",
    "Explain the difference between a process and a thread in an operating system.",
    "Which planet in the solar system has the most moons right now?",
]


def main() -> None:
    started = time.perf_counter()
    from promptcache.adapters.local_embedder import LocalEmbedder

    embedder = LocalEmbedder()
    cold = time.perf_counter() - started
    embedder.embed(PROMPTS)  # warm-up

    single = []
    for i in range(200):
        t0 = time.perf_counter()
        embedder.embed([PROMPTS[i % len(PROMPTS)]])
        single.append((time.perf_counter() - t0) * 1000)
    batch = [PROMPTS[i % len(PROMPTS)] + f" ({i})" for i in range(64)]
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        embedder.embed(batch)
        rates.append(len(batch) / (time.perf_counter() - t0))
    single.sort()
    print("| measure | value |\n|---|---|")
    print(f"| cold load (import + sha256 + session) | {cold * 1000:.0f} ms |")
    print(f"| one short prompt, p50 | {statistics.median(single):.2f} ms |")
    print(f"| one short prompt, p95 | {single[int(len(single) * 0.95)]:.2f} ms |")
    print(f"| batch of 64, median throughput | {statistics.median(rates):.0f} prompts/s |")


if __name__ == "__main__":
    main()
