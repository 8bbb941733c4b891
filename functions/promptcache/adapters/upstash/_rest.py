"""The Upstash REST protocol: one command, ``/pipeline`` and ``/multi-exec`` over an injected
``httpx.Client``, every failure raised as the caller's error type (StoreError or StatsError)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import httpx

from ..._errors import ConfigError, StatsError, StoreError


class UpstashREST:
    """The Upstash REST protocol on an injected ``httpx.Client``: ``POST /`` (one command),
    ``/pipeline`` and ``/multi-exec``. Every string result comes back as ``bytes``.

    With ``base64_responses`` (the default) requests carry ``Upstash-Encoding: base64`` and every
    string result is decoded from base64, so no byte is ever replaced on the way back.
    """

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        token: str,
        *,
        base64_responses: bool = True,
        error: type[StoreError] | type[StatsError] = StoreError,
    ) -> None:
        if not url:
            raise ConfigError("the Upstash REST URL is empty (UPSTASH_REDIS_REST_URL)")
        if not token:
            raise ConfigError(
                "the Upstash REST token is empty (UPSTASH_REDIS_REST_TOKEN or "
                "UPSTASH_REDIS_REST_TOKEN_SSM_PARAMETER)"
            )
        self._client = client
        self._url = url.rstrip("/")
        self._base64 = base64_responses
        self._error = error
        self._headers = {"Authorization": f"Bearer {token}"}
        if base64_responses:
            self._headers["Upstash-Encoding"] = "base64"

    def command(self, *args: str | int) -> Any:
        data = self._post("", list(args))
        if not isinstance(data, dict) or "result" not in data:
            raise self._error(f"Upstash: unexpected answer {str(data)[:200]}")
        return self._decode(data["result"])

    def pipeline(self, commands: Sequence[Sequence[str | int]]) -> list[Any]:
        """Several commands in one round trip (not atomic)."""
        return self._batch("/pipeline", commands)

    def multi_exec(self, commands: Sequence[Sequence[str | int]]) -> list[Any]:
        """Several commands in one atomic transaction (one round trip)."""
        return self._batch("/multi-exec", commands)

    def _batch(self, path: str, commands: Sequence[Sequence[str | int]]) -> list[Any]:
        data = self._post(path, [list(c) for c in commands])
        if not isinstance(data, list) or len(data) != len(commands):
            raise self._error(f"Upstash {path}: unexpected answer {str(data)[:200]}")
        results = []
        for command, item in zip(commands, data, strict=True):
            if not isinstance(item, dict):
                raise self._error(f"Upstash {path}: unexpected item {str(item)[:200]}")
            if "error" in item:
                raise self._error(f"Upstash {path}: {command[0]} failed: {item['error']}")
            if "result" not in item:
                raise self._error(f"Upstash {path}: unexpected item {str(item)[:200]}")
            results.append(self._decode(item["result"]))
        return results

    def _post(self, path: str, body: Any) -> Any:
        where = f"Upstash {path or '/'}"
        try:
            response = self._client.post(self._url + path, json=body, headers=self._headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._error(f"{where}: {type(exc).__name__}: {exc}") from exc
        except (TypeError, ValueError) as exc:  # a value that cannot be encoded as JSON/UTF-8
            raise self._error(f"{where}: cannot encode the request: {exc}") from exc
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            if response.status_code == 401:
                raise self._error(f"{where}: the token was rejected (401)") from exc
            raise self._error(
                f"{where}: HTTP {response.status_code}: {_error_text(response)}"
            ) from exc
        try:
            data = response.json()
        except ValueError as exc:
            raise self._error(f"{where}: the answer is not JSON: {response.text[:200]!r}") from exc
        if isinstance(data, dict) and "error" in data:
            raise self._error(f"{where}: {data['error']}")
        return data

    def _decode(self, value: Any) -> Any:
        if isinstance(value, str):
            if not self._base64:
                return value.encode("utf-8")
            if value == "OK":  # the one string Upstash leaves unencoded
                return b"OK"
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise self._error(f"Upstash: a result is not base64: {value[:60]!r}") from exc
        if isinstance(value, list):
            return [self._decode(v) for v in value]
        return value


def text(value: Any, default: str = "0") -> str:
    """A string result (``bytes``) as text; ``default`` for a missing one (``None``)."""
    return default if value is None else bytes(value).decode("utf-8", errors="replace")


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return str(data)[:200]
