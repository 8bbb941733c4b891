"""Concurrent clients of `promptcache serve` each get their own answer: distinct prompts, two
tenants asking the same texts, every route, every answer checked against its own request.

Size: ``TEST_LOAD_REQUESTS`` (default 3,000, what CI runs) requests from ``TEST_LOAD_CLIENTS``
(default 32) concurrent keep-alive clients.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.load import Tenant, Workload
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.serve import ServerProcess, local_server

pytestmark = pytest.mark.integration

ADMIN = "key-admin"
REQUESTS = int(os.environ.get("TEST_LOAD_REQUESTS", "3000"))
CLIENTS = int(os.environ.get("TEST_LOAD_CLIENTS", "32"))


def echoes(prompt: str, text: str) -> bool:
    """The test upstream answers ``[test upstream answer #n] <the question>``."""
    return re.fullmatch(r"\[test upstream answer #\d+\] " + re.escape(prompt), text) is not None


@pytest.fixture
def tenants_server(tmp_path: Path, upstream: OpenAIUpstream) -> Iterator[ServerProcess]:
    keys = "key-alpha:alpha,key-beta:beta"
    with local_server(
        tmp_path, upstream.base_url, PROMPTCACHE_API_KEYS=keys, PROMPTCACHE_ADMIN_KEY=ADMIN
    ) as server:
        yield server


def test_concurrent_mixed_requests_of_two_tenants_each_get_their_own_answer(
    tenants_server: ServerProcess, upstream: OpenAIUpstream
) -> None:
    tenants = [Tenant("alpha", "key-alpha"), Tenant("beta", "key-beta")]
    load = Workload(tenants_server.url, tenants, echoes)
    load.prepare(per_tenant=48, paraphrases=16)
    semantic = sum(
        k.entry_id == e.entry_id
        for t in tenants
        for k, e in zip(t.semantic, t.exact[: len(t.semantic)], strict=True)
    )
    assert semantic >= 8, f"only {semantic} paraphrases are semantic hits"

    def counted() -> dict[str, int]:
        body = httpx.get(
            tenants_server.url + "/stats", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
        ).json()
        return {"all": body["requests"], **{t: r["requests"] for t, r in body["tenants"].items()}}

    before = counted()
    outcome = load.run(clients=CLIENTS, requests=REQUESTS)
    after = counted()

    assert outcome.requests == REQUESTS
    assert outcome.problems == [], (
        f"{len(outcome.problems)} of {REQUESTS} requests went wrong:\n"
        + "\n".join(outcome.problems[:40])
    )
    # Every chat request was counted once, under its own tenant: no lost or stray counter.
    assert after["all"] - before["all"] == outcome.chats
    assert sum(after[t.name] - before[t.name] for t in tenants) == outcome.chats
    # Every kind of request was exercised.
    assert all(outcome.by_kind.get(name, 0) > 0 for name in Workload.OPERATIONS), outcome.by_kind
    # The server is still whole afterwards.
    assert httpx.get(tenants_server.url + "/health", timeout=10).status_code == 200
