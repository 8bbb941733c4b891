"""Stats on Cloudflare Workers KV (REST) that lose no update under concurrency.

KV has no atomic increment and is eventually consistent, so a read-modify-write counter shared
by several processes loses updates. Here no key ever has two writers and no write depends on a
read:

- Each writer (a process or Lambda container, with a unique ``writer_id``) keeps its running
  totals in memory and PUTs the *whole* totals object, with a version number, to its own key
  ``stats:w:<writer_id>``. Last-writer-wins is harmless because only that writer writes the key,
  and every PUT is an idempotent snapshot, so retrying a PUT can never count twice, and a failed
  PUT loses nothing: the next one carries the same increments.
- ``read()`` lists the keys under ``stats:w:`` (KV list API, paged by cursor) and sums them. The
  totals ride in each key's metadata when they fit in KV's 1,024-byte metadata limit, so a read
  is one list call per 1,000 writers; larger totals are fetched with one GET per writer. A stale
  view (KV propagates in up to ~60 s) can only show an older, smaller total of a writer: reads
  may lag, they never over-count, and they converge to the exact sum.
- ``reset()`` writes a baseline ``stats:reset`` (each writer's version and totals at that moment);
  ``read()`` counts only what each writer added past its baseline. Writers never need to hear of
  a reset.

When totals are written: ``add()`` PUTs synchronously when ``flush_every`` seconds have passed
since the last PUT, otherwise a background timer writes them once that interval is up (the
delay is bounded); ``read()``, ``reset()`` and ``close()`` write first. Writing on *every* add
would cost every request a KV round trip and break Cloudflare's limits (one write per second per
key; the REST API's 1,200 requests per 5 minutes per user). The price: a process killed (or a
Lambda container frozen, then reaped) less than ``flush_every`` after its last PUT loses the
increments since then. ``flush_every=0`` writes on every add for those who prefer that price.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from .._errors import ConfigError, StatsError
from . import _cloudflare as cf
from ._http import CircuitBreaker, CircuitOpenError, ResilientHTTP, RetryPolicy

log = logging.getLogger("promptcache.stats")

CODE_KEY_NOT_FOUND = 10009
METADATA_LIMIT = 1024  # bytes of serialized JSON metadata per key (KV's limit)
LIST_LIMIT = 1000  # keys per list page (KV's maximum)
DEFAULT_FLUSH_EVERY = 5.0
_WRITER_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True, slots=True)
class WriterTotals:
    """What one writer has written: its version (number of adds) and its totals."""

    version: int
    totals: Mapping[str, float]


class KVStats:
    """Stats protocol on Workers KV: per-writer snapshot keys, summed on read."""

    DEFAULT_POLICY = RetryPolicy(attempts=3, backoff=0.05, max_backoff=1.0)

    def __init__(
        self,
        client: httpx.Client,
        account_id: str,
        namespace_id: str,
        token: str,
        base_url: str = cf.DEFAULT_BASE_URL,
        *,
        writer_id: str | None = None,
        flush_every: float = DEFAULT_FLUSH_EVERY,
        prefix: str = "stats:",
        background: bool = True,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if flush_every < 0 or not math.isfinite(flush_every):
            raise ConfigError(f"flush_every must be a number of seconds >= 0, got {flush_every!r}")
        if writer_id is not None and not _WRITER_ID.match(writer_id):
            raise ConfigError(f"writer_id must match {_WRITER_ID.pattern}, got {writer_id!r}")
        ns = cf.check_id(namespace_id, "CLOUDFLARE_KV_NAMESPACE_ID")
        self._base = f"{cf.account_url(base_url, account_id)}/storage/kv/namespaces/{ns}"
        self._headers = cf.auth_headers(token)
        self._http = ResilientHTTP(
            client,
            policy=policy or self.DEFAULT_POLICY,
            breaker=breaker
            or CircuitBreaker(failure_threshold=5, reset_timeout=30.0, clock=clock, name="kv"),
            sleep=sleep,
            clock=clock,
        )
        self.writer_id = writer_id or uuid.uuid4().hex
        self._resume = writer_id is not None  # a chosen id may have totals from an earlier run
        self.flush_every = flush_every
        self.writer_prefix = f"{prefix}w:"
        self.reset_key = f"{prefix}reset"
        self._background = background
        self._clock = clock
        self._wall = wall

        self._lock = threading.Lock()  # guards the fields below
        self._totals: dict[str, float] = defaultdict(float)
        self._version = 0
        self._written = 0
        self._last_attempt = -math.inf
        self._timer: threading.Timer | None = None
        self._closed = False
        self._baseline: tuple[float, dict[str, WriterTotals]] | None = None
        self._flush_lock = threading.Lock()  # one PUT of this writer's key at a time, in order

    @property
    def key(self) -> str:
        return self.writer_prefix + self.writer_id

    @property
    def pending(self) -> bool:
        """True while some increments are not yet written to KV."""
        with self._lock:
            return self._version != self._written

    # ------------------------------------------------------------------ Stats protocol
    def add(self, counters: Mapping[str, float]) -> None:
        """Apply at once in memory; write to KV now if due, else within ``flush_every``.
        Never raises for KV trouble (the increments stay pending and are retried)."""
        items = [(str(k), float(v)) for k, v in counters.items()]
        bad = [k for k, v in items if not math.isfinite(v)]
        if bad:
            raise StatsError(f"counter values must be finite numbers: {bad}")
        if not items:
            return
        with self._lock:
            for name, value in items:
                self._totals[name] += value
            self._version += 1
            due = self._clock() - self._last_attempt >= self.flush_every
        if due:
            self._flush_quietly()
        else:
            self._schedule()

    def read(self) -> dict[str, float]:
        """The sum over every writer of what it added since the last reset. Raises StatsError."""
        self.flush()
        writers = self._writers()
        baseline = self._current_baseline()
        out: dict[str, float] = defaultdict(float)
        for writer, seen in writers.items():
            base = baseline.get(writer)
            if base is not None and seen.version <= base.version:
                continue
            for name, value in seen.totals.items():
                out[name] += value - (base.totals.get(name, 0.0) if base else 0.0)
        return dict(out)

    def reset(self) -> None:
        """Everything counted so far stops counting (a baseline, see the module doc)."""
        self.flush()
        writers = self._writers()
        at = self._wall()
        doc = {
            "at": at,
            "writers": {
                w: {"version": t.version, "totals": dict(t.totals)} for w, t in writers.items()
            },
        }
        self._put(self.reset_key, json.dumps(doc, separators=(",", ":")), None)
        with self._lock:
            self._baseline = (at, writers)

    def drop(self, names: Collection[str]) -> None:
        """Forget ``names`` in this writer's totals (other writers drop their own: no key has two
        writers); written like an add."""
        with self._lock:
            gone = [n for n in names if n in self._totals]
            for name in gone:
                del self._totals[name]
            if not gone:
                return
            self._version += 1
            due = self._clock() - self._last_attempt >= self.flush_every
        if due:
            self._flush_quietly()
        else:
            self._schedule()

    # ------------------------------------------------------------------ writing
    def flush(self) -> None:
        """Write this writer's totals now if any are pending. Raises StatsError on failure."""
        with self._flush_lock:
            with self._lock:
                if self._version == self._written:
                    return
                self._last_attempt = self._clock()
            if self._resume:
                self._adopt_previous()
            with self._lock:
                version = self._version
                totals = dict(self._totals)
            self._put(self.key, *_writer_doc(self.writer_id, version, totals, self._wall()))
            with self._lock:
                self._written = max(self._written, version)

    def close(self) -> None:
        """Stop the timer, write what is pending, close the HTTP client. Raises StatsError if the
        last write fails (the client is closed all the same)."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        try:
            self.flush()
        finally:
            self._http.client.close()

    def __enter__(self) -> KVStats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except StatsError as exc:
            log.warning("stats: writing totals to KV failed, will retry: %s", exc)
            self._schedule()

    def _schedule(self) -> None:
        if not self._background:
            return
        with self._lock:
            if self._closed or (self._timer is not None and self._timer.is_alive()):
                return
            delay = max(0.0, self._last_attempt + self.flush_every - self._clock())
            timer = threading.Timer(delay, self._on_timer)
            timer.daemon = True
            self._timer = timer
        timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self._flush_quietly()
        except Exception:  # a timer thread must never die noisily
            log.exception("stats: background flush failed")

    def _adopt_previous(self) -> None:
        """First write under a chosen writer_id: continue its earlier totals, never restart them."""
        raw = self._get(self.key)
        if raw is not None:
            previous = _parse_writer_doc(raw)
            with self._lock:
                for name, value in previous.totals.items():
                    self._totals[name] += value
                self._version += previous.version
        self._resume = False

    # ------------------------------------------------------------------ reading
    def _writers(self) -> dict[str, WriterTotals]:
        writers: dict[str, WriterTotals] = {}
        for name, metadata in self._list(self.writer_prefix):
            writer = name[len(self.writer_prefix) :]
            seen = _from_metadata(metadata)
            if seen is None:
                raw = self._get(name)
                if raw is None:  # listed but not readable yet (or gone): counts as not there
                    continue
                seen = _parse_writer_doc(raw)
            writers[writer] = seen
        with self._lock:  # this writer knows its own totals better than any replica does
            remote = writers.get(self.writer_id)
            if self._version and (remote is None or self._version >= remote.version):
                writers[self.writer_id] = WriterTotals(self._version, dict(self._totals))
        return writers

    def _current_baseline(self) -> dict[str, WriterTotals]:
        raw = self._get(self.reset_key)
        remote: tuple[float, dict[str, WriterTotals]] | None = None
        if raw is not None:
            try:
                doc = json.loads(raw)
                remote = (
                    float(doc["at"]),
                    {
                        str(w): WriterTotals(int(t["version"]), _totals(t["totals"]))
                        for w, t in doc["writers"].items()
                    },
                )
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise StatsError(f"KV holds an unreadable {self.reset_key!r}: {exc}") from exc
        with self._lock:
            local = self._baseline
        candidates = [b for b in (remote, local) if b is not None]
        if not candidates:
            return {}
        return max(candidates, key=lambda b: b[0])[1]

    # ------------------------------------------------------------------ KV REST
    def _call(
        self, method: str, url: str, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        try:
            return self._http.request(
                method, url, headers={**self._headers, **(headers or {})}, **kwargs
            )
        except CircuitOpenError as exc:
            raise StatsError(f"KV unavailable: {exc}") from exc
        except httpx.HTTPError as exc:
            raise StatsError(f"KV unreachable: {exc!r}") from exc

    def _value_url(self, key: str) -> str:
        return f"{self._base}/values/{quote(key, safe='')}"

    def _get(self, key: str) -> bytes | None:
        response = self._call("GET", self._value_url(key))
        if response.status_code == 404 and (
            CODE_KEY_NOT_FOUND in cf.error_codes(response) or not cf.errors_of(response)
        ):
            return None
        if response.status_code >= 400:
            raise StatsError(f"KV GET {key!r} failed: {cf.describe(response)}")
        return response.content

    def _put(self, key: str, value: str, metadata: str | None) -> None:
        files: dict[str, tuple[None, str]] = {"value": (None, value)}
        if metadata is not None:
            files["metadata"] = (None, metadata)
        # encoded once up front: one body to send (and resend on a retry), not a part stream
        form = httpx.Request("PUT", self._value_url(key), files=files)
        body = form.read()
        content_type = {"Content-Type": form.headers["Content-Type"]}
        response = self._call("PUT", self._value_url(key), content_type, content=body)
        if response.status_code >= 400:
            raise StatsError(f"KV PUT {key!r} failed: {cf.describe(response)}")
        try:
            cf.result_of(response)
        except ValueError as exc:
            raise StatsError(f"KV PUT {key!r}: unexpected answer {cf.describe(response)}") from exc

    def _list(self, prefix: str) -> Iterator[tuple[str, Any]]:
        cursor = ""
        while True:
            params = {"prefix": prefix, "limit": str(LIST_LIMIT)}
            if cursor:
                params["cursor"] = cursor
            response = self._call("GET", f"{self._base}/keys", params=params)
            if response.status_code >= 400:
                raise StatsError(f"KV list {prefix!r} failed: {cf.describe(response)}")
            try:
                result = cf.result_of(response)
                body = cf.envelope(response) or {}
                page = [(str(item["name"]), item.get("metadata")) for item in result]
                cursor = str((body.get("result_info") or {}).get("cursor") or "")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise StatsError(f"KV list: unexpected answer: {exc}") from exc
            yield from page
            if not cursor:
                return


def _totals(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise TypeError("totals is not an object")
    return {str(k): float(v) for k, v in raw.items()}


def _writer_doc(writer: str, version: int, totals: dict[str, float], at: float) -> tuple[str, str]:
    """The key's value (always complete) and its metadata (totals too when they fit)."""
    value = json.dumps(
        {"writer": writer, "version": version, "updated_at": at, "totals": totals},
        separators=(",", ":"),
    )
    metadata = json.dumps({"v": version, "t": totals}, separators=(",", ":"))
    if len(metadata.encode("utf-8")) > METADATA_LIMIT:
        metadata = json.dumps({"v": version})
    return value, metadata


def _parse_writer_doc(raw: bytes) -> WriterTotals:
    try:
        doc = json.loads(raw)
        return WriterTotals(int(doc["version"]), _totals(doc["totals"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise StatsError(f"KV holds an unreadable stats value: {exc}") from exc


def _from_metadata(metadata: Any) -> WriterTotals | None:
    if isinstance(metadata, dict) and "v" in metadata and "t" in metadata:
        try:
            return WriterTotals(int(metadata["v"]), _totals(metadata["t"]))
        except (ValueError, TypeError):
            return None
    return None
