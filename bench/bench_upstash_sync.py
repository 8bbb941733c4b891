"""Index sync through Upstash's REST protocol: cold load, steady state, versus the seed's approach.

Run: ``.venv/bin/python -m bench.bench_upstash_sync`` (about two minutes; ``--sizes 10000`` for
less). Its redis-server is the dev extras' (tests/support/redis_server.py). The REST stand-in
(tests/support/upstash_standin.py) and its redis-server run in a child process on loopback;
this process is the client, so its RSS is the client's alone. Measured in the same run, on the
same random 384-d unit vectors:

- cold load: a new ``UpstashStore`` reads the namespace's whole vector log (chunked GETRANGE,
  ``Upstash-Encoding: base64``; once more with plain JSON answers) and builds the ``VectorIndex``
  the core would: wall time, requests, bytes received, peak RSS growth;
- steady state: one ``sync`` per request from a warm cursor (exact lookup + log tail in one
  /pipeline), with nothing new and with one entry appended by another writer since the last
  request: median latency and bytes per request;
- the seed's approach: every lookup fetches every stored vector as JSON (HGETALL over REST),
  parses it and scans it: median latency and bytes per lookup. Measured up to ``--seed-max``
  entries (default 10,000) and extrapolated linearly beyond (labelled as such).

Bytes are HTTP bodies as received (headers excluded, ~200 bytes a request). Prints a Markdown
table and writes it to bench/results/upstash_sync.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import redis

from promptcache import Entry, Usage
from promptcache.adapters.upstash import DEFAULT_CHUNK_BYTES, UpstashStore
from promptcache.index import VectorIndex
from tests.support.redis_server import RedisServer, redis_server_path

DIM = 384
NS = "bench:fake:384:upstash-sync"
RESULTS = Path(__file__).resolve().parent / "results" / "upstash_sync.md"
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- measuring
class Counting(httpx.BaseTransport):
    """Counts requests and body bytes on the client side."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.requests = 0
        self.sent = 0
        self.received = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.sent += len(request.read())
        response = self._inner.handle_request(request)
        content = response.read()
        self.received += len(content)
        return httpx.Response(
            response.status_code, headers=response.headers, content=content,
            extensions=response.extensions,
        )  # fmt: skip

    def close(self) -> None:
        self._inner.close()

    def take(self) -> tuple[int, int]:
        out = (self.requests, self.received)
        self.requests = self.received = self.sent = 0
        return out


def rss() -> tuple[int, int]:
    """(current, peak) resident set size of this process, bytes."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) * 1024
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def unit_rows(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def entry(i: int, now: float) -> Entry:
    return Entry(
        id=uuid.uuid4().hex,
        namespace=NS,
        exact_key=f"{i:064x}",
        prompt=f"benchmark prompt number {i}",
        response="a stored answer of a few sentences. " * 6,
        model="m",
        usage=Usage(12, 80),
        created_at=now,
        expires_at=now + 7 * 86400,
    )


# ---------------------------------------------------------------------------- the servers
class StandIn:
    """The REST stand-in in a child process (with its own redis-server)."""

    def __init__(self, redis_port: int) -> None:
        command = [sys.executable, "-m", "tests.support.upstash_standin"]
        self.proc = subprocess.Popen(
            [*command, "--redis-port", str(redis_port)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url, self.token = self.proc.stdout.readline().split()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@dataclass
class Client:
    transport: Counting
    http: httpx.Client

    @classmethod
    def new(cls) -> Client:
        transport = Counting()
        return cls(transport, httpx.Client(transport=transport, timeout=120.0))

    def store(self, standin: StandIn, **kwargs: object) -> UpstashStore:
        return UpstashStore(self.http, standin.url, standin.token, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.http.close()


def populate(
    r: redis.Redis, helper: UpstashStore, vectors: npt.NDArray[np.float32], start: int
) -> list[Entry]:
    """Write entries exactly as UpstashStore.put does (its own command list), pipelined straight
    into Redis so that setting up 100,000 entries takes seconds."""
    now = time.time()
    entries = [entry(start + i, now) for i in range(len(vectors))]
    for s in range(0, len(entries), 2000):
        pipe = r.pipeline(transaction=False)
        for e, v in zip(entries[s : s + 2000], vectors[s : s + 2000], strict=True):
            for command in helper.put_commands(e, v, "0.0")[:-2]:  # not the two checking GETs
                pipe.execute_command(*command)
        pipe.execute()
    return entries


# ---------------------------------------------------------------------------- the measurements
@dataclass(frozen=True)
class Cold:
    seconds: float
    requests: int
    received: int
    peak_rss: int
    index_bytes: int


def cold_load(
    standin: StandIn, chunk: int, base64_responses: bool, n: int, one_stack: bool = False
) -> Cold:
    """Sync a namespace from nothing and build its index as the core does (``apply_log``), or,
    with ``one_stack``, as it did before: every vector stacked into one array first."""
    client = Client.new()
    store = client.store(standin, chunk_bytes=chunk, base64_responses=base64_responses)
    gc.collect()
    before, _ = rss()
    reset_peak_rss()
    started = time.perf_counter()
    result = store.sync(NS, "f" * 64, None)
    index = VectorIndex(DIM, capacity=max(1024, len(result.records)))
    if one_stack:
        live = [r for r in result.records if r.vector is not None]
        index.add(
            [r.entry_id for r in live],
            np.stack([r.vector for r in live]),  # type: ignore[misc]
            [r.expires_at for r in live],
        )
        del live
    else:
        index.apply_log(result.records)
    seconds = time.perf_counter() - started
    _, peak = rss()
    assert len(index) == n, (len(index), n)
    requests, received = client.transport.take()
    client.close()
    return Cold(seconds, requests, received, peak - before, index.nbytes)


def steady(
    standin: StandIn, r: redis.Redis, chunk: int, rounds: int, new_per_round: int
) -> tuple[float, float]:
    """Median ms and bytes received per sync from a warm cursor."""
    client = Client.new()
    store = client.store(standin, chunk_bytes=chunk)
    cursor = store.sync(NS, None, None).cursor
    client.transport.take()
    rng = np.random.default_rng(7)
    times: list[float] = []
    received: list[int] = []
    for i in range(rounds):
        if new_per_round:
            populate(r, store, unit_rows(rng, new_per_round), 10_000_000 + i * new_per_round)
        key = f"{rng.integers(1 << 62):064x}"
        started = time.perf_counter()
        result = store.sync(NS, key, cursor)
        times.append(time.perf_counter() - started)
        assert len(result.records) == new_per_round and not result.reset
        cursor = result.cursor
        received.append(client.transport.take()[1])
    client.close()
    return median_ms(times), statistics.median(received)


def seed_lookup(
    standin: StandIn, r: redis.Redis, vectors: npt.NDArray[np.float32], reps: int
) -> tuple[float, float]:
    """The seed's lookup: every stored vector, as JSON, on every request."""
    key = f"seed:{len(vectors)}"
    for s in range(0, len(vectors), 2000):
        pipe = r.pipeline(transaction=False)
        for i, v in enumerate(vectors[s : s + 2000], start=s):
            pipe.hset(key, f"id{i}", json.dumps(v.tolist()))
        pipe.execute()
    client = Client.new()
    query = vectors[len(vectors) // 2]
    times: list[float] = []
    received = 0
    for _ in range(reps):
        started = time.perf_counter()
        answer = client.http.post(
            standin.url, json=["HGETALL", key], headers={"Authorization": f"Bearer {standin.token}"}
        ).json()["result"]
        ids = answer[0::2]
        matrix = np.array([json.loads(v) for v in answer[1::2]], dtype=np.float32)
        best = int(np.argmax(matrix @ query))
        times.append(time.perf_counter() - started)
        assert ids[best] == f"id{len(vectors) // 2}"
        received = client.transport.take()[1]
        del answer, matrix
    client.close()
    r.delete(key)
    return median_ms(times), float(received)


# ---------------------------------------------------------------------------- report
def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def run(sizes: list[int], seed_max: int, chunk: int, reps: int, rounds: int) -> str:
    rng = np.random.default_rng(42)
    lines = [
        "| entries | what | median time | requests | bytes received | peak RSS growth |",
        "|---|---|---|---|---|---|",
    ]
    seed_per_entry: tuple[float, float] | None = None
    with RedisServer() as server:
        r = server.client()
        standin = StandIn(server.port)
        try:
            helper = UpstashStore(httpx.Client(), standin.url, standin.token)  # commands only
            for n in sizes:
                r.flushall()
                vectors = unit_rows(rng, n)
                t0 = time.perf_counter()
                populate(r, helper, vectors, 0)
                print(f"[{n:,}] populated in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
                variants = (
                    (True, False, "base64 answers"),
                    (True, True, "base64 answers, one np.stack of all vectors (before)"),
                    (False, False, "plain JSON answers"),
                )
                reps_of = {v: reps if v[0] else 1 for v in variants}
                cold: dict[tuple[bool, bool, str], list[Cold]] = {v: [] for v in variants}
                for rep in range(reps):  # interleaved, so drift hits every variant alike
                    for v in variants:
                        if rep < reps_of[v]:
                            cold[v].append(cold_load(standin, chunk, v[0], n, one_stack=v[1]))
                for (_, _, label), runs in cold.items():
                    c = runs[0]
                    t = statistics.median(x.seconds for x in runs)
                    peak = statistics.median(x.peak_rss for x in runs)
                    lines.append(
                        f"| {n:,} | cold load, {label} (index {mb(c.index_bytes)}) | "
                        f"{t * 1000:,.0f} ms | {c.requests} | {mb(c.received)} | {mb(peak)} |"
                    )
                    print(lines[-1], file=sys.stderr)
                for new, label in ((0, "nothing new"), (1, "1 new entry")):
                    ms, got = steady(standin, r, chunk, rounds, new)
                    lines.append(
                        f"| {n:,} | steady sync per request, {label} | {ms:.2f} ms | 1 | "
                        f"{got:,.0f} B | - |"
                    )
                    print(lines[-1], file=sys.stderr)
                if n <= seed_max:
                    ms, got = seed_lookup(standin, r, vectors, 3 if n >= 10_000 else 5)
                    seed_per_entry = (ms / n, got / n)
                    lines.append(
                        f"| {n:,} | seed: every vector as JSON per lookup | {ms:,.0f} ms | 1 | "
                        f"{mb(got)} | - |"
                    )
                elif seed_per_entry is not None:
                    ms, got = seed_per_entry[0] * n, seed_per_entry[1] * n
                    lines.append(
                        f"| {n:,} | seed: every vector as JSON per lookup (extrapolated "
                        f"linearly, not measured) | ~{ms:,.0f} ms | 1 | ~{mb(got)} | - |"
                    )
                print(lines[-1], file=sys.stderr)
                del vectors
                gc.collect()
        finally:
            standin.stop()
            r.close()
    header = (
        f"Upstash REST sync, {DIM}-d, chunk {chunk:,} B, loopback stand-in + redis-server "
        f"{server_version()}; {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Cold load: median of "
        f"{reps}; steady state: median of {rounds} requests; seed: median of 3-5 lookups.\n\n"
    )
    return header + "\n".join(lines) + "\n"


def server_version() -> str:
    out = subprocess.run([redis_server_path(), "--version"], capture_output=True, text=True).stdout
    return next((p.split("=")[1] for p in out.split() if p.startswith("v=")), "?")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--seed-max", type=int, default=10_000)
    parser.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    table = run(
        [int(s) for s in args.sizes.split(",")], args.seed_max, args.chunk_bytes, args.reps,
        args.rounds,
    )  # fmt: skip
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)


if __name__ == "__main__":
    main()
