"""UpstashStats: exact counters in one Redis hash, the stats key of the key layout."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import httpx

from ..._errors import StatsError
from ._keys import DEFAULT_PREFIX, KeyLayout
from ._rest import UpstashREST, text
from ._scripts import HINCR_MANY_LUA


class UpstashStats:
    """Exact counters in one Redis hash: every ``add`` is one atomic script of HINCRBYFLOAT
    (one command, however many counters an answer adds), so concurrent writers never lose an
    update.

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
        args: list[str | int] = []
        for name, value in counters.items():
            if value:
                args += [name, repr(float(value))]
        if args:
            self._rest.command("EVAL", HINCR_MANY_LUA, 1, self._key, *args)

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
