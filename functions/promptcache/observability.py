"""logger, tracer and metrics: defined once, shared by the handlers and the core.

Deployed, POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE (set per stage by the stack)
name them; locally they default to ``promptcache``.
"""

import os

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "promptcache"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "promptcache"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
