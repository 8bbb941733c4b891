"""Index search speed and memory at 10k / 100k / 1M random unit vectors (384-d).

Run: ``.venv/bin/python -m bench.bench_index`` (about two minutes; ``--sizes 10000,100000`` for
less). Compares, in the same run and on the same vectors:

- ``VectorIndex.search`` (sign-sketch scan + exact float32 re-rank), for two kinds of query:
  a random unit vector (nearly orthogonal to every row: nothing above the threshold) and a
  near duplicate (a stored row turned to cosine 0.85-0.95, as a paraphrase would be);
- the plain float32 scan ``M @ q`` (numpy + BLAS);
- a naive per-entry Python loop (``for v in vectors: float(np.dot(v, q))``), measured on up to
  10,000 entries and extrapolated linearly beyond (labelled as such).

Recall: for every near-duplicate query, the index's top-1 must be the source row and equal the
exact scan's top-1; the worst case (a neighbour at cosine threshold + 1e-4) is counted too.
Prints a Markdown table and writes it to bench/results/index.md.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from promptcache.index import VectorIndex

DIM = 384
THRESHOLD = 0.8
RESULTS = Path(__file__).resolve().parent / "results" / "index.md"
Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Row:
    n: int
    build_s: float
    sketch_rand: tuple[float, float]
    sketch_near: tuple[float, float]
    scan: tuple[float, float]
    scan1: tuple[float, float] | None
    loop_ms: float
    loop_note: str
    recall: tuple[int, int]
    worst_recall: tuple[int, int]
    nbytes: int
    rss_growth: int
    rss: int


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def unit_rows(rng: np.random.Generator, n: int) -> Matrix:
    out = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, 65_536):
        x = rng.standard_normal((min(65_536, n - s), DIM), dtype=np.float32)
        out[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def near(rng: np.random.Generator, source: npt.NDArray[np.float32], cosine: float) -> Matrix:
    z = rng.standard_normal(DIM)
    s = source.astype(np.float64)
    z -= (z @ s) * s
    z /= np.linalg.norm(z)
    return (cosine * s + math.sqrt(1 - cosine**2) * z).astype(np.float32)


def timed(fn: Callable[[Matrix], object], queries: list[Matrix]) -> tuple[float, float]:
    """p50 and p95 in ms, one call per query."""
    for q in queries[:3]:
        fn(q)  # warm up
    ms = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    return statistics.median(ms), ms[min(len(ms) - 1, int(0.95 * len(ms)))]


def single_thread_scan(rows: Matrix, queries: list[Matrix]) -> tuple[float, float] | None:
    """`M @ q` with BLAS held to one thread (fairer when other processes share the cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    with threadpool_limits(limits=1, user_api="blas"):
        return timed(lambda q: rows @ q, queries)


def naive_loop_ms(rows: Matrix, q: Matrix, reps: int) -> float:
    vectors = list(rows)  # one array per entry, as a per-entry store would hold them
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        best, best_score = -1, -2.0
        for i, v in enumerate(vectors):
            score = float(np.dot(v, q))
            if score > best_score:
                best, best_score = i, score
        assert best >= 0
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure(n: int, rng: np.random.Generator, n_queries: int) -> Row:
    rows = unit_rows(rng, n)
    ids = [f"e{i}" for i in range(n)]
    gc.collect()
    before = rss_bytes()
    t = time.perf_counter()
    index = VectorIndex(DIM, capacity=n)
    index.add(ids, rows)
    build_s = time.perf_counter() - t
    rss_growth = rss_bytes() - before

    random_q = list(unit_rows(rng, n_queries))
    sources = rng.integers(0, n, n_queries)
    near_q = [near(rng, rows[s], float(rng.uniform(0.85, 0.95))) for s in sources]
    worst_q = [near(rng, rows[s], THRESHOLD + 1e-4) for s in sources]

    def search(q: Matrix) -> object:
        return index.search(q, k=1, min_score=THRESHOLD)

    sketch_rand = timed(search, random_q)
    sketch_near = timed(search, near_q)
    scan_queries = random_q[: max(5, min(n_queries, 2_000_000 // n))]
    scan = timed(lambda q: rows @ q, scan_queries)

    scan1 = single_thread_scan(rows, scan_queries)

    # the exact scan's top-1 of every query, in one matrix product
    exact_top = np.argmax(rows @ np.stack(near_q + worst_q).T, axis=0)
    found = worst = 0
    for i, s in enumerate(sources):
        hit = index.search(near_q[i], k=1, min_score=THRESHOLD)
        found += bool(hit) and hit[0][0] == f"e{s}" == f"e{exact_top[i]}"
        hit = index.search(worst_q[i], k=1, min_score=THRESHOLD)
        worst += bool(hit) and hit[0][0] == f"e{s}" == f"e{exact_top[n_queries + i]}"

    sub = min(n, 10_000)
    loop = naive_loop_ms(rows[:sub], random_q[0], reps=3 if sub == n else 1) * (n / sub)
    note = "measured" if sub == n else f"extrapolated x{n // sub} from {sub:,} entries"
    row = Row(
        n=n,
        build_s=build_s,
        sketch_rand=sketch_rand,
        sketch_near=sketch_near,
        scan=scan,
        scan1=scan1,
        loop_ms=loop,
        loop_note=note,
        recall=(found, n_queries),
        worst_recall=(worst, n_queries),
        nbytes=index.nbytes,
        rss_growth=rss_growth,
        rss=rss_bytes(),
    )
    return row


def blas() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(
        f"{i['internal_api']} {i['version']} kernel {i.get('architecture')} "
        f"threads {i['num_threads']}"
        for i in info
    )


def table(rows: list[Row]) -> str:
    out = [
        "| entries | index p50 / p95, random query | index p50 / p95, near duplicate "
        "| float32 `M @ q` p50 / p95 | `M @ q`, 1 BLAS thread | per-entry Python loop "
        "| `M @ q` / index (p50) | top-1 recall (cos 0.85-0.95 / worst case) "
        "| index bytes (per entry) | RSS growth per entry | build |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.n:,} | {r.sketch_rand[0]:.3f} / {r.sketch_rand[1]:.3f} ms "
            f"| {r.sketch_near[0]:.3f} / {r.sketch_near[1]:.3f} ms "
            f"| {r.scan[0]:.3f} / {r.scan[1]:.3f} ms "
            f"| {'n/a' if r.scan1 is None else f'{r.scan1[0]:.3f} / {r.scan1[1]:.3f} ms'} "
            f"| {r.loop_ms:,.0f} ms ({r.loop_note}) "
            f"| {r.scan[0] / r.sketch_near[0]:.1f}x "
            f"| {r.recall[0]}/{r.recall[1]} / {r.worst_recall[0]}/{r.worst_recall[1]} "
            f"| {r.nbytes / 1e6:,.1f} MB ({r.nbytes // r.n:,} B) "
            f"| {r.rss_growth // r.n:,} B | {r.build_s:.2f} s |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    rows = [measure(int(s), rng, args.queries) for s in args.sizes.split(",")]
    env = {k: os.environ.get(k, "(unset)") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    notes = [
        f"{DIM}-d random unit vectors, `search(q, k=1, min_score={THRESHOLD})`, "
        f"{args.queries} queries per kind, medians (p50) and p95 in ms, one process.",
        "Near duplicate: a stored row turned to cosine U(0.85, 0.95); worst case: cosine "
        f"{THRESHOLD} + 1e-4. Recall counts queries whose top-1 is the source row and equals "
        "the exact float32 scan's top-1.",
        "Per-entry loop: `for v in vectors: float(np.dot(v, q))` over one array per entry.",
        "Index bytes: float32 vectors + 48-byte sketches + expiry times; RSS growth also counts "
        "the ids (Python strings, list, dict).",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}, BLAS {blas()}; "
        + ", ".join(f"{k}={v}" for k, v in env.items())
        + f". Load average {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end; "
        f"total {time.perf_counter() - started:.0f} s; "
        f"peak RSS {max(r.rss for r in rows) / 1e9:.2f} GB.",
    ]
    text = "\n".join(
        ["# Index search benchmark", "", "`.venv/bin/python -m bench.bench_index`", ""]
        + [table(rows), ""]
        + [f"- {n}" for n in notes]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
