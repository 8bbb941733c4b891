"""The semantic index on Upstash Vector over its REST API (``PROMPTCACHE_INDEX=upstash-vector``).

The official SDK (``upstash-vector``) builds the requests and reads the answers: ``_Operations``
is its ``IndexOperations`` with the one transport method it leaves to subclasses implemented on
the injected ``httpx.Client`` (the SDK's own ``Index`` makes a client of its own with a 600 s
timeout, retries only transport errors with a sleep, and fails on a non-JSON error body; here
the backend timeout holds, and every failure is a StoreError naming the HTTP status).

Mapping:

- one Upstash namespace per cache namespace (the namespace's text, URL-quoted in the path);
- the vector id is the entry id; metadata ``{"exp": expiry}`` (epoch seconds, ``_NEVER`` for
  none) and every query filters ``exp > now``, so an expired entry is never returned;
- the index must be created with the COSINE similarity function, whose score is
  ``(1 + cos) / 2`` in [0, 1]: converted back to the cosine here (``2 * score - 1``), so the
  threshold means what it means for the other indexes.

Upstash Vector has no TTL, so expired vectors are swept: a write (``add``, ``add_many``) of a
namespace not swept for ``sweep_interval`` seconds (by this process) also deletes the namespace's
expired vectors, one delete-by-filter request (``exp <= now``). Writes are misses, already
waiting on the model, so reads never pay for it; a failed sweep is logged and counted
(``sweep_failures``), never the write's failure. The default interval, 300 s, keeps the sweeps
rare (the delete is a full scan of the namespace on the server and a billed request: at most
one per namespace per process every five minutes of writes) while an expired vector overstays
by minutes, not by its TTL; a namespace that is never written again keeps its expired vectors
until ``clear`` (or the core removing one that a search found and the store no longer has).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from upstash_vector.core.index_operations import IndexOperations
from upstash_vector.types import Vector as UpstashVector

from .._errors import StoreError
from .._types import Vector

log = logging.getLogger("promptcache")

_NEVER = 1e10
#: Vectors per upsert request (500 of 768-d: about 4 MB of JSON, one request of the reindex).
BATCH = 500
#: Namespaces whose last sweep one process remembers; past it, those swept long ago are forgotten.
_SWEPT_MAX = 10_000


class _Operations(IndexOperations):
    """The SDK's operations over an injected client."""

    def __init__(self, client: httpx.Client, url: str, token: str) -> None:
        self._client = client
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}

    def _execute_request(self, payload: Any, path: str) -> Any:
        try:
            response = self._client.post(f"{self._url}{path}", headers=self._headers, json=payload)
        except httpx.HTTPError as exc:
            raise StoreError(f"upstash vector: {type(exc).__name__}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict) or "error" in body:
            detail = body.get("error") if isinstance(body, dict) else response.text[:200]
            raise StoreError(f"upstash vector: HTTP {response.status_code}: {detail}")
        if "result" not in body:
            raise StoreError(f"upstash vector: answer without a result: {response.text[:200]}")
        return body["result"]


class UpstashVectorIndex:
    """``Index`` on Upstash Vector (a COSINE index of the embedder's dimension)."""

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        token: str,
        *,
        sweep_interval: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ops = _Operations(client, url, token)
        self.sweep_interval = sweep_interval
        self.sweep_failures = 0
        self._clock = clock
        self._swept: dict[str, float] = {}  # namespace -> when this process last swept it
        self._lock = threading.Lock()

    @staticmethod
    def _ns(namespace: str) -> str:
        return quote(namespace, safe="")

    def add(self, namespace: str, entry_id: str, vector: Vector, expires_at: float | None) -> None:
        self.add_many(namespace, [(entry_id, vector, expires_at)])

    def add_many(self, namespace: str, items: Sequence[tuple[str, Vector, float | None]]) -> None:
        """One upsert request per ``BATCH`` vectors, then the namespace's sweep when it is due."""
        for start in range(0, len(items), BATCH):
            vectors = [
                UpstashVector(
                    id=entry_id,
                    vector=[float(x) for x in vector],
                    metadata={"exp": _NEVER if expires_at is None else expires_at},
                )
                for entry_id, vector, expires_at in items[start : start + BATCH]
            ]
            self._ops.upsert(vectors, namespace=self._ns(namespace))
        if items:
            self._sweep(namespace)

    def _sweep(self, namespace: str) -> None:
        """Delete the namespace's expired vectors, unless this process did less than
        ``sweep_interval`` seconds ago (a failed sweep waits the interval too)."""
        now = self._clock()
        with self._lock:
            last = self._swept.get(namespace)
            if last is not None and now - last < self.sweep_interval:
                return
            if len(self._swept) >= _SWEPT_MAX:
                recent = now - self.sweep_interval
                self._swept = {ns: t for ns, t in self._swept.items() if t > recent}
            self._swept[namespace] = now
        try:
            self._ops.delete(filter=f"exp <= {now!r}", namespace=self._ns(namespace))
        except Exception as exc:  # the write is done: a sweep's failure is never the write's
            with self._lock:
                self.sweep_failures += 1
            log.warning("sweeping expired vectors of %s failed: %s", namespace, exc)

    def remove(self, namespace: str, entry_id: str) -> None:
        self._ops.delete(entry_id, namespace=self._ns(namespace))

    def search(
        self, namespace: str, vector: Vector, *, k: int, min_score: float, now: float
    ) -> list[tuple[str, float]]:
        if k <= 0:
            return []
        results = self._ops.query(
            vector=[float(x) for x in vector],
            top_k=k,
            filter=f"exp > {now!r}",
            namespace=self._ns(namespace),
        )
        found = []
        for r in results:
            cosine = 2.0 * float(r.score) - 1.0
            if cosine >= min_score:
                found.append((str(r.id), cosine))
        return found

    def clear(self) -> None:
        self._ops.reset(all=True)

    def ping(self) -> None:
        self._ops.info()

    def close(self) -> None:
        """Close the HTTP client (given to the constructor)."""
        self._ops._client.close()
