"""A loopback stand-in for Cloudflare Workers KV's REST API, under
``/accounts/{id}/storage/kv/namespaces/{ns}``:

- ``GET values/{key}`` -> the raw bytes; a miss -> 404 with code 10009 ``get: 'key not found'``.
- ``PUT values/{key}`` -> a raw body, or multipart/form-data with ``value`` and ``metadata``
  (JSON, at most 1,024 bytes); ``?expiration_ttl=`` below 60 -> 400 (code 10033).
- ``DELETE values/{key}``.
- ``GET keys?prefix=&limit=&cursor=`` -> ``result: [{"name", "metadata"?, "expiration"?}]`` sorted
  by name, ``result_info: {"count", "cursor"}``; ``limit`` between 10 and 1000 (default 1000),
  the cursor is empty on the last page.
- Bearer auth and the envelope as everywhere in the Cloudflare API (see cloudflare_standin).

Eventual consistency, optional: with ``stale_seconds > 0`` each read (GET or list) sees every key
as it was some random time (up to ``stale_seconds``) ago, as a far replica would; writes are
applied at once. Expirations are honoured. ``counts`` tallies requests per operation.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
from dataclasses import dataclass
from typing import Any

from .cloudflare_standin import CloudflareStandIn, Reply, Request, envelope, error

METADATA_LIMIT = 1024


@dataclass(frozen=True)
class _Version:
    at: float
    value: bytes | None  # None = deleted
    metadata: Any = None
    expiration: float | None = None


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body (RFC 7578), by name."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        return {}
    delimiter = b"--" + match.group(1).encode()
    fields: dict[str, bytes] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, sep, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        name = re.search(rb'(?im)^content-disposition:.*?\bname="([^"]*)"', head)
        if sep and name:
            fields[name.group(1).decode()] = content.removesuffix(b"\r\n")
    return fields


class KVStandIn(CloudflareStandIn):
    def __init__(
        self,
        *,
        namespace_id: str = "ns0123456789",
        stale_seconds: float = 0.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.namespace_id = namespace_id
        self.stale_seconds = stale_seconds
        self._rng = random.Random(seed)
        self._history: dict[str, list[_Version]] = {}

    # ------------------------------------------------------------------ direct access for tests
    def value(self, key: str) -> bytes | None:
        """The newest value (what a read at the primary would see)."""
        with self._lock:
            return self._visible(key, time.time())

    def live_keys(self) -> list[str]:
        now = time.time()
        with self._lock:
            return sorted(k for k in self._history if self._visible(k, now) is not None)

    # ------------------------------------------------------------------ routing
    def route(self, request: Request) -> Reply:
        prefix = f"/storage/kv/namespaces/{self.namespace_id}/"
        if not request.path.startswith(prefix):
            if request.path.startswith("/storage/kv/namespaces/"):
                return Reply(404, json_body=error(10013, "namespace not found"))
            return Reply(404, json_body=error(7000, f"No route for that URI: {request.path}"))
        rest = request.path[len(prefix) :]
        if rest == "keys" and request.method == "GET":
            return self._list(request)
        if rest.startswith("values/") and len(rest) > len("values/"):
            key = rest[len("values/") :]
            if len(key.encode()) > 512:
                return Reply(414, json_body=error(10033, "key name too long (512 bytes at most)"))
            if request.method == "GET":
                return self._get(key)
            if request.method == "PUT":
                return self._put(key, request)
            if request.method == "DELETE":
                return self._delete(key)
        return Reply(405, json_body=error(10000, f"{request.method} not allowed on {request.path}"))

    # ------------------------------------------------------------------ operations
    def _read_time(self) -> float:
        lag = self._rng.uniform(0.0, self.stale_seconds) if self.stale_seconds else 0.0
        return time.time() - lag

    def _version(self, key: str, at: float) -> _Version | None:
        versions = self._history.get(key, [])
        for version in reversed(versions):
            if version.at <= at:
                if version.value is None:
                    return None
                if version.expiration is not None and version.expiration <= time.time():
                    return None
                return version
        return None

    def _visible(self, key: str, at: float) -> bytes | None:
        version = self._version(key, at)
        return None if version is None else version.value

    def _get(self, key: str) -> Reply:
        with self._lock:
            self.counts["get"] += 1
            version = self._version(key, self._read_time())
        if version is None:
            return Reply(404, json_body=error(10009, "get: 'key not found'"))
        assert version.value is not None
        return Reply(raw=version.value, content_type="application/octet-stream")

    def _put(self, key: str, request: Request) -> Reply:
        content_type = request.headers.get("content-type", "")
        metadata: Any = None
        if content_type.startswith("multipart/form-data"):
            fields = _multipart(content_type, request.body)
            if "value" not in fields:
                return Reply(400, json_body=error(10005, "multipart body without a 'value' field"))
            value = fields["value"]
            if "metadata" in fields:
                if len(fields["metadata"]) > METADATA_LIMIT:
                    return Reply(
                        413, json_body=error(10023, "metadata too large (1024 bytes at most)")
                    )
                try:
                    metadata = json.loads(fields["metadata"])
                except ValueError:
                    return Reply(400, json_body=error(10012, "metadata is not valid JSON"))
        else:
            value = request.body
        expiration = None
        if "expiration_ttl" in request.query:
            try:
                ttl = int(request.query["expiration_ttl"])
            except ValueError:
                ttl = -1
            if ttl < 60:
                return Reply(
                    400,
                    json_body=error(
                        10033,
                        f"Invalid expiration_ttl of {request.query['expiration_ttl']}. "
                        "Expiration TTL must be at least 60.",
                    ),
                )
            expiration = time.time() + ttl
        with self._lock:
            self.counts["put"] += 1
            self._history.setdefault(key, []).append(
                _Version(time.time(), value, metadata, expiration)
            )
            self._prune(key)
        return Reply(json_body=envelope({}))

    def _delete(self, key: str) -> Reply:
        with self._lock:
            self.counts["delete"] += 1
            self._history.setdefault(key, []).append(_Version(time.time(), None))
            self._prune(key)
        return Reply(json_body=envelope({}))

    def _prune(self, key: str) -> None:
        """Keep the versions a stale read may still see, plus the newest one before them."""
        versions = self._history[key]
        horizon = time.time() - self.stale_seconds - 1.0
        keep_from = 0
        for i, version in enumerate(versions):
            if version.at < horizon:
                keep_from = i
        del versions[:keep_from]

    def _list(self, request: Request) -> Reply:
        prefix = request.query.get("prefix", "")
        try:
            limit = int(request.query.get("limit", "1000"))
        except ValueError:
            limit = -1
        if not 10 <= limit <= 1000:
            return Reply(400, json_body=error(10029, "limit must be between 10 and 1000"))
        cursor = request.query.get("cursor", "")
        after = base64.urlsafe_b64decode(cursor.encode()).decode() if cursor else None
        with self._lock:
            self.counts["list"] += 1
            at = self._read_time()
            names = sorted(
                (k for k in self._history if k.startswith(prefix)), key=lambda k: k.encode()
            )
            if after is not None:
                names = [k for k in names if k.encode() > after.encode()]
            page: list[dict[str, Any]] = []
            more = False
            for name in names:
                version = self._version(name, at)
                if version is None:
                    continue
                if len(page) == limit:
                    more = True
                    break
                item: dict[str, Any] = {"name": name}
                if version.metadata is not None:
                    item["metadata"] = version.metadata
                if version.expiration is not None:
                    item["expiration"] = int(version.expiration)
                page.append(item)
        next_cursor = (
            base64.urlsafe_b64encode(page[-1]["name"].encode()).decode() if more and page else ""
        )
        body = envelope(page)
        body["result_info"] = {"count": len(page), "cursor": next_cursor}
        return Reply(json_body=body)
