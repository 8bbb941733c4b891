"""The semantic index per choice (PROMPTCACHE_INDEX): in-process versus server-side, measured.

Run: ``.venv/bin/python -m bench.bench_server_index`` (10k and 100k entries, about 15 minutes
on 2 cores; ``--sizes 10000`` for less). One real Redis 8.2 with the query engine (the dev
extras' wheels) serves all three; the Upstash REST stand-in and the Upstash Vector stand-in run
in child processes, so this process is the client and its RSS is the client's alone. Per size,
on the same random 384-d unit vectors, all in one namespace (the filter matches every entry:
the hardest case for a filtered HNSW search):

- ``process``: cold start = a new UpstashStore reads the namespace's whole vector log over
  REST (the deployed path), builds the VectorIndex and answers the first search;
- ``redis-hnsw`` / ``redis-flat``: RedisIndex over RESP (KNN with the namespace and expiry as
  pre-filters; HNSW M 16, EF_CONSTRUCTION 200, EF_RUNTIME ``--ef`` (the product's default,
  512; ``--sweep`` for more values)); cold start = a new client's first search;
- ``upstash-vector``: UpstashVectorIndex (the SDK on httpx) against the Upstash Vector stand-in
  (its index: the query engine's FLAT, exact); cold start = a new client's first search.

Measured: cold start to the first answer (median of ``--reps``), steady search p50/p95 over
``--queries`` queries (the search alone: every choice also makes the chat path's one store round
trip, the exact lookup), peak RSS growth of this process at cold start, and top-1 recall against
the exact float32 scan. Queries are paraphrase-like: each at cosine 0.9 to one stored vector,
searched as the core does (k 4, threshold 0.8). For HNSW, the trap: recall of KNN at Redis's
default EF_RUNTIME (10) and of a range query (VECTOR_RANGE, radius 0.2 = cosine >= 0.8) at
the default EPSILON (0.01), beside the chosen KNN. Server-side population time is reported
(HNSW builds as it is written). Writes bench/results/server_index.md.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import redis
from upstash_vector import Index as UpstashSdkIndex
from upstash_vector import Vector as UpstashVector

from bench.bench_upstash_sync import StandIn, populate, reset_peak_rss, rss, unit_rows
from promptcache.adapters.redis_index import RedisIndex
from promptcache.adapters.upstash import UpstashStore
from promptcache.adapters.upstash_vector import UpstashVectorIndex
from promptcache.index import VectorIndex
from tests.support.redis_server import RedisServer, redis_server_path

DIM = 384
NS = "bench:fake:384:upstash-sync"  # populate() writes this namespace
RESULTS = Path(__file__).resolve().parent / "results" / "server_index.md"
REPO = Path(__file__).resolve().parent.parent
K, THRESHOLD = 4, 0.8

Search = Callable[[npt.NDArray[np.float32]], list[tuple[str, float]]]


class VectorStandIn:
    """The Upstash Vector stand-in in a child process."""

    def __init__(self, redis_port: int) -> None:
        command = [sys.executable, "-m", "tests.support.upstash_vector_standin"]
        self.proc = subprocess.Popen(
            [*command, "--redis-port", str(redis_port), "--dim", str(DIM)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url, self.token = self.proc.stdout.readline().split()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def queries_for(
    rows: npt.NDArray[np.float32], count: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], list[int]]:
    """Queries at cosine 0.9 to a random stored row each, and the exact scan's top-1 row."""
    picks = rng.choice(len(rows), size=count, replace=False)
    noise = unit_rows(rng, count)
    out = np.empty((count, DIM), dtype=np.float32)
    for i, j in enumerate(picks):
        a = rows[j]
        ortho = noise[i] - (noise[i] @ a) * a
        ortho /= np.linalg.norm(ortho)
        out[i] = 0.9 * a + np.sqrt(1 - 0.81) * ortho
    exact = [int(np.argmax(rows @ q)) for q in out]
    return out, exact


def steady(search: Search, queries: npt.NDArray[np.float32], exact: list[str]) -> dict[str, float]:
    times, same = [], 0
    for q, want in zip(queries, exact, strict=True):
        started = time.perf_counter()
        found = search(q)
        times.append(time.perf_counter() - started)
        same += bool(found) and found[0][0] == want
    times.sort()
    return {
        "p50": statistics.median(times) * 1000,
        "p95": times[int(0.95 * (len(times) - 1))] * 1000,
        "recall": same / len(queries),
    }


def cold(
    make: Callable[[], tuple[Search, Callable[[], None]]], q: npt.NDArray[np.float32]
) -> dict[str, float]:
    """Seconds from nothing to the first answer, and the peak RSS growth meanwhile."""
    gc.collect()
    before, _ = rss()
    reset_peak_rss()
    started = time.perf_counter()
    search, close = make()
    found = search(q)
    seconds = time.perf_counter() - started
    _, peak = rss()
    close()
    # found: the first search answered with a candidate (its query is near a stored entry)
    return {"cold": seconds * 1000, "rss": (peak - before) / 1e6, "found": float(bool(found))}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


# ---------------------------------------------------------------------------- one size
def run_size(n: int, args: argparse.Namespace, server: RedisServer) -> list[dict[str, object]]:
    rng = np.random.default_rng(n)
    rows = unit_rows(rng, n)
    ids = [f"{i:032x}" for i in range(n)]
    queries, exact_rows = queries_for(rows, args.queries, rng)
    now = time.time()
    out: list[dict[str, object]] = []
    r = server.client()
    r.flushall()

    # ---- process: the vector log over Upstash REST, loaded into this process
    if "process" in args.kinds:
        standin = StandIn(server.port)
        try:
            helper = UpstashStore(httpx.Client(), standin.url, standin.token)
            entries = populate(r, helper, rows, 0)
            process_ids = [e.id for e in entries]
            kept: list[VectorIndex] = []

            def make_process() -> tuple[Search, Callable[[], None]]:
                client = httpx.Client(timeout=120.0)
                store = UpstashStore(client, standin.url, standin.token)
                result = store.sync(NS, "f" * 64, None)
                index = VectorIndex(DIM, capacity=max(1024, len(result.records)))
                index.apply_log(result.records)
                del result
                kept[:] = [index]

                def search(q: npt.NDArray[np.float32]) -> list[tuple[str, float]]:
                    return index.search(q, k=K, min_score=THRESHOLD, now=now)

                return search, client.close

            colds = [cold(make_process, queries[0]) for _ in range(args.reps)]
            index = kept[0]
            res = steady(
                lambda q: index.search(q, k=K, min_score=THRESHOLD, now=now),
                queries,
                [process_ids[j] for j in exact_rows],
            )
            out.append({"n": n, "kind": "process", **median_of(colds), **res, "populate": None})
            print(out[-1], file=sys.stderr)
            del kept, index
        finally:
            standin.stop()
        r.flushall()
        gc.collect()

    # ---- redis: HNSW and FLAT indexes over the same hashes (each write updates both)
    kinds = [k for k in ("redis-hnsw", "redis-flat") if k in args.kinds]
    if kinds:
        writers = {k: RedisIndex(server.client(), algorithm=k.split("-")[1]) for k in kinds}
        for w in writers.values():
            w._ensure(DIM)  # both search indexes exist before the first write
        started = time.perf_counter()
        # both search indexes ingest the hashes as they arrive; one MULTI/EXEC per 500 entries
        expires_at = now + 86400
        first = next(iter(writers.values()))
        first.add_many(NS, [(entry_id, rows[i], expires_at) for i, entry_id in enumerate(ids)])
        populate_s = time.perf_counter() - started
        wait_indexed(r, [w.name(DIM) for w in writers.values()], n)
        for kind, writer in writers.items():
            algorithm = kind.split("-")[1]

            def make_redis(algorithm: str = algorithm) -> tuple[Search, Callable[[], None]]:
                index = RedisIndex(server.client(), algorithm=algorithm, ef_runtime=args.ef)
                return (
                    lambda q: index.search(NS, q, k=K, min_score=THRESHOLD, now=now),
                    index.close,
                )

            colds = [cold(make_redis, queries[0]) for _ in range(args.reps)]
            reader = RedisIndex(server.client(), algorithm=algorithm, ef_runtime=args.ef)
            want = [ids[j] for j in exact_rows]
            res = steady(
                lambda q, reader=reader: reader.search(NS, q, k=K, min_score=THRESHOLD, now=now),
                queries,
                want,
            )
            row: dict[str, object] = {"n": n, "kind": kind, **median_of(colds), **res}
            row["populate"] = populate_s
            if algorithm == "hnsw":
                default = RedisIndex(server.client(), algorithm="hnsw", ef_runtime=10)
                row["recall_ef10"] = steady(
                    lambda q, d=default: d.search(NS, q, k=1, min_score=-1.0, now=now),
                    queries,
                    want,
                )["recall"]
                row["recall_range"] = range_recall(r, writer.name(DIM), queries, want)
                default.close()
                for ef in args.sweep:
                    swept = RedisIndex(server.client(), algorithm="hnsw", ef_runtime=ef)
                    res_ef = steady(
                        lambda q, x=swept: x.search(NS, q, k=K, min_score=THRESHOLD, now=now),
                        queries,
                        want,
                    )
                    row[f"ef{ef}"] = res_ef
                    swept.close()
            reader.close()
            out.append(row)
            print(out[-1], file=sys.stderr)
        for w in writers.values():
            w.close()
        r.flushall()
        gc.collect()

    # ---- upstash-vector: the SDK over REST, against the stand-in
    if "upstash-vector" in args.kinds:
        vec = VectorStandIn(server.port)
        try:
            sdk = UpstashSdkIndex(vec.url, vec.token, allow_telemetry=False)
            started = time.perf_counter()
            for s in range(0, n, 500):
                batch = [
                    UpstashVector(id=ids[i], vector=rows[i].tolist(), metadata={"exp": now + 86400})
                    for i in range(s, min(n, s + 500))
                ]
                sdk.upsert(batch, namespace=NS.replace(":", "%3A"))
            populate_s = time.perf_counter() - started

            def make_vector() -> tuple[Search, Callable[[], None]]:
                client = httpx.Client(timeout=60.0)
                index = UpstashVectorIndex(client, vec.url, vec.token)
                return (
                    lambda q: index.search(NS, q, k=K, min_score=THRESHOLD, now=now),
                    client.close,
                )

            colds = [cold(make_vector, queries[0]) for _ in range(args.reps)]
            with httpx.Client(timeout=60.0) as client:
                reader = UpstashVectorIndex(client, vec.url, vec.token)
                res = steady(
                    lambda q: reader.search(NS, q, k=K, min_score=THRESHOLD, now=now),
                    queries,
                    [ids[j] for j in exact_rows],
                )
            out.append(
                {
                    "n": n,
                    "kind": "upstash-vector",
                    **median_of(colds),
                    **res,
                    "populate": populate_s,
                }
            )
            print(out[-1], file=sys.stderr)
        finally:
            vec.stop()
        r.flushall()
    r.close()
    return out


def wait_indexed(r: redis.Redis, names: list[str], n: int, timeout: float = 1800.0) -> None:
    timeout = max(timeout, n / 100)  # HNSW ingests ~1,000 vectors/s on a busy 2-core machine
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            info = r.execute_command("FT.INFO", name)
            fields = dict(zip(info[::2], info[1::2], strict=False))
            if int(fields[b"num_docs"]) >= n and int(fields[b"indexing"]) == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not indexed in {timeout} s")
            time.sleep(0.5)


def range_recall(
    r: redis.Redis, name: str, queries: npt.NDArray[np.float32], want: list[str]
) -> float:
    """VECTOR_RANGE (cosine >= 0.8) at the default EPSILON: is the exact top-1 among the hits?"""
    found = 0
    for q, entry_id in zip(queries, want, strict=True):
        reply = r.execute_command(
            "FT.SEARCH", name, "@v:[VECTOR_RANGE 0.2 $q]=>{$YIELD_DISTANCE_AS: d}",
            "PARAMS", 2, "q", q.tobytes(), "SORTBY", "d", "RETURN", 1, "d",
            "LIMIT", 0, 100, "DIALECT", 2,
        )  # fmt: skip
        keys = {k.decode().rsplit(":", 1)[-1] for k in reply[1::2]}
        found += entry_id in keys
    return found / len(queries)


# ---------------------------------------------------------------------------- report
def crossover(rows: list[dict[str, object]], kind: str) -> str:
    """Entries at which ``kind``'s cold start equals the process index's (linear fit)."""
    proc = sorted((int(r["n"]), float(r["cold"])) for r in rows if r["kind"] == "process")  # type: ignore[arg-type]
    other = sorted((int(r["n"]), float(r["cold"])) for r in rows if r["kind"] == kind)  # type: ignore[arg-type]
    if len(proc) < 2 or not other:
        return "n/a (needs two sizes)"
    (n1, c1), (n2, c2) = proc[0], proc[-1]
    slope = (c2 - c1) / (n2 - n1)
    server = statistics.median(c for _, c in other)
    if slope <= 0:
        return "none measured"
    n_star = n1 + (server - c1) / slope
    return (
        f"~{max(0.0, n_star):,.0f} entries (process cold start {slope * 1000:.1f} ms per 1,000 "
        f"entries; {kind} {server:.1f} ms at any size measured)"
    )


def report(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    lines = [
        "| entries | index | cold start to first answer (found?) | search p50 | search p95 "
        "| peak RSS growth (client) | top-1 = exact scan | server population |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pop = "-" if r["populate"] is None else f"{float(r['populate']):,.0f} s"  # type: ignore[arg-type]
        lines.append(
            f"| {int(r['n']):,} | {r['kind']} | {float(r['cold']):,.1f} ms "  # type: ignore[arg-type]
            f"({'yes' if float(r['found']) >= 0.5 else 'NO'}) | "  # type: ignore[arg-type]
            f"{float(r['p50']):.2f} ms | {float(r['p95']):.2f} ms | {float(r['rss']):,.1f} MB | "  # type: ignore[arg-type]
            f"{100 * float(r['recall']):.1f}% | {pop} |"  # type: ignore[arg-type]
        )
    trap = [
        f"| {int(r['n']):,} | {100 * float(r['recall_ef10']):.1f}% | "  # type: ignore[arg-type]
        f"{100 * float(r['recall_range']):.1f}% | {100 * float(r['recall']):.1f}% |"  # type: ignore[arg-type]
        for r in rows
        if "recall_ef10" in r
    ]
    sweep = [
        f"| {int(r['n']):,} | {ef} | {100 * r[f'ef{ef}']['recall']:.1f}% | "  # type: ignore[index]
        f"{r[f'ef{ef}']['p50']:.2f} ms | {r[f'ef{ef}']['p95']:.2f} ms |"  # type: ignore[index]
        for r in rows
        for ef in args.sweep
        if f"ef{ef}" in r
    ]
    out = [
        f"Semantic index per PROMPTCACHE_INDEX, {DIM}-d, one namespace, {args.queries} "
        f"paraphrase-like queries (cosine 0.9 to a stored entry; k {K}, threshold {THRESHOLD}); "
        f"Redis {server_version()} + RediSearch on loopback; one BLAS thread; "
        f"{platform.machine()}, "
        f"{os.cpu_count()} cores (shared, load {os.getloadavg()[0]:.1f} at the end), Python "
        f"{platform.python_version()}. Cold start and RSS: median of {args.reps}.\n",
        "\n".join(lines),
        "",
        "HNSW recall (top-1 found = the exact scan's), M 16, EF_CONSTRUCTION 200:\n",
        "| entries | KNN, EF_RUNTIME 10 (Redis default) "
        f"| VECTOR_RANGE 0.2, EPSILON 0.01 (default) | KNN, EF_RUNTIME {args.ef} (--ef) |",
        "|---|---|---|---|",
        *trap,
        "",
        *(
            [
                "HNSW EF_RUNTIME sweep (KNN, k 4, threshold 0.8):\n",
                "| entries | EF_RUNTIME | top-1 = exact scan | p50 | p95 |",
                "|---|---|---|---|---|",
                *sweep,
                "",
            ]
            if sweep
            else []
        ),
        "Crossover on cold start (server-side index first answers sooner than loading the "
        "namespace into the process):\n",
        *(
            f"- {kind}: {crossover(rows, kind)}"
            for kind in ("redis-hnsw", "redis-flat", "upstash-vector")
            if kind in args.kinds
        ),
        "",
    ]
    return "\n".join(out)


def server_version() -> str:
    out = subprocess.run([redis_server_path(), "--version"], capture_output=True, text=True).stdout
    return next((p.split("=")[1] for p in out.split() if p.startswith("v=")), "?")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--kinds", default="process,redis-hnsw,redis-flat,upstash-vector")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    # the product's default (RedisIndex's), so the table shows what a deployment gets
    ef_default = inspect.signature(RedisIndex).parameters["ef_runtime"].default
    parser.add_argument("--ef", type=int, default=ef_default)
    parser.add_argument(
        "--sweep", default="", help="more HNSW EF_RUNTIME values to measure, e.g. 128,256,512"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.kinds = args.kinds.split(",")
    args.sweep = [int(x) for x in args.sweep.split(",") if x]
    rows: list[dict[str, object]] = []
    from threadpoolctl import threadpool_limits

    # One BLAS thread, as in a Lambda container of 1-2 vCPUs (and steadier on a shared machine).
    with threadpool_limits(limits=1, user_api="blas"), RedisServer(modules=True) as server:
        for n in (int(s) for s in args.sizes.split(",")):
            rows += run_size(n, args, server)
    text = report(rows, args)
    print(text)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
