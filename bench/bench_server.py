"""Which HTTP server for `promptcache serve`: today's http.server (a thread per connection) against
waitress (a WSGI server with a thread pool, on PyPI), on the same workload in the same run, and
how each answers the protocol table of hostile requests.

Run: ``.venv/bin/python -m bench.bench_server`` (about a minute; needs ``waitress``, in the dev
extras). Both serve the same handlers from one process each, on fresh SQLite stores, the local
embedder, an instant local OpenAI-compatible upstream: waitress through a WSGI app written here
(bench/_wsgi_app.py: each request made an API Gateway event as promptcache_tools.server does,
the body buffered). ``--clients`` (16) keep-alive clients ask ``--prompts`` (64) stored prompts
(exact hits) for ``--seconds`` (8) per round, ``--rounds`` (4) rounds alternating which server
goes first; medians over rounds. Then the protocol table: each hostile request sent on a raw
socket, the status line and content type of the answer (or what happened) recorded.
Prints Markdown tables and writes them to bench/results/server.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.bench_concurrency import fill, round_of
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess

RESULTS = Path(__file__).resolve().parent / "results" / "server.md"

#: name -> raw bytes sent on a fresh connection (the issue's protocol table).
PROBES: dict[str, bytes] = {
    "TRACE": b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n",
    "CONNECT": b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    "lower-case get": b"get /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "malformed request line": b"GARBAGE\r\n\r\n",
    "16 KB header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16384 + b"\r\n\r\n",
    "70 KB header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    "Content-Length: abc": b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    "Content-Length: -1": b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
    "chunked body": b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n4\r\n{}  \r\n0\r\n\r\n",
    "headers never finished (3 s)": b"GET /health HTTP/1.1\r\nHost: x\r\n",
}


def probe(port: int, raw: bytes, wait: float = 3.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(raw)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            return "no answer yet (connection held)" if not data else "partial answer"
    if not data:
        return "closed without an answer"
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    types = [h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("content-type:")]
    ctype = types[0] if types else "-"
    return f"{head[0].split(' ', 1)[1] if ' ' in head[0] else head[0]} ({ctype})"


class WaitressProcess(ServerProcess):
    def __init__(self, env: dict[str, str], log_path: Path, threads: int) -> None:
        super().__init__(env, log_path)
        self.threads = threads

    def start(self, timeout: float = 60.0) -> WaitressProcess:
        import subprocess

        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench._wsgi_app", str(self.port), str(self.threads)],
                env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/health", timeout=1.0)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(self.log_path.read_text()[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=64)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"http.server": [], "waitress": []}
    probes: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp, OpenAIUpstream() as upstream:

        def env(name: str) -> dict[str, str]:
            return {
                "PROMPTCACHE_DATA_DIR": str(Path(tmp) / name),
                "OPENAI_BASE_URL": upstream.base_url,
                "PROMPTCACHE_MODEL": "bench-model",
                "POWERTOOLS_LOG_LEVEL": "ERROR",
            }

        makers: dict[str, Callable[[], ServerProcess]] = {
            "http.server": lambda: ServerProcess(env("a"), Path(tmp) / "a.log").start(),
            "waitress": lambda: WaitressProcess(
                env("b"), Path(tmp) / "b.log", args.clients
            ).start(),
        }
        servers = {name: make() for name, make in makers.items()}
        try:
            prompts = {name: fill(s.url, args.prompts) for name, s in servers.items()}
            for i in range(args.rounds):
                order = list(servers.items())
                for name, server in order if i % 2 == 0 else order[::-1]:
                    results[name].append(
                        round_of(server.url, prompts[name], args.clients, args.seconds)
                    )
            for name, server in servers.items():
                probes[name] = {p: probe(server.port, raw) for p, raw in PROBES.items()}
        finally:
            for server in servers.values():
                server.stop()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    lines = [
        f"Exact hits, {args.clients} keep-alive clients (threads of one process on the same "
        f"machine), {args.rounds} rounds of {args.seconds:g} s per server alternating; "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}.",
        "",
        "| server | requests/s | p50 ms | p99 ms | wrong | failed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in results:
        lines.append(
            f"| {name} | {med(name, 'rps'):.0f} | {med(name, 'p50'):.2f} | "
            f"{med(name, 'p99'):.2f} | {sum(int(r['wrong']) for r in results[name])} | "
            f"{sum(int(r['failed']) for r in results[name])} |"
        )
    ratio = med("waitress", "rps") / med("http.server", "rps")
    lines += ["", f"Ratio waitress / http.server: throughput {ratio:.2f}x, p50 "
              f"{med('waitress', 'p50') / med('http.server', 'p50'):.2f}x.", ""]  # fmt: skip
    lines += ["| request | http.server | waitress |", "|---|---|---|"]
    for p in PROBES:
        lines.append(f"| {p} | {probes['http.server'][p]} | {probes['waitress'][p]} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
