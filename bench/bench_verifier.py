"""What the verifier model costs: ms per candidate, the share of queries that reach it, and the
semantic-hit latency with and without it, at 10,000 stored entries, in process.

Run: ``.venv/bin/python -m bench.bench_verifier`` (reads the QQP dev pairs in place from
``../shared/data``; vectors from the evaluation's vector cache when present, else embedded).

1. ms per candidate: ``LocalVerifier.scores`` on one query with 1 and with 4 candidates (real
   QQP questions), ``--calls`` calls each, p50/p95 of each call divided by its candidates.
2. The cache: a PromptCache on the memory store with the local embedder, 10,000 distinct QQP
   ``a`` questions stored (holdout half), then every ``b`` of those pairs asked through
   ``PromptCache.lookup``, three times round-robin, once per configuration: default guards
   only, and guards + the verifier judging every candidate (band 1). Reported: the share of
   lookups that called the verifier, and p50/p95 of the lookups that were semantic hits (each
   configuration its own hits). Embedding is included in the lookup (the query is embedded
   each time).
3. Memory: the peak RSS (VmHWM) of a fresh interpreter that imports the runtime, against one
   that also loads the verifier and scores one query with 4 candidates: what a function with the
   verifier layer needs on top (``--memory-only`` runs this part alone).
Medians of the machine as it is (shared, noisy): compare the two rows of the same run only.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from promptcache import runtime
from promptcache._accounting import Tally
from promptcache._types import ChatRequest, Completion, Message, Tier, Usage
from promptcache.adapters.local_verifier import LocalVerifier
from promptcache.settings import Settings
from promptcache_tools import evaluation as ev

REPO = Path(__file__).resolve().parent.parent


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def per_candidate(verifier: LocalVerifier, texts: list[str], calls: int) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {1: [], 4: []}
    for i in range(calls):
        for n in (1, 4):
            query = texts[i % len(texts)]
            cands = [texts[(i + j + 1) % len(texts)] for j in range(n)]
            started = time.perf_counter()
            verifier.scores(query, cands)
            out[n].append(1000 * (time.perf_counter() - started) / n)
    return out


_PEAK = """
import promptcache.runtime, numpy
if {load}:
    from promptcache.adapters.local_verifier import LocalVerifier
    q = "How do I reverse a list in Python without using the built-in reversed function?"
    LocalVerifier(threads=1).scores(q, [q.replace("How do I", "How can I")] * 4)
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) * 1024)
"""


def peak_rss(load: bool) -> int:
    """Peak RSS in bytes of a fresh interpreter importing the runtime (and loading the verifier)."""
    code = _PEAK.format(load=load)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def memory_lines(runs: int = 3) -> list[str]:
    base = statistics.median(peak_rss(False) for _ in range(runs))
    loaded = statistics.median(peak_rss(True) for _ in range(runs))
    mb = 1024 * 1024
    return [
        f"| process (median of {runs} fresh interpreters) | peak RSS |",
        "|---|---|",
        f"| runtime imported | {base / mb:.0f} MiB |",
        f"| + verifier loaded, one query with 4 candidates | {loaded / mb:.0f} MiB |",
        f"| the verifier's share | {(loaded - base) / mb:.0f} MiB |",
    ]


def build(env: dict[str, str]) -> object:
    base = {"PROMPTCACHE_STORE": "memory", "PROMPTCACHE_STATS": "store", "PROMPTCACHE_LLM": "none"}
    return runtime.build(Settings.from_env({**base, **env}))


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_verifier", description=__doc__)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--entries", type=int, default=10_000)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--vector-cache", type=Path, default=Path("/tmp/promptcache-vectors"))
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "verifier.md")
    p.add_argument("--memory-only", action="store_true", help="only the peak RSS comparison")
    args = p.parse_args()
    if args.memory_only:
        print("\n".join(memory_lines()))
        return 0

    pairs = ev.select(ev.read_pairs(args.data / "qqp_dev.pairs.jsonl.gz"), "holdout")
    entries = list(dict.fromkeys(x.a for x in pairs))[: args.entries]
    stored = set(entries)
    queries = list(dict.fromkeys(x.b for x in pairs if x.a in stored and x.b not in stored))
    queries = queries[: args.queries]

    verifier = LocalVerifier()
    cost = per_candidate(verifier, entries[:500], args.calls)

    caches = {
        "guards only": build({"PROMPTCACHE_VERIFIER_MODEL": "off"}),
        "guards + verifier (every candidate judged)": build(
            {"PROMPTCACHE_VERIFIER_MODEL": "local", "PROMPTCACHE_VERIFIER_MODEL_BAND": "1"}
        ),
    }
    first = next(iter(caches.values()))
    memo = ev.MemoEmbedder(first.embedder)  # type: ignore[attr-defined]
    memo.prime(entries, cache_dir=args.vector_cache)
    for cache in caches.values():
        for i, text in enumerate(entries):
            request = ChatRequest(messages=(Message("user", text),), model="bench")
            completion = Completion(f"answer {i}", "bench", Usage())
            cache.store_answer(request, completion, vector=memo._memo[text])  # type: ignore[attr-defined]

    hits: dict[str, list[float]] = {name: [] for name in caches}
    reached: dict[str, int] = dict.fromkeys(caches, 0)
    asked: dict[str, int] = dict.fromkeys(caches, 0)
    for _ in range(args.rounds):
        for text in queries:
            request = ChatRequest(messages=(Message("user", text),), model="bench")
            for name, cache in caches.items():
                tally = Tally()
                query = cache._query(request)  # type: ignore[attr-defined]
                started = time.perf_counter()
                hit, _ = cache._lookup(query, tally)  # type: ignore[attr-defined]
                ms = 1000 * (time.perf_counter() - started)
                asked[name] += 1
                reached[name] += tally.verdicts.calls > 0
                if hit is not None and hit.tier is Tier.SEMANTIC:
                    hits[name].append(ms)

    lines = [
        f"# Verifier cost ({platform.machine()}, {platform.python_version()}; "
        f"{len(entries)} entries, {len(queries)} queries x {args.rounds})",
        "",
        "Command: `.venv/bin/python -m bench.bench_verifier`",
        "",
        "| verifier call | ms per candidate p50 | p95 |",
        "|---|---|---|",
    ]
    for n, values in cost.items():
        lines.append(
            f"| {n} candidate(s) per call | {pct(values, 50):.2f} | {pct(values, 95):.2f} |"
        )
    lines += [
        "",
        "| lookup | share reaching the verifier | semantic hits | hit p50 ms | hit p95 ms |",
        "|---|---|---|---|---|",
    ]
    for name in caches:
        lines.append(
            f"| {name} | {reached[name] / asked[name]:.1%} | {len(hits[name])} | "
            f"{statistics.median(hits[name]) if hits[name] else float('nan'):.2f} | "
            f"{pct(hits[name], 95):.2f} |"
        )
    lines += ["", *memory_lines()]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
