"""Server-side latency of an exact hit, a semantic hit and a miss with 10,000 stored entries.

Run: ``.venv/bin/python -m bench.bench_latency`` (two to four minutes: embedding the 10,000
stored prompts dominates). ``--entries`` and ``--requests`` make it shorter; ``--no-http`` skips
the HTTP part.

The real core, as ``promptcache serve`` builds it (``runtime.build``): the SQLite store in a
temporary directory, the local embedder, the OpenAI-compatible adapter. The upstream is a local
OpenAI-compatible server that answers at once, and its time is excluded: the LLM adapter is
timed around each call and a miss's cache time is ``ChatResult.latency_ms`` minus that.

Then the same data is served by ``promptcache serve`` and the three kinds of request go through
HTTP (loopback, one keep-alive connection): the client's round trip and the server's
``latency_ms`` are reported (a miss there includes the instant upstream's round trip).

Stored prompts are distinct synthetic questions ("how do i <verb> <object> <context>?"); a
semantic query is a rewording of one ("what is the best way to ..."), kept only if the cache
answers it from the semantic tier; a miss is six random everyday words, kept only if it misses.
Prints a Markdown table and writes it to bench/results/latency.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from promptcache import runtime
from promptcache._protocols import LLM
from promptcache._types import ChatRequest, ChatResult, Completion, Message, Tier, Usage
from promptcache.settings import Settings
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

RESULTS = Path(__file__).resolve().parent / "results" / "latency.md"
MODEL = "bench-model"

VERBS = [
    "sort", "reverse", "filter", "merge", "split", "parse", "validate", "serialize", "compress",
    "encrypt", "cache", "paginate", "deduplicate", "index", "stream", "profile", "debug", "test",
    "deploy", "monitor", "benchmark", "document", "refactor", "translate", "visualize",
]  # fmt: skip
OBJECTS = [
    "a list of strings", "a nested dictionary", "a csv file", "a json document", "an xml feed",
    "a database table", "a linked list", "a binary tree", "a hash map", "a priority queue",
    "a web form", "an http response", "a log file", "a config file", "an image", "a video stream",
    "a sparse matrix", "a time series", "a graph of friends", "a shopping cart",
    "a user session", "an email address", "a phone number field", "a markdown page",
    "a yaml manifest", "a protobuf message", "a websocket message", "a zip archive",
    "a pdf report", "an audio clip", "a sql query", "a regular expression", "a unicode string",
    "a date range", "a currency amount", "a rest api", "a graphql schema", "a docker image",
    "a kubernetes pod", "a git history",
]  # fmt: skip
CONTEXTS = [
    "in python", "in javascript", "in rust", "in go", "in java", "in c sharp", "in ruby",
    "in kotlin", "in swift", "in haskell", "with the standard library only", "on the command line",
]  # fmt: skip


class TimedLLM:
    """The real LLM adapter, timed: the upstream's share of a miss is subtracted."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm
        self.last_ms = 0.0

    @property
    def name(self) -> str:
        return self.llm.name

    def generate(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        try:
            return self.llm.generate(request)
        finally:
            self.last_ms = (time.perf_counter() - started) * 1e3


@dataclass(frozen=True)
class Stat:
    p50: float
    p95: float
    n: int

    @classmethod
    def of(cls, ms: list[float]) -> Stat:
        ms = sorted(ms)
        return cls(statistics.median(ms), ms[min(len(ms) - 1, int(0.95 * len(ms)))], len(ms))

    def cell(self) -> str:
        return f"{self.p50:.2f} / {self.p95:.2f} ms (n={self.n})"


def stored_prompts(n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    combos = list(itertools.product(VERBS, OBJECTS, CONTEXTS))
    if n > len(combos):
        raise SystemExit(f"at most {len(combos)} distinct synthetic prompts")
    rng.shuffle(combos)
    return combos[:n]


def everyday_words(rng: random.Random) -> str:
    return " ".join(rng.sample(WORDS, 6))


#: Everyday words far from the stored questions: six drawn at random make a miss.
_WORDS = """
apple river mountain violin thunder garden pillow candle harbor meadow lantern orchard
blanket compass tulip saddle glacier pepper quilt falcon canyon biscuit anchor ribbon
pebble walnut tornado lemon kettle parrot velvet island marble feather cabbage trumpet
volcano cottage sparrow harvest mirror plum lagoon basket ginger hammock tiger cinnamon
desert ladder crystal barn honey pumpkin lighthouse scarf jungle pearl clover tractor
wool beacon mango shovel dolphin summit rainbow oven prairie cherry carpet badger rocket
sunset umbrella vinegar dragon tavern coconut fountain raven stable muffin blizzard
cathedral acorn lobster pottery saffron hedgehog bonfire cello mosquito oatmeal pyramid
turnip waterfall chimney peacock bamboo sandal typhoon almond zebra fiddle pudding yacht
noodle kayak avocado snail puppet granite heron cactus festival lullaby moss canoe
"""
WORDS = _WORDS.split()


def request(prompt: str) -> ChatRequest:
    return ChatRequest(messages=(Message("user", prompt),), model=MODEL)


def populate(cache: object, prompts: list[str], batch: int = 64) -> float:
    from promptcache.core import PromptCache

    assert isinstance(cache, PromptCache)
    started = time.perf_counter()
    for s in range(0, len(prompts), batch):
        chunk = prompts[s : s + batch]
        vectors = cache.embed_many(chunk)
        for prompt, vector in zip(chunk, vectors, strict=True):
            answer = Completion(f"stored answer to: {prompt}", MODEL, Usage(12, 80))
            cache.store_answer(request(prompt), answer, vector=vector)
    return time.perf_counter() - started


def in_process(
    env: dict[str, str], entries: int, n_requests: int, rng: random.Random
) -> tuple[dict[str, Stat], dict[str, str], list[str], list[str]]:
    settings = Settings.from_env(env)
    upstream = runtime.make_llm(settings)
    assert upstream is not None
    llm = TimedLLM(upstream)
    cache = runtime.build(settings, llm=llm)

    combos = stored_prompts(entries, rng)
    prompts = [f"how do i {v} {o} {c}?" for v, o, c in combos]
    populate_s = populate(cache, prompts)

    started = time.perf_counter()
    first = cache.chat(request(everyday_words(rng)))  # cold: loads all vectors from SQLite
    cold_ms = (time.perf_counter() - started) * 1e3 - llm.last_ms

    # semantic queries: rewordings that the cache answers from the semantic tier
    semantic: list[str] = []
    for v, o, c in combos:
        if len(semantic) >= n_requests:
            break
        q = f"what is the best way to {v} {o} {c}"
        hit, _ = cache.lookup(request(q))  # stores nothing, counts nothing
        if hit is not None and hit.tier is Tier.SEMANTIC:
            semantic.append(q)
    exact = [prompts[i] for i in rng.sample(range(entries), n_requests)]

    embed_ms: list[float] = []
    for q in semantic[:50]:
        t = time.perf_counter()
        cache.embedder.embed([q])
        embed_ms.append((time.perf_counter() - t) * 1e3)

    samples: dict[str, list[float]] = {"exact hit": [], "semantic hit": [], "miss": []}
    misses_rejected = 0
    for i in range(n_requests):
        r: ChatResult = cache.chat(request(exact[i]))
        assert r.tier is Tier.EXACT, r
        samples["exact hit"].append(r.latency_ms)
        if i < len(semantic):
            r = cache.chat(request(semantic[i]))
            assert r.tier is Tier.SEMANTIC, r
            samples["semantic hit"].append(r.latency_ms)
        llm.last_ms = 0.0
        r = cache.chat(request(everyday_words(rng)))
        if r.tier is Tier.MISS:
            samples["miss"].append(r.latency_ms - llm.last_ms)
        else:
            misses_rejected += 1
    stats = {k: Stat.of(v) for k, v in samples.items() if v}
    info = {
        "populate": f"{entries:,} entries stored in {populate_s:.1f} s "
        f"({entries / populate_s:.0f}/s, batched embeddings of 64)",
        "cold": f"first request after start (loads {entries:,} vectors from SQLite into the "
        f"index): {cold_ms:.0f} ms ({first.tier.value})",
        "embed": f"one embedding alone: p50 {statistics.median(embed_ms):.2f} ms",
        "rejected": f"{misses_rejected} random-word prompts were not misses and were skipped",
        "entries": str(cache.store.count()),
    }
    cache.store.close()  # type: ignore[attr-defined]
    return stats, info, exact, semantic


def over_http(
    env: dict[str, str], exact: list[str], semantic: list[str], rng: random.Random, log: Path
) -> dict[str, tuple[Stat, Stat]]:
    server = ServerProcess(env, log).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:

            def call(prompt: str) -> tuple[str, float, float]:
                t = time.perf_counter()
                resp = client.post("/chat", json={"prompt": prompt, "model": MODEL})
                wall = (time.perf_counter() - t) * 1e3
                resp.raise_for_status()
                body = resp.json()
                return body["tier"], wall, float(body["latency_ms"])

            call(exact[0])  # cold start: index load
            samples: dict[str, tuple[list[float], list[float]]] = {
                "exact hit": ([], []),
                "semantic hit": ([], []),
                "miss": ([], []),
            }
            plan: list[tuple[str, Callable[[int], str]]] = [
                ("exact hit", lambda i: exact[i]),
                ("semantic hit", lambda i: semantic[i]),
                ("miss", lambda i: everyday_words(rng)),
            ]
            for i in range(min(len(exact), len(semantic))):
                for kind, prompt in plan:
                    tier, wall, server_ms = call(prompt(i))
                    if tier == kind.split()[0]:
                        samples[kind][0].append(wall)
                        samples[kind][1].append(server_ms)
        return {k: (Stat.of(w), Stat.of(s)) for k, (w, s) in samples.items() if w}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, OpenAIUpstream() as upstream:
        env = {
            "PROMPTCACHE_STORE": "sqlite",
            "PROMPTCACHE_DATA_DIR": str(Path(tmp) / "data"),
            "PROMPTCACHE_EMBEDDER": "local",
            "PROMPTCACHE_LLM": "openai",
            "PROMPTCACHE_STATS": "store",
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY": "unused",
            "PROMPTCACHE_MODEL": MODEL,
        }
        stats, info, exact, semantic = in_process(env, args.entries, args.requests, rng)
        http = {} if args.no_http else over_http(env, exact, semantic, rng, Path(tmp) / "log")

    lines = [
        "# Cache latency benchmark",
        "",
        "`.venv/bin/python -m bench.bench_latency`",
        "",
        f"In process (`PromptCache.chat`, `ChatResult.latency_ms`, upstream time excluded), "
        f"{info['entries']} entries in SQLite:",
        "",
        "| request | p50 / p95 |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {s.cell()} |" for k, s in stats.items()]
    if http:
        lines += [
            "",
            "Through HTTP (`promptcache serve`, loopback, keep-alive):",
            "",
            "| request | client round trip p50 / p95 | server `latency_ms` p50 / p95 |",
            "|---|---:|---:|",
        ]
        lines += [f"| {k} | {w.cell()} | {s.cell()} |" for k, (w, s) in http.items()]
    lines += [
        "",
        f"- {info['populate']}.",
        f"- {info['cold']}.",
        f"- {info['embed']} (the local MiniLM embedder; a semantic hit and a miss each pay one).",
        f"- {info['rejected']}.",
        "- A miss through HTTP includes the instant local upstream's round trip; in process it "
        "is subtracted.",
        f"- Machine: {os.cpu_count()} cores, Python {platform.python_version()}; load average "
        f"{load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end; total "
        f"{time.perf_counter() - started:.0f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
