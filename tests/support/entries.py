"""Entries for store tests: the fields a store keeps, with recognisable values. The one entry
factory of the tests."""

from __future__ import annotations

import time
import uuid

from promptcache import Entry, Usage


def make_entry(
    prompt: str,
    *,
    ns: str,
    ttl: float | None = None,
    now: float | None = None,
    key: str | None = None,
    response: str | None = None,
) -> Entry:
    """An entry for ``prompt`` in namespace ``ns``, created ``now`` (default: the time) and
    expiring ``ttl`` seconds later (default: never), with the exact key ``key-PROMPT`` and the
    answer ``answer: PROMPT`` unless ``key`` or ``response`` say otherwise."""
    now = time.time() if now is None else now
    return Entry(
        id=uuid.uuid4().hex,
        namespace=ns,
        exact_key=f"key-{prompt}" if key is None else key,
        prompt=prompt,
        response=f"answer: {prompt}" if response is None else response,
        model="m",
        usage=Usage(1, 2),
        created_at=now,
        expires_at=None if ttl is None else now + ttl,
    )
