"""The OpenAI Responses face of the cache: ``POST /v1/responses`` and ``GET /v1/responses/{id}``.

Parses OpenAI's Responses request into a ``ChatRequest`` (``responses_request``: what is
translated, keyed, forwarded and refused), answers it on the path every face takes
(``PromptCache.chat``, or ``chat_stream`` for ``stream: true``), and shapes the answer as OpenAI's
Response object or event stream (``responses_shape``).

Kept responses (``previous_response_id``, ``GET``): unless the request says ``store: false``,
each response is kept in the store (``PromptCache.keep``: one write) for the TTL its answer's
entry has (``promptcache.ttl``, else PROMPTCACHE_TTL_SECONDS), under a name of its tenant's, with
the whole conversation it ended: the kept conversation of its own ``previous_response_id``, its
input turns and its output as turns. A follow-up naming it is that conversation followed by the
follow-up's input (``instructions`` are not carried over, as OpenAI does not), keyed on the turns
and never on ids: the id is the cache's own and never goes upstream, and the same conversation
sent as items has the same key. An unknown or expired id, or another tenant's, is OpenAI's 400
``previous_response_not_found`` (and a 404 on ``GET``). A store that cannot keep the response
answers anyway, with ``store: false`` in the object.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from .._errors import BackendError, NotFound, Unprocessable
from .._types import ChatResult, Message, ToolCall
from .intake import read_body
from .observability import count
from .responses_items import InvalidRequest, invalid, parse_input
from .responses_request import ResponsesRequest, parse_request
from .responses_shape import ResponseEvents, new_id, output_items, response_object
from .service import Service
from .sse import errors_as_events, stream_response
from .wire import admit_chat, check_threshold, json_response

log = logging.getLogger("promptcache")

#: The version of a kept response's layout (``_kept``).
KEPT_VERSION = 1
#: What the cache's response ids look like (``responses_shape.new_id``).
RESPONSE_ID = re.compile(r"resp_[0-9a-f]{32}")


@contextlib.contextmanager
def _as_400(param: str | None = None) -> Iterator[None]:
    """The shared checks answer a malformed request with 422; OpenAI answers 400."""
    try:
        yield
    except Unprocessable as exc:
        raise invalid(exc, param) from None


# ---------------------------------------------------------------- kept responses
def kept_name(tenant: str, response_id: str) -> str:
    """Where a tenant's response is kept: no other tenant's name can reach it."""
    digest = hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"response:{digest}:{response_id}"


def _turn_json(turn: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": turn.role, "content": turn.content}
    if turn.tool_calls:
        out["calls"] = [[c.name, c.arguments, c.id, c.type] for c in turn.tool_calls]
    if turn.tool_call_id is not None:
        out["call_id"] = turn.tool_call_id
    if turn.name:
        out["name"] = turn.name
    if turn.parts:
        out["parts"] = [dict(p) for p in turn.parts]
    return out


def _turn_of(data: dict[str, Any]) -> Message:
    return Message(
        str(data["role"]),
        str(data["content"]),
        tool_calls=tuple(ToolCall(*map(str, c)) for c in data.get("calls") or ()),
        tool_call_id=data.get("call_id"),
        name=data.get("name"),
        parts=tuple(data.get("parts") or ()),
    )


def _kept(svc: Service, tenant: str, response_id: str) -> dict[str, Any] | None:
    """A tenant's kept response (its layout checked), or None. Raises StoreError (a 503)."""
    document = svc.cache.kept(kept_name(tenant, response_id))
    if (
        document is None
        or document.get("v") != KEPT_VERSION
        or document.get("tenant") != tenant
        or not isinstance(document.get("response"), dict)
        or not isinstance(document.get("turns"), list)
    ):
        return None
    return document


def _earlier(svc: Service, tenant: str, body: dict[str, Any]) -> tuple[Message, ...]:
    """The conversation ``previous_response_id`` names (400 when there is none)."""
    previous = body.get("previous_response_id")
    if previous is None:
        return ()
    if not isinstance(previous, str) or not previous:
        raise InvalidRequest("'previous_response_id' must be a string", "previous_response_id")
    document = _kept(svc, tenant, previous)
    if document is None:
        raise InvalidRequest(
            f"Previous response with id '{previous}' not found.",
            "previous_response_id",
            code="previous_response_not_found",
        )
    try:
        return tuple(_turn_of(t) for t in document["turns"])
    except (KeyError, TypeError, ValueError):
        log.warning("kept response %s is unreadable", previous)
        raise InvalidRequest(
            f"Previous response with id '{previous}' not found.",
            "previous_response_id",
            code="previous_response_not_found",
        ) from None


def _answer_turns(output: list[dict[str, Any]], result: ChatResult) -> tuple[Message, ...]:
    """The answer as the kept conversation holds it: its output items as input items would be
    read (one assistant turn, the call ids as sent), with the model's reasoning blocks exactly
    as the upstream sent them in place of the reasoning items shaped from them, so that a
    follow-up sends the model what it wrote."""
    turns = parse_input(output)
    if not result.thinking:
        return turns
    last = turns[-1]
    others = tuple(p for p in last.parts if p.get("type") != "reasoning")
    return (*turns[:-1], replace(last, parts=(*result.thinking, *others)))


def _keep(svc: Service, request: ResponsesRequest, obj: dict[str, Any], result: ChatResult) -> bool:
    """Keep a response and its conversation (unless ``store: false``); whether it was kept. A
    store failure is logged and answered anyway: the response is then not kept."""
    if not request.store:
        return False
    turns: Sequence[Message] = (*request.turns, *_answer_turns(obj["output"], result))
    document = {
        "v": KEPT_VERSION,
        "tenant": request.chat.tenant,
        "response": {**obj, "store": True},
        "turns": [_turn_json(t) for t in turns],
    }
    try:
        svc.cache.keep(kept_name(request.chat.tenant, obj["id"]), document, request.chat.ttl)
    except BackendError as exc:
        log.warning("keeping response %s failed (answered unkept): %s", obj["id"], exc.message)
        count("responses_unkept")
        return False
    return True


# ---------------------------------------------------------------- the two endpoints
def create(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    """``POST /v1/responses``."""
    settings = svc.settings
    with _as_400():
        tenant, admin = admit_chat(event, settings, svc.limiter)
        body, big = read_body(event, settings)
    earlier = _earlier(svc, tenant, body)
    request = parse_request(body, settings, tenant, earlier=earlier, big=big)
    with _as_400("promptcache"):
        check_threshold(request.chat.threshold, svc.cache.threshold, admin=admin)
    response_id, created = new_id("resp"), int(time.time())

    if not request.stream:
        result, headers = svc.answer(request.chat)
        obj = response_object(
            request.echo,
            response_id=response_id,
            created_at=created,
            model=result.model,
            output=output_items(result),
            result=result,
            store=request.store,
        )
        obj["store"] = _keep(svc, request, obj, result)
        return json_response(200, obj, headers)

    stream, headers = svc.stream(request.chat)
    events = ResponseEvents(
        stream,
        request.echo,
        response_id=response_id,
        created_at=created,
        store=request.store,
        finish=lambda obj, result: _keep(svc, request, obj, result),
        errors_as_events=errors_as_events(),
    )
    return stream_response(iter(events), headers)


def retrieve(event: APIGatewayProxyEventV2, response_id: str, svc: Service) -> Response[str]:
    """``GET /v1/responses/{id}``: the tenant's kept response, as it was returned."""
    with _as_400():
        tenant, _ = admit_chat(event, svc.settings, svc.limiter)
    if not RESPONSE_ID.fullmatch(response_id):
        raise InvalidRequest(
            f"Invalid 'response_id': {response_id[:80]!r}; this cache's response ids are 'resp_' "
            "and 32 hex digits",
            "response_id",
        )
    if (event.query_string_parameters or {}).get("stream") in ("true", "1"):
        raise InvalidRequest(
            "streaming a kept response is not supported: the cache keeps finished responses",
            "stream",
        )
    document = _kept(svc, tenant, response_id)
    if document is None:
        raise NotFound(f"Response with id '{response_id}' not found.")
    return json_response(200, document["response"])
