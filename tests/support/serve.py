"""Start `promptcache serve` as a real process on a free port, and stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_server(
    tmp_path: Path,
    upstream_url: str,
    command: Sequence[str] | None = None,
    cwd: Path | None = None,
    **env: str,
) -> Iterator[ServerProcess]:
    """`promptcache serve` on a SQLite store in tmp_path, answering misses from the
    OpenAI-compatible upstream at ``upstream_url`` with model ``test-model``; ``env`` adds
    settings. ``command`` runs another installation's ``promptcache`` (default: this
    interpreter's), in ``cwd``."""
    server = ServerProcess(
        {
            "PROMPTCACHE_DATA_DIR": str(tmp_path / "data"),
            "OPENAI_BASE_URL": upstream_url,
            "PROMPTCACHE_MODEL": "test-model",
            **env,
        },
        tmp_path / "server.log",
        command,
        cwd,
    ).start()
    try:
        yield server
    finally:
        server.stop()


class ServerProcess:
    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        command: Sequence[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.command = list(command or (sys.executable, "-m", "promptcache_tools.cli"))
        self.cwd = cwd
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.command, "serve", "--port", str(self.port)],
                env=env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                httpx.get(self.url + "/health", timeout=1.0)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
