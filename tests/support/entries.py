"""Entries for store tests: the fields a store keeps, with recognisable values."""

from __future__ import annotations

import time
import uuid

from promptcache import Entry, Usage


def make_entry(
    prompt: str, *, ns: str, ttl: float | None = None, now: float | None = None
) -> Entry:
    now = time.time() if now is None else now
    return Entry(
        id=uuid.uuid4().hex,
        namespace=ns,
        exact_key=f"key-{prompt}",
        prompt=prompt,
        response=f"answer: {prompt}",
        model="m",
        usage=Usage(1, 2),
        created_at=now,
        expires_at=None if ttl is None else now + ttl,
    )
