"""GET /health: each dependency's status and latency; 503 when the cache cannot answer."""

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from promptcache import runtime
from promptcache.http import api, resolver
from promptcache.http.observability import invocation, tracer

app = resolver.make_app(runtime.settings())


@app.get("/health")
@tracer.capture_method
def health() -> Response[str]:
    return api.health(app.current_event, runtime.service())


@invocation(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
