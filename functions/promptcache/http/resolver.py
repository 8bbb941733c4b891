"""The Powertools resolver every handler module registers its routes on: CORS (the one list, in
``routes``), the one error-to-HTTP map (each error in the dialect of the path's face), JSON 404/405
for unknown routes, and per-request state that concurrent requests cannot share
(``RequestScopedResolver``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from .._errors import MethodNotAllowed, NotFound, PromptCacheError
from ..routes import (
    CORS_ALLOW_HEADERS,
    CORS_EXPOSE_HEADERS,
    REQUEST_ID_HEADER,
    ROUTES,
    face_of,
    route_path,
)
from ..settings import Settings
from .wire import error_response

log = logging.getLogger("promptcache")


@dataclass
class _Invocation:
    """What a resolver knows about the one request it is resolving."""

    event: Any = None
    lambda_context: Any = None
    context: dict[str, Any] = field(default_factory=dict)
    processed_stack_frames: list[str] = field(default_factory=list)


class RequestScopedResolver(APIGatewayHttpResolver):
    """``APIGatewayHttpResolver`` whose per-request state belongs to the request.

    Powertools keeps the request being resolved in shared places: ``resolve`` assigns the event
    and the Lambda context to *class* attributes of ``BaseRouter`` (shared by every resolver and
    every thread), and keeps the matched route and its path arguments in the instance's
    ``context`` dict. That is sound where one event at a time reaches a process, which is all
    Lambda promises and all Powertools promises; ``promptcache serve`` resolves many at once on
    threads, and concurrent requests then read each other's body, path arguments and headers.

    Here those four attributes (``current_event``, ``lambda_context``, ``context``,
    ``processed_stack_frames``) are properties over one ``_Invocation`` per ``resolve`` call, held
    in a context variable (each thread has its own), as Powertools' own ``HttpResolverLocal``
    does for ASGI servers. What is relied on: that Powertools wraps the event with
    ``self._to_proxy_event`` and reads and writes these attributes through ``self`` (it does,
    except for the class assignment in ``resolve``, which the properties shadow);
    tests/unit/test_request_scope.py resolves concurrent requests to catch a change.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._idle = _Invocation()  # route registration and anything outside resolve()
        self._now: ContextVar[_Invocation | None] = ContextVar(
            f"promptcache_resolver_{id(self)}", default=None
        )
        super().__init__(**kwargs)

    @property
    def _invocation(self) -> _Invocation:
        return self._now.get() or self._idle

    @property  # type: ignore[override]
    def current_event(self) -> APIGatewayProxyEventV2:
        return self._invocation.event  # type: ignore[no-any-return]

    @current_event.setter
    def current_event(self, value: APIGatewayProxyEventV2) -> None:
        self._invocation.event = value

    @property
    def lambda_context(self) -> LambdaContext:
        return self._invocation.lambda_context  # type: ignore[no-any-return]

    @lambda_context.setter
    def lambda_context(self, value: LambdaContext) -> None:
        self._invocation.lambda_context = value

    @property
    def context(self) -> dict[str, Any]:
        return self._invocation.context

    @context.setter
    def context(self, value: dict[str, Any]) -> None:
        self._invocation.context = value

    @property
    def processed_stack_frames(self) -> list[str]:
        return self._invocation.processed_stack_frames

    @processed_stack_frames.setter
    def processed_stack_frames(self, value: list[str]) -> None:
        self._invocation.processed_stack_frames = value

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        token = self._now.set(_Invocation(lambda_context=context))
        try:
            result = super().resolve(event, context)
        finally:
            self._now.reset(token)
        return _with_request_id(result, event)

    def _to_proxy_event(self, event: dict[str, Any]) -> BaseProxyEvent:
        """``resolve`` wraps the event here, then stores it on ``BaseRouter``: kept for this
        request instead (the class attribute is shadowed by the property above)."""
        proxy = super()._to_proxy_event(event)
        self._invocation.event = proxy
        return proxy


def _with_request_id(result: dict[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    context = event.get("requestContext")
    request_id = context.get("requestId") if isinstance(context, Mapping) else None
    if isinstance(request_id, str) and request_id and isinstance(result, dict):
        headers = result.setdefault("headers", {})
        if isinstance(headers, dict):
            headers.setdefault(REQUEST_ID_HEADER, request_id)
    return result


def make_app(settings: Settings) -> APIGatewayHttpResolver:
    """A resolver with CORS and the error map; routes are added by the handler modules."""
    app = RequestScopedResolver(
        cors=CORSConfig(
            allow_origin=settings.cors_origins,
            allow_headers=list(CORS_ALLOW_HEADERS),
            expose_headers=list(CORS_EXPOSE_HEADERS),
            max_age=600,
        )
    )

    @app.exception_handler(PromptCacheError)  # type: ignore[untyped-decorator]
    def _known(exc: PromptCacheError) -> Response[str]:
        if exc.status >= 500:
            log.warning("request failed: %s: %s", exc.code, exc.message)
        return error_response(exc, face_of(app.current_event.raw_path))

    @app.exception_handler(NotFoundError)  # type: ignore[untyped-decorator]
    def _unknown_route(exc: NotFoundError) -> Response[str]:
        return _no_route(app.current_event)

    @app.not_found
    def _not_found(exc: Exception) -> Response[str]:
        return _no_route(app.current_event)

    return app


def _no_route(event: APIGatewayProxyEventV2) -> Response[str]:
    path = event.raw_path
    methods = sorted(m for (m, p) in ROUTES if p == route_path(path))
    if methods:
        err: PromptCacheError = MethodNotAllowed(
            f"{event.request_context.http.method} is not allowed on {path}; "
            f"use {', '.join(methods)}"
        )
        resp = error_response(err, face_of(path))
        resp.headers["Allow"] = ", ".join(methods)
        return resp
    known = ", ".join(f"{m} {p}" for (m, p) in ROUTES)
    not_found = NotFound(f"no route {path}; routes are: {known}")
    return error_response(not_found, face_of(path))
