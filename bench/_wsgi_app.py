"""The handlers as a WSGI app served by waitress, for bench_server only (not the product's server):
each request becomes an API Gateway event, as promptcache_tools.server builds it; the body is
buffered. Run: ``python -m bench._wsgi_app PORT THREADS``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from waitress import serve

from promptcache_tools.server import (
    LocalContext,
    _module_for,
    from_result,
    load_handlers,
    to_event,
)

modules = load_handlers()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    headers = {
        k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    path = environ.get("PATH_INFO", "/")
    target = path + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "")
    name = _module_for(path)
    event = to_event(environ["REQUEST_METHOD"], target, headers, body, environ["REMOTE_ADDR"])
    status, out, payload = from_result(modules[name].lambda_handler(event, LocalContext(name)))
    out = [(k, v) for k, v in out if k.lower() not in ("content-length", "connection")]
    start_response(f"{status} X", [*out, ("Content-Length", str(len(payload)))])
    return [payload]


if __name__ == "__main__":
    serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=int(sys.argv[2]), _quiet=True)
