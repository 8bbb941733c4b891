"""A stand-in for Upstash Vector's REST API, translated onto a real Redis query engine.

Upstash Vector has no emulator. This server speaks its REST protocol and stores each vector as
a JSON document in a real Redis 8 with RediSearch + RedisJSON (``RedisServer(modules=True)``),
so a real vector index (FLAT, COSINE: exact) answers every query. What it covers:

- Auth: ``Authorization: Bearer TOKEN``; a missing or wrong token -> 401.
- Envelope: 200 ``{"result": ...}``; errors ``{"error": "...", "status": N}`` with N the HTTP
  status (400 bad body / dimension / filter, 401, 404 unknown path, 405 method).
- Namespaces: ``/<command>/<namespace>`` (URL-quoted), the default namespace ``""`` without.
- ``POST /upsert``: one ``{id, vector, metadata?, data?}`` or an array -> ``"Success"``; a
  vector of the wrong dimension -> 400.
- ``POST /query``: ``vector``, ``topK`` (default 10), ``includeVectors``, ``includeMetadata``,
  ``includeData``, ``filter`` -> ``[{id, score, vector?, metadata?, data?}]`` best first, the
  COSINE score being ``(1 + cos) / 2`` as Upstash reports it.
- ``filter``: comparisons ``=  !=  <  <=  >  >=`` of a top-level metadata field with a number
  or a quoted string, combined with ``AND`` / ``OR`` and parentheses, run as the query engine's
  pre-filter (numbers as NUMERIC fields, strings as TAG fields, added to the index the first
  time a field is seen). Not covered: GLOB, IN, CONTAINS, HAS FIELD, nested fields, arrays
  (-> 400 naming the operator). A field no vector has matches nothing.
- ``POST /delete``: ``{"ids": [...]}`` or an array of ids, ``{"prefix"}``, or ``{"filter"}``
  (the ``filter`` subset above, on the namespace's vectors; empty -> 400) -> ``{"deleted": n}``.
- ``POST /fetch``: ``{"ids", "includeVectors", "includeMetadata", "includeData"}`` -> one
  object or null per id.
- ``POST|DELETE /reset`` (a namespace), ``/reset?all`` (every namespace) -> ``"Success"``.
- ``GET|POST /info`` -> ``vectorCount``, ``pendingVectorCount`` (0), ``indexSize``,
  ``dimension``, ``similarityFunction`` ("COSINE"), ``namespaces`` with their counts;
  ``/list-namespaces``; ``/delete-namespace/<ns>``.

Not covered: sparse and hybrid indexes, ``/upsert-data`` and ``/query-data`` (hosted
embedding models), ``/range``, ``/update``, resumable queries, read-only tokens.
``requests`` counts requests per command for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import redis

from tests.support.http_server import LoopbackServer

_INDEX = "uv:idx"
_PREFIX = "uv:doc:"
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(?P<str>'[^']*'|\"[^\"]*\")"
    r"|(?P<op><=|>=|!=|=|<|>)|(?P<paren>[()])|(?P<word>[A-Za-z_][A-Za-z0-9_.\[\]$]*))"
)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _digest(namespace: str) -> str:
    return hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:32]


def _tag(value: str) -> str:
    return "".join(c if c.isalnum() else "\\" + c for c in value)


def _num(value: float) -> str:
    return repr(float(value))


class _Filter:
    """Upstash's SQL-like filter (the subset above) -> a RediSearch DIALECT 2 query."""

    def __init__(self, text: str, fields: dict[str, str]) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise ApiError(400, f"Invalid filter: unexpected character at {pos}: {text!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.fields = fields
        self.i = 0

    def parse(self) -> str:
        if not self.tokens:
            return ""
        out = self._or()
        if self.i != len(self.tokens):
            raise ApiError(400, f"Invalid filter: unexpected {self.tokens[self.i][1]!r}")
        return out

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        tok = self._peek()
        if tok is None:
            raise ApiError(400, "Invalid filter: unexpected end")
        self.i += 1
        return tok

    def _or(self) -> str:
        parts = [self._and()]
        while (tok := self._peek()) is not None and tok[0] == "word" and tok[1].upper() == "OR":
            self.i += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"

    def _and(self) -> str:
        parts = [self._atom()]
        while (tok := self._peek()) is not None and tok[0] == "word" and tok[1].upper() == "AND":
            self.i += 1
            parts.append(self._atom())
        return parts[0] if len(parts) == 1 else "(" + " ".join(parts) + ")"

    def _atom(self) -> str:
        kind, text = self._take()
        if kind == "paren" and text == "(":
            inner = self._or()
            if self._take() != ("paren", ")"):
                raise ApiError(400, "Invalid filter: missing ')'")
            return inner
        if kind != "word":
            raise ApiError(400, f"Invalid filter: expected a field, got {text!r}")
        if not _FIELD.match(text):
            raise ApiError(400, f"filter on {text!r}: nested fields are not covered here")
        op_kind, op = self._take()
        if op_kind != "op":
            raise ApiError(400, f"filter operator {op!r} is not covered by the stand-in")
        value_kind, value = self._take()
        if value_kind not in ("num", "str"):
            raise ApiError(400, f"Invalid filter: expected a value after {op}, got {value!r}")
        field_type = self.fields.get(text)
        wanted = "NUMERIC" if value_kind == "num" else "TAG"
        if field_type != wanted:
            return "@ns:{__nothing__}"  # no vector has this field with this type
        name = f"@m_{text}"
        if value_kind == "str":
            if op not in ("=", "!="):
                raise ApiError(400, f"filter {op} on a string is not covered by the stand-in")
            term = f"{name}:{{{_tag(value[1:-1])}}}"
            return term if op == "=" else f"-{term}"
        v = _num(float(value))
        ranges = {
            "=": f"[{v} {v}]",
            "!=": f"[{v} {v}]",
            "<": f"[-inf ({v}]",
            "<=": f"[-inf {v}]",
            ">": f"[({v} +inf]",
            ">=": f"[{v} +inf]",
        }
        term = f"{name}:{ranges[op]}"
        return f"-{term}" if op == "!=" else term


class UpstashVectorStandIn:
    """``with UpstashVectorStandIn(redis_port, dim=384) as vec: vec.url, vec.token``. The Redis
    must have the query engine and JSON modules loaded."""

    def __init__(self, redis_port: int, *, dim: int, token: str = "vector-token") -> None:
        self.dim = dim
        self.token = token
        self._redis = redis.Redis(host="127.0.0.1", port=redis_port, protocol=2)
        self._lock = threading.Lock()
        self._fields: dict[str, str] = {}
        self.requests: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> UpstashVectorStandIn:
        self.reset_index()
        standin = self

        class Handler(_Handler):
            pass

        Handler.standin = standin
        self._server = LoopbackServer.started(Handler)
        return self

    def reset_index(self) -> None:
        """Drop every vector and the search index, and create it again (empty)."""
        with self._lock:
            with contextlib.suppress(redis.ResponseError):
                self._redis.execute_command("FT.DROPINDEX", _INDEX, "DD")
            self._fields = {}
            self._redis.execute_command(
                "FT.CREATE", _INDEX, "ON", "JSON", "PREFIX", 1, _PREFIX,
                "SCHEMA", "$.ns", "AS", "ns", "TAG",
                "$.v", "AS", "v", "VECTOR", "FLAT", 6,
                "TYPE", "FLOAT32", "DIM", self.dim, "DISTANCE_METRIC", "COSINE",
            )  # fmt: skip
            self.requests.clear()

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._redis.close()

    def __enter__(self) -> UpstashVectorStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ commands
    def _key(self, namespace: str, vector_id: str) -> str:
        return f"{_PREFIX}{_digest(namespace)}:{vector_id}"

    def _index_fields(self, metadata: dict[str, Any]) -> None:
        """Add a metadata field to the search index the first time it is seen."""
        for name, value in metadata.items():
            if not _FIELD.match(name) or name in self._fields or isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                kind = "NUMERIC"
            elif isinstance(value, str):
                kind = "TAG"
            else:
                continue
            with self._lock:
                if name in self._fields:
                    continue
                self._redis.execute_command(
                    "FT.ALTER", _INDEX, "SCHEMA", "ADD", f"$.metadata.{name}", "AS", f"m_{name}",
                    kind,
                )  # fmt: skip
                self._fields[name] = kind

    def upsert(self, namespace: str, body: Any) -> str:
        items = body if isinstance(body, list) else [body]
        docs = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
                raise ApiError(400, "Invalid upsert: each vector needs an id")
            vector = item.get("vector")
            if not isinstance(vector, list) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in vector
            ):
                raise ApiError(400, "Invalid upsert: vector must be an array of numbers")
            if len(vector) != self.dim:
                raise ApiError(
                    400, f"Invalid vector dimension: {len(vector)}, expected: {self.dim}"
                )
            metadata = item.get("metadata")
            if metadata is not None and not isinstance(metadata, dict):
                raise ApiError(400, "Invalid upsert: metadata must be an object")
            doc = {"id": str(item["id"]), "ns": _digest(namespace), "v": vector}
            doc["namespace"] = namespace
            if metadata is not None:
                doc["metadata"] = metadata
                self._index_fields(metadata)
            if item.get("data") is not None:
                doc["data"] = str(item["data"])
            docs.append(doc)
        pipe = self._redis.pipeline(transaction=False)
        for doc in docs:
            pipe.execute_command("JSON.SET", self._key(namespace, doc["id"]), "$", json.dumps(doc))
        pipe.execute()
        return "Success"

    def query(self, namespace: str, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid query: expected a JSON object")
        vector = body.get("vector")
        if not isinstance(vector, list) or len(vector) != self.dim:
            raise ApiError(400, f"Invalid query vector: expected {self.dim} numbers")
        top_k = body.get("topK", 10)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
            raise ApiError(400, "Invalid query: topK must be a non-negative integer")
        flt = body.get("filter") or ""
        if not isinstance(flt, str):
            raise ApiError(400, "Invalid query: filter must be a string")
        if top_k == 0:
            return []
        translated = _Filter(flt, dict(self._fields)).parse()
        pre = f"(@ns:{{{_digest(namespace)}}} {translated})".replace(" )", ")")
        q = np.asarray(vector, dtype=np.float32)
        reply = self._redis.execute_command(
            "FT.SEARCH", _INDEX, f"{pre}=>[KNN {top_k} @v $q AS d]",
            "PARAMS", 2, "q", q.tobytes(), "SORTBY", "d", "ASC",
            "RETURN", 2, "d", "$", "LIMIT", 0, top_k, "DIALECT", 2,
        )  # fmt: skip
        out = []
        rows = reply[1:]
        for i in range(0, len(rows), 2):
            fields = dict(zip(rows[i + 1][::2], rows[i + 1][1::2], strict=True))
            doc = json.loads(fields[b"$"])
            cosine = 1.0 - float(fields[b"d"])
            out.append(self._shape(doc, body, score=(1.0 + cosine) / 2.0))
        return out

    @staticmethod
    def _shape(doc: dict[str, Any], body: dict[str, Any], score: float | None = None) -> Any:
        item: dict[str, Any] = {"id": doc["id"]}
        if score is not None:
            item["score"] = score
        if body.get("includeVectors"):
            item["vector"] = doc["v"]
        if body.get("includeMetadata") and "metadata" in doc:
            item["metadata"] = doc["metadata"]
        if body.get("includeData") and "data" in doc:
            item["data"] = doc["data"]
        return item

    def _ids(self, body: Any) -> list[str]:
        ids = body if isinstance(body, list) else (body or {}).get("ids")
        if isinstance(ids, str | int):
            ids = [ids]
        if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
            raise ApiError(400, "Invalid request: ids must be an array of strings")
        return [str(i) for i in ids]

    def delete(self, namespace: str, body: Any) -> dict[str, int]:
        if isinstance(body, dict) and "prefix" in body and "ids" not in body:
            pattern = self._key(namespace, str(body["prefix"])) + "*"
            keys = list(self._redis.scan_iter(match=pattern, count=1000))
        elif isinstance(body, dict) and "filter" in body and "ids" not in body:
            return {"deleted": self._delete_matching(namespace, body["filter"])}
        else:
            keys = [self._key(namespace, i) for i in self._ids(body)]
        return {"deleted": int(self._redis.delete(*keys)) if keys else 0}

    def _delete_matching(self, namespace: str, flt: Any) -> int:
        """Delete the namespace's vectors matching ``flt``, a page of the query engine's
        matches at a time (a deleted document leaves the index, so each page starts at 0)."""
        if not isinstance(flt, str) or not flt.strip():
            raise ApiError(400, "Invalid delete: filter must be a non-empty string")
        query = f"(@ns:{{{_digest(namespace)}}} {_Filter(flt, dict(self._fields)).parse()})"
        deleted = 0
        while True:
            reply = self._redis.execute_command(
                "FT.SEARCH", _INDEX, query, "NOCONTENT", "LIMIT", 0, 1000, "DIALECT", 2
            )  # fmt: skip
            gone = int(self._redis.delete(*reply[1:])) if reply[1:] else 0
            if not gone:
                return deleted
            deleted += gone

    def fetch(self, namespace: str, body: Any) -> list[Any]:
        ids = self._ids(body)
        if not ids:
            return []
        raw = self._redis.execute_command("JSON.MGET", *[self._key(namespace, i) for i in ids], "$")
        opts = body if isinstance(body, dict) else {}
        return [None if r is None else self._shape(json.loads(r)[0], opts) for r in raw]

    def _namespaces(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for key in self._redis.scan_iter(match=f"{_PREFIX}*", count=1000):
            ns = self._redis.execute_command("JSON.GET", key, "$.namespace")
            if ns is not None:
                counts[json.loads(ns)[0]] += 1
        return counts

    def reset(self, namespace: str | None) -> str:
        pattern = f"{_PREFIX}*" if namespace is None else f"{_PREFIX}{_digest(namespace)}:*"
        keys = list(self._redis.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 1000):
            self._redis.delete(*keys[start : start + 1000])
        return "Success"

    def info(self) -> dict[str, Any]:
        counts = self._namespaces()
        return {
            "vectorCount": sum(counts.values()),
            "pendingVectorCount": 0,
            "indexSize": sum(counts.values()) * self.dim * 4,
            "dimension": self.dim,
            "similarityFunction": "COSINE",
            "namespaces": {
                ns: {"vectorCount": n, "pendingVectorCount": 0} for ns, n in counts.items()
            },
        }

    def dispatch(self, method: str, path: str, query: str, body: Any) -> Any:
        parts = path.lstrip("/").split("/", 1)
        command = parts[0]
        namespace = unquote(parts[1]) if len(parts) > 1 else ""
        self.requests[command] += 1
        posts = {
            "upsert": self.upsert,
            "query": self.query,
            "delete": self.delete,
            "fetch": self.fetch,
        }
        if command in posts:
            if method not in ("POST", "GET"):
                raise ApiError(405, f"Method {method} not allowed")
            return posts[command](namespace, body)
        if command == "reset":
            if method not in ("POST", "DELETE"):
                raise ApiError(405, f"Method {method} not allowed")
            return self.reset(None if query == "all" else namespace)
        if command == "info":
            return self.info()
        if command == "list-namespaces":
            return sorted(set(self._namespaces()) | {""})
        if command == "delete-namespace":
            if namespace not in self._namespaces():
                raise ApiError(404, f"Namespace {namespace!r} does not exist")
            return self.reset(namespace)
        raise ApiError(404, f"Unknown path /{command}")


class _Handler(BaseHTTPRequestHandler):
    standin: UpstashVectorStandIn
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            if self.headers.get("Authorization") != f"Bearer {self.standin.token}":
                raise ApiError(401, "Unauthorized: Invalid auth token")
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                raise ApiError(400, "Invalid request body: not JSON") from None
            split = urlsplit(self.path)
            result = self.standin.dispatch(self.command, split.path, split.query, body)
        except ApiError as exc:
            self._answer(exc.status, {"error": exc.message, "status": exc.status})
            return
        except redis.ResponseError as exc:
            self._answer(400, {"error": str(exc), "status": 400})
            return
        self._answer(200, {"result": result})

    do_GET = do_POST = do_DELETE = do_PUT = _handle


def main(argv: list[str] | None = None) -> None:
    """Serve until stdin closes or SIGTERM: ``python -m tests.support.upstash_vector_standin
    --redis-port PORT --dim 384`` (a Redis with the query engine and JSON modules); prints
    ``URL TOKEN`` first."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--token", default="vector-token")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with UpstashVectorStandIn(args.redis_port, dim=args.dim, token=args.token) as standin:
        print(standin.url, standin.token, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
