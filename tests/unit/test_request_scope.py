"""Concurrent resolves of one resolver see their own request: event, path arguments, context,
log keys and metrics (``resolver.RequestScopedResolver``, ``observability.invocation``).

Powertools promises none of this (one event per process at a time is Lambda's model); these tests
pin what promptcache relies on, so that a Powertools upgrade that moves request state elsewhere
fails here, not in front of users."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from promptcache.http import observability, resolver, wire
from promptcache.settings import Settings
from promptcache_tools.server import LocalContext, from_result, to_event


@pytest.fixture
def app() -> resolver.RequestScopedResolver:
    app = resolver.make_app(Settings.from_env({}))
    assert isinstance(app, resolver.RequestScopedResolver)

    @app.post("/echo/<name>")
    def echo(name: str) -> Response[str]:
        body = app.current_event.json_body
        time.sleep(0.002)  # let other threads resolve meanwhile
        observability.count(f"echo_{body['n'] % 3}")
        observability.logger.info("echo")
        return wire.json_response(
            200,
            {
                "name": name,
                "n": body["n"],
                "again": app.current_event.json_body["n"],
                "path": app.current_event.raw_path,
                "route_args": app.context.get("_route_args"),
                "request_id": app.lambda_context.aws_request_id,
            },
        )

    return app


def test_concurrent_resolves_each_see_their_own_event_and_path_arguments(
    app: resolver.RequestScopedResolver,
) -> None:
    @observability.invocation(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return app.resolve(event, context)

    def one(n: int) -> tuple[int, dict[str, Any], str]:
        event = to_event("POST", f"/echo/name-{n}", {"Content-Type": "application/json"},
                         json.dumps({"n": n}).encode())  # fmt: skip
        context = LocalContext("chat")
        status, _, payload = from_result(handler(event, context))
        return status, json.loads(payload), context.aws_request_id

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(400)))

    for n, (status, body, request_id) in enumerate(results):
        assert status == 200
        assert body == {
            "name": f"name-{n}",
            "n": n,
            "again": n,
            "path": f"/echo/name-{n}",
            "route_args": {"name": f"name-{n}"},
            "request_id": request_id,
        }
    # Nothing of a finished request lingers on the resolver.
    assert app.context == {}


def test_each_invocation_logs_its_own_request_id_and_flushes_its_own_metrics(
    app: resolver.RequestScopedResolver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    stream = io.StringIO()
    log_handler = logging.StreamHandler(stream)
    log_handler.setFormatter(observability.logger.registered_formatter)
    observability.logger.addHandler(log_handler)
    old_level = observability.logger.log_level
    observability.logger.setLevel("INFO")

    @observability.invocation(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return app.resolve(event, context)

    ids: dict[str, int] = {}
    lock = threading.Lock()

    def one(n: int) -> None:
        event = to_event("POST", f"/echo/x{n}", {"Content-Type": "application/json"},
                         json.dumps({"n": n}).encode())  # fmt: skip
        context = LocalContext("chat")
        with lock:
            ids[context.aws_request_id] = n
        handler(event, context)

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, range(60)))
    finally:
        observability.logger.removeHandler(log_handler)
        observability.logger.setLevel(old_level)

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line]
    assert len(lines) == 60
    assert sorted(ids[line["function_request_id"]] for line in lines) == list(range(60))
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(emf) == 60  # one record per invocation, each holding its own one metric
    for record in emf:
        names = [m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
        assert len(names) == 1 and names[0].startswith("echo_")
        assert record[names[0]] in (1.0, [1.0])
