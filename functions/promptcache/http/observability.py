"""logger, tracer and per-invocation metrics: defined once, shared by the handlers and the core.

Deployed, POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE (set per stage by the stack)
name them; locally they default to ``promptcache``.

Per-invocation state never lives on these shared objects. Lambda hands a container one event at a
time, but ``promptcache serve`` (and the streaming function behind the Lambda Web Adapter) runs
the same handlers on many threads at once; Powertools' ``inject_lambda_context`` and
``log_metrics`` keep the invocation's log keys and metric set on the process-wide Logger and
Metrics, so concurrent requests would log each other's request ids and flush each other's
metrics. ``invocation`` gives each call its own: log keys through Powertools' context-variable
keys (``thread_safe_append_keys``) and a fresh ``EphemeralMetrics`` per invocation, which
``count`` adds to.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities import jmespath_utils

from .._types import ChatResult

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "promptcache"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "promptcache"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)

_METRICS: ContextVar[EphemeralMetrics | None] = ContextVar("promptcache_metrics", default=None)
_cold_start = True

Handler = TypeVar("Handler", bound=Callable[..., Any])


def count(name: str, value: float = 1) -> None:
    """Add to the current invocation's metric ``name`` (a no-op outside an invocation)."""
    current = _METRICS.get()
    if current is not None:
        current.add_metric(name=name, unit=MetricUnit.Count, value=value)


#: The EMF metric of each part of an answer (milliseconds).
_DURATIONS = {
    "lookup": "LookupDuration",
    "embed": "EmbeddingDuration",
    "verify": "VerifyDuration",
    "model": "ModelDuration",
}


def record(result: ChatResult) -> None:
    """The current invocation's metrics of one answer, from its result: ``tier_{tier}`` (a
    count), ``AnswerDuration`` and each part's duration (milliseconds), ``TokensUsed`` and, for a
    hit, ``TokensSaved``. One dimension besides the service: ``tier`` (four values). Nothing that
    grows with traffic (prompt, entry id, tenant, model) is a dimension."""
    current = _METRICS.get()
    if current is None:
        return
    current.add_dimension(name="tier", value=result.tier.value)
    current.add_metric(name=f"tier_{result.tier.value}", unit=MetricUnit.Count, value=1)
    current.add_metric(name="AnswerDuration", unit=MetricUnit.Milliseconds, value=result.latency_ms)
    for part, ms in result.timings.items():
        name = _DURATIONS.get(part)
        if name is not None:
            current.add_metric(name=name, unit=MetricUnit.Milliseconds, value=ms)
    current.add_metric(name="TokensUsed", unit=MetricUnit.Count, value=result.usage.total_tokens)
    if result.cached and result.saved_tokens:
        current.add_metric(name="TokensSaved", unit=MetricUnit.Count, value=result.saved_tokens)


def invocation(correlation_id_path: str) -> Callable[[Handler], Handler]:
    """Decorate a Lambda handler: the invocation's log keys (the Lambda context, cold start, the
    correlation id found at ``correlation_id_path`` in the event) and its metrics, flushed as one
    embedded-metrics record when it returns, belong to this invocation alone."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def run(event: dict[str, Any], context: Any) -> Any:
            global _cold_start
            cold, _cold_start = _cold_start, False
            logger.thread_safe_append_keys(  # cleared when the invocation ends
                cold_start=cold,
                correlation_id=jmespath_utils.query(envelope=correlation_id_path, data=event),
                **build_lambda_context_model(context).__dict__,
            )
            mine = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            token = _METRICS.set(mine)
            try:
                return handler(event, context)
            finally:
                _METRICS.reset(token)
                logger.thread_safe_clear_keys()
                if mine.metric_set:
                    mine.flush_metrics()

        return run  # type: ignore[return-value]

    return decorate
