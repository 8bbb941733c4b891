"""Exact-hit latency of a tools request beside a plain one, and of a tool loop's later turn.

Run: ``.venv/bin/python -m bench.bench_tools`` (about a minute). ``--requests`` sets how many
hits of each kind are timed (default 400); ``--prompts`` how many distinct stored requests of
each kind they cycle through (default 50).

Three kinds of request, each stored first (a miss), then asked again (exact hits):

- ``plain``: one user question, no tools.
- ``tools``: the same kind of question with five function tools (about 3 kB of JSON schemas)
  and ``tool_choice: auto``: the key hashes the tools' definitions; the stored answer is a call.
- ``loop turn``: the turn after the tool call: the question, the assistant's call and its tool
  result; keyed by the call's position, answered with text.

Two measurements of each, on the same data:

- in process: ``PromptCache.chat`` as ``promptcache serve`` builds it (``runtime.build``: SQLite
  store, local embedder), timed around the call; no HTTP.
- over HTTP: the official ``openai`` client against ``promptcache serve`` on loopback (one
  keep-alive connection), timed around ``chat.completions.create``: parsing, keying, the
  store's lookup and the response's shaping included.

The upstream is the test suite's local OpenAI-compatible stand-in (it answers the misses only).
Prints a Markdown table (medians, p95, tools / plain ratio) and writes it to
bench/results/tools.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

from promptcache import runtime
from promptcache._types import ChatRequest, Message, Tier, ToolCall
from promptcache.settings import Settings
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

RESULTS = Path(__file__).resolve().parent / "results" / "tools.md"
MODEL = "bench-model"


def _tool(name: str, fields: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Look up {name.replace('_', ' ')} for the user; use it whenever the "
            "user asks about it, and never guess the answer.",
            "parameters": {
                "type": "object",
                "properties": {
                    k: {"type": v, "description": f"the {k.replace('_', ' ')}"}
                    for k, v in fields.items()
                },
                "required": list(fields),
                "additionalProperties": False,
            },
            "strict": True,
        },
    }


TOOLS = [
    _tool("current_weather", {"city": "string", "country_code": "string", "unit": "string"}),
    _tool("local_time", {"city": "string", "timezone": "string"}),
    _tool("flight_status", {"flight_number": "string", "date": "string"}),
    _tool("exchange_rate", {"base": "string", "quote": "string", "amount": "number"}),
    _tool("search_orders", {"customer_id": "string", "status": "string", "limit": "integer"}),
]
CITIES = [
    "Paris", "Rome", "Oslo", "Lisbon", "Madrid", "Vienna", "Prague", "Dublin", "Athens", "Berlin",
]  # fmt: skip


def question(i: int) -> str:
    return f"What is the weather like in {CITIES[i % 10]} on day {i} of the trip?"


def loop_messages(i: int) -> list[dict[str, Any]]:
    call = {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "current_weather", "arguments": json.dumps({"city": CITIES[i % 10]})},
    }
    return [
        {"role": "user", "content": question(i)},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"call_{i}", "content": f"{i % 30} C, light wind"},
    ]


def wire(kind: str, i: int) -> dict[str, Any]:
    """The request body of kind ``kind`` number ``i`` (chat completions shape)."""
    if kind == "plain":
        return {"messages": [{"role": "user", "content": question(i)}]}
    if kind == "tools":
        return {
            "messages": [{"role": "user", "content": question(i)}],
            "tools": TOOLS,
            "tool_choice": "auto",
        }
    return {"messages": loop_messages(i), "tools": TOOLS, "tool_choice": "auto"}


def internal(kind: str, i: int) -> ChatRequest:
    """The same request as the OpenAI face builds it."""
    body = wire(kind, i)
    messages = []
    for m in body["messages"]:
        calls = tuple(
            ToolCall(c["function"]["name"], c["function"]["arguments"], c["id"])
            for c in m.get("tool_calls") or ()
        )
        messages.append(
            Message(
                m["role"], m["content"] or "", tool_calls=calls, tool_call_id=m.get("tool_call_id")
            )
        )
    options = {k: v for k, v in body.items() if k != "messages"}
    return ChatRequest(messages=tuple(messages), model=MODEL, options=options)


def timed(call: Callable[[Any], Any], items: list[Any]) -> list[float]:
    """Milliseconds of ``call(item)`` for each item."""
    out = []
    for item in items:
        start = time.perf_counter()
        call(item)
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


KINDS = ("plain", "tools", "loop turn")


def in_process(upstream: OpenAIUpstream, tmp: Path, prompts: int, requests: int) -> dict[str, Any]:
    env = {
        "PROMPTCACHE_STORE": "sqlite",
        "PROMPTCACHE_DATA_DIR": str(tmp / "inproc"),
        "PROMPTCACHE_EMBEDDER": "local",
        "PROMPTCACHE_LLM": "openai",
        "PROMPTCACHE_STATS": "store",
        "OPENAI_BASE_URL": upstream.base_url,
        "PROMPTCACHE_MODEL": MODEL,
    }
    cache = runtime.build(Settings.from_env(env))
    out: dict[str, Any] = {}
    for kind in KINDS:
        for i in range(prompts):
            cache.chat(internal(kind, i))
        requests_ = [internal(kind, i % prompts) for i in range(requests)]
        tiers = {cache.chat(r).tier for r in requests_[:prompts]}
        assert tiers == {Tier.EXACT}, (kind, tiers)
        out[kind] = summary(timed(cache.chat, requests_))
    return out


def over_http(upstream: OpenAIUpstream, tmp: Path, prompts: int, requests: int) -> dict[str, Any]:
    env = {
        "PROMPTCACHE_DATA_DIR": str(tmp / "http"),
        "OPENAI_BASE_URL": upstream.base_url,
        "PROMPTCACHE_MODEL": MODEL,
    }
    server = ServerProcess(env, tmp / "server.log").start()
    out: dict[str, Any] = {}
    try:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0) as client:
            for kind in KINDS:
                for i in range(prompts):
                    client.chat.completions.create(model=MODEL, **wire(kind, i))
                for i in range(prompts):
                    raw = client.chat.completions.with_raw_response.create(
                        model=MODEL, **wire(kind, i)
                    )
                    assert raw.headers["x-promptcache-tier"] == "exact", kind
                bodies = [wire(kind, i % prompts) for i in range(requests)]
                out[kind] = summary(
                    timed(lambda b: client.chat.completions.create(model=MODEL, **b), bodies)
                )
    finally:
        server.stop()
    return out


def table(inproc: dict[str, Any], http: dict[str, Any], prompts: int, requests: int) -> str:
    size = len(json.dumps(TOOLS))
    lines = [
        "# Exact hits: a tools request beside a plain one",
        "",
        f"{requests} exact hits of each kind, cycling through {prompts} stored requests; tools: "
        f"{len(TOOLS)} function definitions ({size} bytes of JSON). Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        "Command: `.venv/bin/python -m bench.bench_tools`.",
        "",
        "| request | in process median (ms) | p95 | ratio to plain | HTTP median (ms) | p95 "
        "| ratio to plain |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in KINDS:
        (im, ip), (hm, hp) = inproc[kind], http[kind]
        lines.append(
            f"| {kind} | {im:.3f} | {ip:.3f} | {im / inproc['plain'][0]:.2f} | {hm:.3f} | "
            f"{hp:.3f} | {hm / http['plain'][0]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    with OpenAIUpstream() as upstream, tempfile.TemporaryDirectory() as tmp:
        inproc = in_process(upstream, Path(tmp), args.prompts, args.requests)
        http = over_http(upstream, Path(tmp), args.prompts, args.requests)
    text = table(inproc, http, args.prompts, args.requests)
    print(text)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
