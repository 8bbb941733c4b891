"""POST /chat: answer a prompt from the cache or the LLM."""

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from promptcache import api, runtime
from promptcache.observability import logger, metrics, tracer

app = api.make_app(runtime.settings())
limiter = api.RateLimiter(runtime.settings().rate_limit_per_minute)


@app.post("/chat")
@tracer.capture_method
def chat() -> Response:
    response = api.chat(app.current_event, runtime.service(), runtime.settings(), limiter)
    metrics.add_metric(name=f"tier_{response.headers['X-Promptcache-Tier']}", unit=MetricUnit.Count, value=1)
    return response


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics(raise_on_empty_metrics=False)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    metrics.add_metric(name="requests", unit=MetricUnit.Count, value=1)
    return app.resolve(event, context)
