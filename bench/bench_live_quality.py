"""Decision quality as a cache is really used: a stream of questions through ``promptcache serve``,
every miss stored, later questions meeting those entries as candidates.

The protocol. From one labelled pair file (``--set qqp|paws``, read in place from
``../shared/data``), the pairs of ``--part`` (the same split as ``promptcache eval --part``) are
sampled as ``eval`` samples them: whole groups of linked texts in a seeded order until at least
``--limit`` pairs (``--seed``), so every pair between two chosen texts is chosen. Every distinct
text of those pairs, ``a``'s and ``b``'s alike, is asked once, in one seeded shuffled order,
sequentially, through ``POST /chat`` of a real ``promptcache serve`` process (fresh SQLite data
dir per policy, local embedder). A miss is answered by a measurement upstream in this file (a
local OpenAI-compatible chat completions server) with the label of the question's intent,
``intent:<n>``, and stored. Intents are connected chains of ``duplicate: true`` pairs over the
whole file (``evaluation.intents``). A semantic hit is correct when the answer it returns carries
the query's intent label.

Why it differs from the static protocol (``promptcache eval``: store every ``a``, ask every
``b``, no writes): here the cache holds whatever earlier queries missed on, ``b``'s included,
and every guard and the verifier model judge those entries as candidates too; a false hit is
not stored, so what later queries meet depends on the policy's own earlier decisions.

Per policy: queries, semantic hits, correct and false hits, false hits per 1,000 queries (and
of them, as in ``eval``, those on labelled pairs: the query and the entry that answered it, read
from the answer's ``entry_id``, form a pair of the file, labelled ``duplicate: false``),
precision (correct / semantic hits), recall (correct / answerable: queries whose intent had
already been stored, by an earlier miss of this policy's run, when they were asked), hit rate
(semantic hits / queries); client-side latency p50/p95 of semantic hits and p50 of misses; the
``verify`` part of ``Server-Timing`` (guards + verifier model, ms per query: mean, p95).

Policies: ``--policy NAME:KEY=VALUE,KEY=VALUE`` (settings given to the server), repeatable;
without one, ``guards`` (the shipped defaults) and ``verifier`` (PROMPTCACHE_VERIFIER_MODEL=local).
Every policy gets the same stream.

Run: ``.venv/bin/python -m bench.bench_live_quality --set qqp --limit 150`` (then ``--set
paws``). Writes a Markdown table to stdout and ``--out`` (bench/results/live_quality.md; a
section per set and part, earlier ones kept). Time, on this busy 2-core machine: ~0.06 s per
query per policy (the verifier adds ~0.01 s to a query that reaches it) and ~10 s per server
start: ``--limit 150`` (~300 queries, both default policies) takes ~40 s per set; ``--limit
3000`` (~6,000 queries) an estimated 15-20 minutes per set.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from promptcache._errors import PromptCacheError
from promptcache._keys import canonical
from promptcache_tools import evaluation as ev
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import local_server

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "live_quality.md"
SETS = {"qqp": "qqp_dev.pairs.jsonl.gz", "paws": "paws_dev.pairs.jsonl.gz"}
DEFAULT_POLICIES: tuple[tuple[str, dict[str, str]], ...] = (
    ("guards", {}),
    ("verifier", {"PROMPTCACHE_VERIFIER_MODEL": "local"}),
)
_LABEL = re.compile(r"^intent:(\d+)$")
_TIMING = re.compile(r"([A-Za-z0-9_-]+);dur=([0-9.]+)")


# ---------------------------------------------------------------------------- measurement upstream
class IntentUpstream(OpenAIUpstream):
    """The measurement upstream: the tests' OpenAI-compatible server answering each question with
    the label of its intent (``intent:<n>``; ``intent:unknown`` for a question not in the data),
    so a cached answer tells which intent it was stored for."""

    def __init__(self, intent_of: dict[str, int]) -> None:
        labels = {text: f"intent:{n}" for text, n in intent_of.items()}
        super().__init__(
            lambda q: labels.get(q) or labels.get(canonical(q), "intent:unknown"),
        )
        self.__enter__()

    def close(self) -> None:
        self.__exit__(None, None, None)


# ---------------------------------------------------------------------------- one policy's run
@dataclass
class Run:
    name: str
    env: dict[str, str]
    queries: int = 0
    answerable: int = 0
    hits: int = 0
    correct: int = 0
    labelled_false: int = 0  # false hits whose query and entry form a pair of the file
    exact: int = 0
    other: dict[str, int] = field(default_factory=dict)  # bypass or an error status
    hit_ms: list[float] = field(default_factory=list)
    miss_ms: list[float] = field(default_factory=list)
    verify_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def false_hits(self) -> int:
        return self.hits - self.correct

    def row(self) -> str:
        q = self.queries or 1
        precision = self.correct / self.hits if self.hits else 1.0
        recall = self.correct / self.answerable if self.answerable else 0.0
        verify = f"{np.mean(self.verify_ms):.2f} / {pct(self.verify_ms, 95):.2f}"
        cells = [
            self.name,
            str(self.queries),
            str(self.answerable),
            str(self.hits),
            str(self.correct),
            str(self.false_hits),
            f"{1000 * self.false_hits / q:.1f}",
            f"{1000 * self.labelled_false / q:.1f}",
            f"{precision:.3f}",
            f"{recall:.3f}",
            f"{self.hits / q:.3f}",
            f"{pct(self.hit_ms, 50):.1f} / {pct(self.hit_ms, 95):.1f}",
            f"{pct(self.miss_ms, 50):.1f}",
            verify if self.verify_ms else "-",
        ]
        return "| " + " | ".join(cells) + " |"


HEADER = (
    "| policy | queries | answerable | semantic hits | correct | false | false / 1k | on labelled "
    "pairs / 1k | precision | recall | hit rate | hit ms p50 / p95 | miss ms p50 | verify ms "
    "mean / p95 |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def timings(header: str | None) -> dict[str, float]:
    """``Server-Timing: lookup;dur=0.4, embed;dur=3.3, ...`` as {part: ms}."""
    return {name: float(ms) for name, ms in _TIMING.findall(header or "")}


def intent_of_answer(text: str) -> int | None:
    match = _LABEL.match(text.strip())
    return int(match.group(1)) if match else None


def run_policy(
    name: str,
    env: dict[str, str],
    stream: Sequence[str],
    intent_of: dict[str, int],
    labelled: set[frozenset[str]],
    upstream: IntentUpstream,
    progress: bool,
) -> Run:
    """Ask ``stream`` in order through a fresh ``promptcache serve`` with ``env``; ``labelled``:
    the texts of every pair of the file between two texts of the stream."""
    run = Run(name, env)
    stored: set[int] = set()  # intents some earlier miss stored
    prompt_of: dict[str, str] = {}  # entry id -> the text whose miss stored it
    with (
        tempfile.TemporaryDirectory(prefix="promptcache-live-") as tmp,
        local_server(Path(tmp), upstream.base_url, **env) as server,
        httpx.Client(base_url=server.url, timeout=60.0) as client,
    ):
        # load the embedder and the verifier model before timing (another model's namespace)
        for prompt in ("warm up the cache", "warm up the cache please"):
            client.post("/chat", json={"prompt": prompt, "model": "warmup"})
        started = time.perf_counter()
        for i, text in enumerate(stream):
            intent = intent_of[text]
            t0 = time.perf_counter()
            resp = client.post("/chat", json={"prompt": text})
            ms = 1000 * (time.perf_counter() - t0)
            run.queries += 1
            answerable = intent in stored
            run.answerable += answerable
            if resp.status_code != 200:
                key = f"HTTP {resp.status_code}"
                run.other[key] = run.other.get(key, 0) + 1
                continue
            body = resp.json()
            tier = resp.headers.get("x-promptcache-tier") or body.get("tier")
            parts = timings(resp.headers.get("server-timing"))
            if "verify" in parts:
                run.verify_ms.append(parts["verify"])
            if tier == "semantic":
                run.hits += 1
                right = intent_of_answer(body.get("response", "")) == intent
                run.correct += right
                entry = prompt_of.get(str(body.get("entry_id")))
                run.labelled_false += not right and frozenset((text, entry or "")) in labelled
                run.hit_ms.append(ms)
            elif tier == "miss":
                stored.add(intent)
                if body.get("entry_id"):
                    prompt_of[str(body["entry_id"])] = text
                run.miss_ms.append(ms)
            elif tier == "exact":
                run.exact += 1
            else:
                run.other[str(tier)] = run.other.get(str(tier), 0) + 1
            if progress and (i + 1) % 100 == 0:
                print(f"  {name}: {i + 1}/{len(stream)}", file=sys.stderr)
        run.seconds = time.perf_counter() - started
    return run


# ---------------------------------------------------------------------------- command line
def parse_policy(raw: str) -> tuple[str, dict[str, str]]:
    """``NAME:KEY=VALUE,KEY=VALUE`` (or ``NAME``) as (name, settings)."""
    name, _, rest = raw.partition(":")
    name = name.strip()
    if not name:
        raise argparse.ArgumentTypeError(f"policy {raw!r}: give NAME:KEY=VALUE,...")
    env: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise argparse.ArgumentTypeError(f"policy {raw!r}: {item!r} is not KEY=VALUE")
        env[key.strip()] = value.strip()
    return name, env


def describe(env: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in env.items()) or "shipped defaults"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_live_quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--set", choices=sorted(SETS), default="qqp")
    p.add_argument("--part", choices=ev.PARTS, default="holdout")
    p.add_argument(
        "--limit",
        type=int,
        default=150,
        help="pairs: whole groups of linked texts in a seeded order until at least this many",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", type=parse_policy, action="append", default=[])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    inherited = sorted(k for k in os.environ if k.startswith("PROMPTCACHE_"))
    if inherited:
        names = ", ".join(inherited)
        p.error(f"unset {names} (the server would inherit it) or give it in --policy")
    policies = args.policy or list(DEFAULT_POLICIES)
    if len({name for name, _ in policies}) != len(policies):
        p.error("policy names must differ")
    path = args.data / SETS[args.set]
    try:
        pairs = ev.read_pairs(path)
        intent_of = ev.intents(pairs)
        chosen = ev.select(pairs, args.part, args.limit, args.seed)
    except (OSError, PromptCacheError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stream = sorted({t for pair in chosen for t in (pair.a, pair.b)})
    labelled = {frozenset((pair.a, pair.b)) for pair in chosen}  # every pair between them
    random.Random(args.seed).shuffle(stream)

    upstream = IntentUpstream(intent_of)
    runs: list[Run] = []
    try:
        for name, env in policies:
            if not args.quiet:
                print(f"{name}: {len(stream)} queries ({describe(env)})", file=sys.stderr)
            try:
                runs.append(
                    run_policy(name, env, stream, intent_of, labelled, upstream, not args.quiet)
                )
            except RuntimeError as exc:  # the server refused its settings or did not start
                print(f"error: policy {name}: {exc}", file=sys.stderr)
                return 2
    finally:
        upstream.close()

    command = "python -m bench.bench_live_quality " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"## {args.set} {args.part}, {len(chosen)} pairs, {len(stream)} queries (seed {args.seed})",
        "",
        f"`{command.strip()}`; set {args.set}, part {args.part}, limit {args.limit}, seed "
        f"{args.seed}; {platform.machine()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load {load} (1/5/15 min)",
        "",
        HEADER,
        *(run.row() for run in runs),
        "",
    ]
    for run in runs:
        extra = "; ".join(f"{k}: {v}" for k, v in sorted(run.other.items()))
        lines.append(
            f"- {run.name}: {describe(run.env)}; {run.seconds:.0f} s; exact hits {run.exact}"
            + (f"; {extra}" if extra else "")
        )
    section = "\n".join(lines) + "\n"
    print(section)
    write(args.out, f"## {args.set} {args.part},", section)
    return 0


def write(out: Path, key: str, section: str) -> None:
    """Replace this set and part's section of ``out`` (others kept), or add it."""
    title = "# Decision quality through `promptcache serve` (every miss stored)\n"
    old = out.read_text() if out.exists() else ""
    kept = [s for s in old.split("\n## ")[1:] if not ("## " + s).startswith(key)]
    body = "".join("\n## " + s.rstrip("\n") + "\n" for s in kept)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(title + body + "\n" + section)


if __name__ == "__main__":
    raise SystemExit(main())
