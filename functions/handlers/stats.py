"""GET /stats: hits by tier, misses, bypasses, hit rate, latency and savings, over time;
GET /metrics: the same counters for Prometheus; GET /dashboard: the page that draws them."""

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from promptcache import runtime
from promptcache.http import api, resolver
from promptcache.http.observability import invocation, tracer

app = resolver.make_app(runtime.settings())


@app.get("/stats")
@tracer.capture_method
def stats() -> Response[str]:
    return api.stats(app.current_event, runtime.service())


@app.get("/metrics")
@tracer.capture_method
def metrics() -> Response[str]:
    return api.metrics(app.current_event, runtime.service())


@app.get("/dashboard")
def dashboard() -> Response[str]:
    return api.dashboard("/dashboard")


@app.get("/dashboard.js")
def dashboard_script() -> Response[str]:
    return api.dashboard("/dashboard.js")


@app.get("/dashboard.css")
def dashboard_style() -> Response[str]:
    return api.dashboard("/dashboard.css")


@invocation(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
