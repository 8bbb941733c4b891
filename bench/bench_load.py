"""Load: 32 clients for 60 s of mixed traffic against `promptcache serve`, with namespace churn.

Run: ``.venv/bin/python -m bench.bench_load`` (about ``--seconds`` + 30 s; CI does not run it).
Two tenants (API keys, an admin key), a SQLite store, the local embedder, an instant local
OpenAI-compatible upstream. ``prepare`` stores each tenant's prompts; then ``--clients`` (32)
keep-alive clients send, for ``--seconds`` (60), the concurrency test's mix (tests/support/load.py:
exact and semantic hits on ``/chat`` and ``/v1``, plain and streamed; misses; ``GET`` and
``DELETE /entries``; invalid requests), plus misses under a model never seen before (weight
``--churn``, 10: each a namespace of its own, so the namespaces churn past
PROMPTCACHE_MAX_NAMESPACES). Every answer is checked against its own request.

Reports: requests and errors (any answer other than the one expected), requests/s; the stats'
``requests`` counter against the chat requests sent; the upstream's calls against the distinct
misses sent; the server's RSS (VmRSS) at the start, its peak and at the end, sampled every second.
Prints a Markdown table and writes it to bench/results/load.md.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import threading
import uuid
from pathlib import Path

import httpx

from tests.support.load import Outcome, Tenant, Workload
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

RESULTS = Path(__file__).resolve().parent / "results" / "load.md"
ADMIN = "key-admin"


def echoes(prompt: str, text: str) -> bool:
    return re.fullmatch(r"\[test upstream answer #\d+\] " + re.escape(prompt), text) is not None


class ChurningWorkload(Workload):
    """The concurrency test's mix, plus misses under models never seen before."""

    OPERATIONS = {**Workload.OPERATIONS, "churn": (10, "_churn")}

    def _churn(self, c: httpx.Client, t: Tenant, rnd: random.Random, out: Outcome) -> None:
        prompt = self._fresh(t)
        body = {"prompt": prompt, "threshold": 1.0, "model": f"churn-{uuid.uuid4().hex[:10]}"}
        r = c.post(self.base + "/chat", json=body, headers=t.headers())
        if r.status_code != 200 or r.json().get("tier") != "miss":
            out.fail("churn", f"{r.status_code} {r.text[:200]}")
        elif not self.answer_of(prompt, r.json().get("response", "")):
            out.fail("churn", f"{prompt!r} answered {r.text[:200]}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--churn", type=int, default=10, help="weight of the churn operation")
    parser.add_argument("--max-namespaces", type=int, default=256)
    args = parser.parse_args()
    ChurningWorkload.OPERATIONS["churn"] = (args.churn, "_churn")

    with tempfile.TemporaryDirectory() as tmp, OpenAIUpstream() as upstream:
        server = ServerProcess(
            {
                "PROMPTCACHE_DATA_DIR": str(Path(tmp) / "data"),
                "OPENAI_BASE_URL": upstream.base_url,
                "PROMPTCACHE_MODEL": "test-model",
                "PROMPTCACHE_API_KEYS": "key-alpha:alpha,key-beta:beta",
                "PROMPTCACHE_ADMIN_KEY": ADMIN,
                "PROMPTCACHE_MAX_NAMESPACES": str(args.max_namespaces),
                "POWERTOOLS_LOG_LEVEL": "ERROR",
            },
            Path(tmp) / "server.log",
        ).start()
        try:
            assert server.proc is not None
            pid = server.proc.pid
            tenants = [Tenant("alpha", "key-alpha"), Tenant("beta", "key-beta")]
            load = ChurningWorkload(server.url, tenants, echoes)
            load.prepare(per_tenant=48, paraphrases=16)

            def requests_counted() -> int:
                r = httpx.get(
                    server.url + "/stats", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
                )
                return int(r.json()["requests"])

            counted, calls = requests_counted(), upstream.calls
            samples = [rss_mb(pid)]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(1.0):
                    samples.append(rss_mb(pid))

            sampler = threading.Thread(target=sample)
            sampler.start()
            outcome = load.run(clients=args.clients, requests=0, seconds=args.seconds)
            done.set()
            sampler.join()
            samples.append(rss_mb(pid))
            counted = requests_counted() - counted
            calls = upstream.calls - calls
        finally:
            server.stop()

    kinds = outcome.by_kind
    chats = outcome.chats + kinds.get("churn", 0)  # Outcome counts the base mix's chats
    misses = sum(kinds.get(k, 0) for k in ("miss /chat", "miss stream", "churn"))
    misses += 2 * kinds.get("DELETE", 0)  # a miss, then the same prompt again after the delete
    lines = [
        f"Mixed load on `promptcache serve`: {args.clients} keep-alive clients for "
        f"{args.seconds:g} s (threads of one process on the same machine), two tenants, SQLite, "
        f"local embedder, churn weight {args.churn}, PROMPTCACHE_MAX_NAMESPACES "
        f"{args.max_namespaces}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}.",
        "",
        "| requests | errors | requests/s | chat requests sent | counted | distinct misses sent "
        "| upstream calls | new namespaces | RSS start MB | RSS peak MB | RSS end MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {outcome.requests} | {len(outcome.problems)} | "
        f"{outcome.requests / outcome.seconds:.0f} | {chats} | {counted} | {misses} | "
        f"{calls} | {kinds.get('churn', 0)} | {samples[0]:.0f} | {max(samples):.0f} | "
        f"{samples[-1]:.0f} |",
        "",
        "By kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ".",
    ]
    if outcome.problems:
        lines += ["", "First errors:", ""] + [f"- {p[:200]}" for p in outcome.problems[:10]]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
