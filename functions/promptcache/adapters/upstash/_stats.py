"""UpstashStats: exact counters in one Redis hash, the stats key of the key layout."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import httpx

from ..._errors import StatsError
from ._keys import DEFAULT_PREFIX, KeyLayout
from ._rest import UpstashREST, text


class UpstashStats:
    """Exact counters in one Redis hash: every ``add`` is one atomic transaction of
    HINCRBYFLOAT, so concurrent writers never lose an update.

    The hash is ``KeyLayout(prefix).stats`` (``pc:stats`` by default), the one key under the
    prefix besides the epoch that ``UpstashStore.clear()`` keeps."""

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        token: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        base64_responses: bool = True,
    ) -> None:
        self._rest = UpstashREST(
            client, url, token, base64_responses=base64_responses, error=StatsError
        )
        self._key = KeyLayout(prefix).stats

    def add(self, counters: Mapping[str, float]) -> None:
        commands: list[list[str | int]] = [
            ["HINCRBYFLOAT", self._key, name, repr(float(value))]
            for name, value in counters.items()
            if value
        ]
        if commands:
            self._rest.multi_exec(commands)

    def read(self) -> dict[str, float]:
        flat = self._rest.command("HGETALL", self._key)
        try:
            return {text(flat[i]): float(text(flat[i + 1])) for i in range(0, len(flat), 2)}
        except (TypeError, ValueError, IndexError) as exc:
            raise StatsError(f"Upstash stats hash is malformed: {exc}") from exc

    def reset(self) -> None:
        self._rest.command("DEL", self._key)

    def drop(self, names: Collection[str]) -> None:
        if names:
            self._rest.command("HDEL", self._key, *names)
