"""Cold start of a deployed function: importing the chat handler and building its cache.

Run: ``.venv/bin/python -m bench.bench_coldstart`` (under a minute). ``--runs`` (15);
``--baseline DIR`` also measures the code in DIR (a directory holding ``promptcache`` and the
handler modules side by side, as the layer and the function zip lay them out), runs alternating,
and reports both with their ratio.

What Lambda does on a cold start, in a fresh interpreter each run: the handler module ``chat`` is
imported with the function code and the layer on the path (``functions/handlers`` and
``functions`` of this checkout stand for them) and the first request builds the cache
(``runtime.cache()``) with the deployed configuration: Upstash store, Workers AI embedder and
model, Cloudflare KV stats, no ``PROMPTCACHE_THRESHOLD`` (so the calibration file is looked for).
No request is sent: the backends' addresses are closed loopback ports. Reported: the median wall
time of import + build, and how many of the project's modules the process had loaded (tool
modules among them are what a cold start should never pay for).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "coldstart.md"

PROBE = """
import sys, time
t0 = time.perf_counter()
import chat
chat.runtime.cache()
t1 = time.perf_counter()
import json
mods = sorted(m for m in sys.modules if m.startswith(("promptcache", "chat", "stats", "health")))
print(json.dumps({"seconds": t1 - t0, "modules": mods}))
"""


def deployed_env(data_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTCACHE_", "UPSTASH_"))}
    env.update(
        {
            "PROMPTCACHE_DATA_DIR": data_dir,
            "PROMPTCACHE_STORE": "upstash",
            "PROMPTCACHE_EMBEDDER": "workers-ai",
            "PROMPTCACHE_STATS": "cloudflare-kv",
            "PROMPTCACHE_LLM": "workers-ai",
            "UPSTASH_REDIS_REST_URL": "http://127.0.0.1:9",
            "UPSTASH_REDIS_REST_TOKEN": "bench",
            "CLOUDFLARE_ACCOUNT_ID": "bench",
            "CLOUDFLARE_API_TOKEN": "bench",
            "CLOUDFLARE_KV_NAMESPACE_ID": "bench",
            "CLOUDFLARE_API_BASE_URL": "http://127.0.0.1:9/client/v4",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
    )
    return env


def one(code_dirs: list[str], env: dict[str, str]) -> dict[str, object]:
    run_env = {**env, "PYTHONPATH": os.pathsep.join(code_dirs)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=run_env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"probe failed:\n{out.stderr[-3000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline", help="directory holding promptcache and the handlers")
    args = parser.parse_args()

    variants = {"this checkout": [str(ROOT / "functions" / "handlers"), str(ROOT / "functions")]}
    if args.baseline:
        variants["baseline"] = [args.baseline]
    times: dict[str, list[float]] = {name: [] for name in variants}
    modules: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = deployed_env(tmp)
        for _ in range(args.runs):
            for name, dirs in variants.items():
                result = one(dirs, env)
                times[name].append(float(result["seconds"]))  # type: ignore[arg-type]
                modules[name] = list(result["modules"])  # type: ignore[call-overload]

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        f"Cold start of the chat function: `import chat` + `runtime.cache()` with the deployed "
        f"configuration, a fresh interpreter per run, {args.runs} runs per variant alternating; "
        "medians.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end; "
        f"commit {commit}" + (f", baseline {args.baseline}" if args.baseline else "") + ".",
        "",
        "| code | import + build, median ms | min ms | project modules | tool modules |",
        "|---|---:|---:|---:|---|",
    ]
    tools = ("evaluation", "cli", "server", "promptcache_tools")
    for name in variants:
        loaded = modules[name]
        tool = [m for m in loaded if any(part in tools for part in m.split("."))]
        lines.append(
            f"| {name} | {statistics.median(times[name]) * 1000:.0f} | "
            f"{min(times[name]) * 1000:.0f} | {len(loaded)} | {', '.join(tool) or 'none'} |"
        )
    if args.baseline:
        ratio = statistics.median(times["this checkout"]) / statistics.median(times["baseline"])
        lines += ["", f"Ratio this checkout / baseline: {ratio:.2f}x."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
