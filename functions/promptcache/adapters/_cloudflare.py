"""What the Cloudflare REST adapters (Workers AI, KV) share: URLs, auth, the response envelope.

Every JSON answer of the API is an envelope
``{"result": ..., "success": bool, "errors": [{"code", "message"}], "messages": [...]}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from .._errors import ConfigError

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class APIError:
    code: int | None
    message: str

    def __str__(self) -> str:
        return f"code {self.code}: {self.message}" if self.code is not None else self.message


def check_id(value: str, what: str) -> str:
    """Account and namespace ids go into URL paths: accept only what Cloudflare issues."""
    if not _ID.match(value or ""):
        raise ConfigError(
            f"{what} must be a Cloudflare id (letters, digits, '-' or '_'), got {value!r}"
        )
    return value


def account_url(base_url: str, account_id: str) -> str:
    account = check_id(account_id, "CLOUDFLARE_ACCOUNT_ID")
    return f"{(base_url or DEFAULT_BASE_URL).rstrip('/')}/accounts/{account}"


def auth_headers(token: str) -> dict[str, str]:
    if not token:
        raise ConfigError("a Cloudflare API token is required (CLOUDFLARE_API_TOKEN)")
    return {"Authorization": f"Bearer {token}"}


def envelope(response: httpx.Response) -> dict[str, Any] | None:
    """The parsed envelope, or None when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def errors_of(response: httpx.Response) -> list[APIError]:
    body = envelope(response)
    if body is None:
        return []
    found = []
    for item in body.get("errors") or []:
        if isinstance(item, dict):
            code = item.get("code")
            found.append(
                APIError(code if isinstance(code, int) else None, str(item.get("message", "")))
            )
        else:
            found.append(APIError(None, str(item)))
    return found


def error_codes(response: httpx.Response) -> set[int]:
    return {e.code for e in errors_of(response) if e.code is not None}


def describe(response: httpx.Response) -> str:
    """``HTTP 400 (code 5007: No such model ...)`` for messages; never the whole body."""
    errors = errors_of(response)
    if errors:
        detail = "; ".join(str(e) for e in errors)
    else:
        detail = (response.text or response.reason_phrase or "").strip()
    return f"HTTP {response.status_code}" + (f" ({detail[:300]})" if detail else "")


def result_of(response: httpx.Response) -> Any:
    """The ``result`` of a successful envelope. Raises ValueError when the body is not one."""
    body = envelope(response)
    if body is None:
        raise ValueError("the answer is not a JSON envelope")
    if body.get("success") is not True:
        raise ValueError(f"the envelope says success={body.get('success')!r}")
    return body.get("result")
