"""Concurrent writers on one SQLite file: writes lost and writes per second, this checkout against
a baseline in the same run.

Run: ``.venv/bin/python -m bench.bench_sqlite_writers --baseline /work/main/functions`` (about a
minute). Each round starts ``--processes`` (2) writer processes of ``--threads`` (32) threads on a
fresh file, each thread storing ``--writes`` (60) entries and adding a counter per entry, readers
syncing beside them (tests/support/sqlite_writers.py); the store's busy timeout is ``--timeout``
(5 s, the deployed default). ``lost`` = writes the store refused (acknowledged writes are checked
in the file: entries counted, counter summed). Rounds of the variants alternate; medians over
``--rounds`` (3). Prints a Markdown table and writes it to bench/results/sqlite_writers.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "sqlite_writers.md"

CHECK = (
    "import sys; from promptcache.adapters.sqlite import SQLiteStore, SQLiteStats; "
    "s = SQLiteStore(sys.argv[1]); print(s.count(), int(SQLiteStats(s).read()['requests']))"
)


def one_round(code: str, args: argparse.Namespace) -> tuple[int, float]:
    """Writes lost (of 2 per entry) and acknowledged writes per second."""
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{ROOT}"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.sqlite3"
        subprocess.run([sys.executable, "-c", CHECK, str(path)], env=env, capture_output=True)
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.sqlite_writers",
                    str(path),
                    f"w{p}",
                    str(args.threads),
                    str(args.writes),
                    str(Path(tmp) / f"ack{p}"),
                    str(args.timeout),
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for p in range(args.processes)
        ]
        outs = [proc.communicate()[0].split() for proc in procs]
        seconds = time.perf_counter() - start
        stored, counted = map(
            int,
            subprocess.run(
                [sys.executable, "-c", CHECK, str(path)], env=env, capture_output=True, text=True
            ).stdout.split(),
        )
    sent = args.processes * args.threads * args.writes
    acked = sum(int(o[0]) + int(o[1]) for o in outs)
    assert stored == sum(int(o[0]) for o in outs), "an acknowledged entry is missing"
    assert counted == sum(int(o[1]) for o in outs), "an acknowledged counter is missing"
    return 2 * sent - acked, acked / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--writes", type=int, default=60)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="PYTHONPATH of the code to compare with")
    args = parser.parse_args()
    variants = {"this checkout": str(ROOT / "functions")}
    if args.baseline:
        variants["baseline"] = args.baseline
    runs: dict[str, list[tuple[int, float]]] = {name: [] for name in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            runs[name].append(one_round(variants[name], args))
    sent = 2 * args.processes * args.threads * args.writes
    lines = [
        f"SQLite writers: {args.processes} processes x {args.threads} threads x {args.writes} "
        f"entries (+ a counter each: {sent} writes per round), busy timeout {args.timeout:g} s, "
        f"medians of {args.rounds} rounds; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores",
        "",
        "| code | writes lost (median) | lost per round | acknowledged writes/s |",
        "|---|---|---|---|",
    ]
    for name, rs in runs.items():
        lost = [lo for lo, _ in rs]
        rate = statistics.median(w for _, w in rs)
        lines.append(
            f"| {name} | {statistics.median(lost):g} | {', '.join(map(str, lost))} | {rate:,.0f} |"
        )
    if args.baseline:
        mine = statistics.median(w for _, w in runs["this checkout"])
        base = statistics.median(w for _, w in runs["baseline"])
        lines += ["", f"Ratio this checkout / baseline, writes/s: {mine / base:.2f}x."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
