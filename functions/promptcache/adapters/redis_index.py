"""The semantic index on Redis's query engine, over RESP (``redis`` client): Redis 8, Redis Cloud,
and the AWS services that speak it (``PROMPTCACHE_INDEX=redis``).

Each indexed entry is one hash ``{prefix}:{entry id}``:

    ns   TAG      a digest of the cache namespace (a TAG holds it whole, no escaping needed)
    exp  NUMERIC  expiry, epoch seconds (``_NEVER`` for none); the key also expires then
    dim  NUMERIC  the vector's dimension
    v    VECTOR   FLOAT32 unit vector, COSINE

One search index per dimension (``FT.CREATE {prefix}:{algorithm}:{dim} ON HASH PREFIX {prefix}:
FILTER @dim==dim``), created on first use, so two embedders never meet. A search is one
``FT.SEARCH`` KNN query with the namespace and expiry as pre-filters:

    (@ns:{digest} @exp:[(now +inf])=>[KNN k @v $q EF_RUNTIME ef AS d]

KNN, never a range query (``VECTOR_RANGE``): Redis's HNSW range queries ignore EF_RUNTIME and stop
at EPSILON, and at the default they miss most neighbours; a KNN query searches ``ef`` candidates
(``ef_runtime``, at least ``k``) and the threshold is applied to its answers here. ``algorithm``:
``FLAT`` (exact scan on the server, the default) or ``HNSW`` (sub-linear, approximate: its
top-1 recall depends on ``ef_runtime``; measured in bench/bench_server_index.py).

Every query carries its own ``TIMEOUT`` (``timeout_ms``, the backend timeout): at the module's
default (500 ms, ON_TIMEOUT ``return``) a slow query answers with no results and no error, which
would read as a miss; a RESP3 reply's timeout warning is a StoreError.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis

from .._errors import ConfigError, StoreError
from .._types import Vector

#: "never expires" as a number RediSearch compares exactly (epoch seconds, year ~2286).
_NEVER = 1e10
ALGORITHMS = ("flat", "hnsw")
#: Entries per pipeline of ``add_many`` (one round trip each).
BATCH = 500


def _digest(namespace: str) -> str:
    return hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:32]


class RedisIndex:
    """``Index`` on a Redis with the query engine. ``client``: a ``redis.Redis`` (injected)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        algorithm: str = "flat",
        ef_runtime: int = 512,
        m: int = 16,
        ef_construction: int = 200,
        prefix: str = "promptcache:vec",
        timeout_ms: int = 5000,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"Redis index algorithm must be one of {ALGORITHMS}: {algorithm!r}")
        if ef_runtime < 1 or m < 2 or ef_construction < 1:
            raise ConfigError("Redis HNSW parameters must be positive (M at least 2)")
        self._client = client
        self.algorithm = algorithm
        self.ef_runtime = ef_runtime
        self.m = m
        self.ef_construction = ef_construction
        self.prefix = prefix
        self.timeout_ms = max(1, int(timeout_ms))
        self._ready: set[int] = set()
        self._lock = threading.Lock()

    def name(self, dim: int) -> str:
        """The search index of ``dim``-dimensional vectors."""
        return f"{self.prefix}:{self.algorithm}:{dim}"

    def _key(self, entry_id: str) -> str:
        return f"{self.prefix}:{entry_id}"

    # ------------------------------------------------------------------ the Index protocol
    def add(self, namespace: str, entry_id: str, vector: Vector, expires_at: float | None) -> None:
        self.add_many(namespace, [(entry_id, vector, expires_at)])

    def add_many(self, namespace: str, items: Sequence[tuple[str, Vector, float | None]]) -> None:
        """One pipeline (a MULTI/EXEC) per ``BATCH`` entries."""
        digest = _digest(namespace)
        for start in range(0, len(items), BATCH):
            pipe = self._client.pipeline(transaction=True)
            for entry_id, vector, expires_at in items[start : start + BATCH]:
                v = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
                self._ensure(v.size)
                key = self._key(entry_id)
                fields: dict[str, str | float | bytes] = {
                    "ns": digest,
                    "exp": _NEVER if expires_at is None else expires_at,
                    "dim": v.size,
                    "v": v.tobytes(),
                }
                pipe.delete(key)  # a replaced entry keeps no old TTL
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                if expires_at is not None:
                    pipe.pexpireat(key, max(1, math.ceil(expires_at * 1000)))
            self._run(pipe.execute)

    def remove(self, namespace: str, entry_id: str) -> None:
        self._run(self._client.delete, self._key(entry_id))

    def search(
        self, namespace: str, vector: Vector, *, k: int, min_score: float, now: float
    ) -> list[tuple[str, float]]:
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        if k <= 0:
            return []
        self._ensure(q.size)
        knn = f"KNN {k} @v $q" + (
            f" EF_RUNTIME {max(k, self.ef_runtime)}" if self.algorithm == "hnsw" else ""
        )
        query = f"(@ns:{{{_digest(namespace)}}} @exp:[({now!r} +inf])=>[{knn} AS d]"
        reply = self._run(
            self._client.execute_command,
            "FT.SEARCH", self.name(q.size), query,
            "PARAMS", 2, "q", q.tobytes(),
            "SORTBY", "d", "ASC", "RETURN", 1, "d", "LIMIT", 0, k, "DIALECT", 2,
            "TIMEOUT", self.timeout_ms,
        )  # fmt: skip
        found = []
        for key, distance in _hits(reply):
            score = 1.0 - distance  # COSINE distance = 1 - cosine
            if score >= min_score:
                found.append((key.removeprefix(self.prefix + ":"), score))
        return found

    def clear(self) -> None:
        """Every indexed entry deleted (the search indexes stay, empty)."""
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=f"{self.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self._run(self._client.unlink, *batch)
                batch.clear()
        if batch:
            self._run(self._client.unlink, *batch)

    def ping(self) -> None:
        self._run(self._client.ping)

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    # ------------------------------------------------------------------ internals
    def _ensure(self, dim: int) -> None:
        if dim in self._ready:
            return
        with self._lock:
            if dim in self._ready:
                return
            params: list[Any] = ["TYPE", "FLOAT32", "DIM", dim, "DISTANCE_METRIC", "COSINE"]
            if self.algorithm == "hnsw":
                params += ["M", self.m, "EF_CONSTRUCTION", self.ef_construction]
            try:
                self._client.execute_command(  # type: ignore[no-untyped-call]
                    "FT.CREATE", self.name(dim), "ON", "HASH",
                    "PREFIX", 1, f"{self.prefix}:", "FILTER", f"@dim=={dim}",
                    "SCHEMA", "ns", "TAG", "exp", "NUMERIC", "dim", "NUMERIC",
                    "v", "VECTOR", self.algorithm.upper(), len(params), *params,
                )  # fmt: skip
            except redis.ResponseError as exc:
                if "already exists" not in str(exc).lower():
                    raise StoreError(f"redis index: cannot create {self.name(dim)}: {exc}") from exc
            except redis.RedisError as exc:
                raise StoreError(f"redis index: {type(exc).__name__}: {exc}") from exc
            self._ready.add(dim)

    @staticmethod
    def _run(call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except redis.RedisError as exc:
            raise StoreError(f"redis index: {type(exc).__name__}: {exc}") from exc


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _hits(reply: Any) -> list[tuple[str, float]]:
    """(key, distance) of an FT.SEARCH reply, RESP2 (a flat list) or RESP3 (a map)."""
    out: list[tuple[str, float]] = []
    if isinstance(reply, dict):
        warnings = [_text(w) for w in reply.get(b"warning") or []]
        if any("timeout" in w.lower() for w in warnings):
            raise StoreError(f"redis index: FT.SEARCH timed out: {warnings}")
        for row in reply.get(b"results") or []:
            fields = {_text(k): v for k, v in (row.get(b"extra_attributes") or {}).items()}
            out.append((_text(row.get(b"id")), float(_text(fields["d"]))))
        return out
    if not isinstance(reply, list) or not reply:
        raise StoreError(f"redis index: unexpected FT.SEARCH reply {reply!r:.200}")
    rows = reply[1:]
    for i in range(0, len(rows), 2):
        pairs = rows[i + 1]
        fields = {_text(pairs[j]): pairs[j + 1] for j in range(0, len(pairs), 2)}
        out.append((_text(rows[i]), float(_text(fields["d"]))))
    return out
