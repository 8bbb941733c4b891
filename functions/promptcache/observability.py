"""logger, tracer and metrics: defined once, shared by the handlers and the core."""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="promptcache")
tracer = Tracer(service="promptcache")
metrics = Metrics(namespace="promptcache", service="promptcache")
