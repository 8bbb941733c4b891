"""The admin API, for the admin key alone (``PROMPTCACHE_ADMIN_KEY``, with API keys configured):

    GET  /admin/entries   recent entries, newest first: ?tenant=NAME&limit=N&cursor=C
    POST /admin/flush     remove every entry of a namespace, a model and/or a tenant
    POST /admin/forget    remove every entry stored for a prompt (of a tenant and/or a model)

Any other caller gets 401/403 and a malformed request 4xx, before anything is read or removed.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from .._errors import Forbidden, Unprocessable
from .._keys import tenant_of
from .._types import Entry
from ..settings import Settings
from .service import Service
from .wire import json_body, json_response, reader

#: The most entries one page of ``GET /admin/entries`` holds, and its default.
MAX_PAGE = 100
DEFAULT_PAGE = 20
_FLUSH_FIELDS = ("namespace", "model", "tenant")


def _admin(event: APIGatewayProxyEventV2, settings: Settings) -> None:
    if not settings.api_keys or not settings.admin_key:
        raise Forbidden(
            "the admin API needs PROMPTCACHE_API_KEYS and PROMPTCACHE_ADMIN_KEY configured"
        )
    if reader(event, settings) is not None:
        raise Forbidden("the admin API answers the admin key only")


def _strings(body: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, str]:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise Unprocessable(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    out = {}
    for name, value in body.items():
        if not isinstance(value, str) or not value.strip() or len(value) > 100_000:
            raise Unprocessable(f"'{name}' must be a non-empty string")
        out[name] = value if name == "prompt" else value.strip()
    return out


def _int_param(params: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not lo <= int(raw) <= hi:
        raise Unprocessable(f"'{name}' must be an integer between {lo} and {hi}")
    return int(raw)


def _shown(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "tenant": tenant_of(entry.namespace),
        "namespace": entry.namespace,
        "model": entry.model,
        "prompt": entry.prompt,
        "response": entry.response,
        "created_at": entry.created_at,
        "expires_at": entry.expires_at,
    }


def entries(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    """GET /admin/entries: one page of recent entries and the cursor of the next (null at the
    end)."""
    _admin(event, svc.settings)
    params = dict(event.query_string_parameters or {})
    unknown = sorted(set(params) - {"tenant", "limit", "cursor"})
    if unknown:
        raise Unprocessable(
            f"unknown parameter(s): {', '.join(unknown)}; allowed: tenant, limit, cursor"
        )
    limit = _int_param(params, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = _int_param(params, "cursor", 0, 0, 10**9)
    tenant = params.get("tenant")
    found, following = svc.cache.recent(tenant, offset, limit)
    body = {
        "entries": [_shown(e) for e in found],
        "next_cursor": None if following is None else str(following),
    }
    return json_response(200, body)


def flush(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    """POST /admin/flush {"namespace"?, "model"?, "tenant"?}: every entry matching all of them."""
    _admin(event, svc.settings)
    given = _strings(json_body(event, svc.settings), _FLUSH_FIELDS)
    if not given:
        raise Unprocessable("send at least one of 'namespace', 'model', 'tenant'")
    return json_response(200, {"deleted": svc.cache.flush(**given), "matched": given})


def forget(event: APIGatewayProxyEventV2, svc: Service) -> Response[str]:
    """POST /admin/forget {"prompt", "tenant"?, "model"?}: every entry stored for the prompt."""
    _admin(event, svc.settings)
    given = _strings(json_body(event, svc.settings), ("prompt", *_FLUSH_FIELDS[1:]))
    if "prompt" not in given:
        raise Unprocessable("'prompt' is required: the prompt whose stored answers to remove")
    deleted = svc.cache.flush(**given)
    return json_response(200, {"deleted": deleted, "matched": given})
