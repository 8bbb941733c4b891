"""Fixtures for the Cloudflare backends: stand-ins for Workers AI and KV on loopback, and the
settings that point promptcache at them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from tests.support.cloudflare_standin import Reply, Request
from tests.support.kv_standin import KVStandIn
from tests.support.workers_ai_standin import WorkersAIStandIn


class CloudflareAPIStandIn(WorkersAIStandIn, KVStandIn):
    """Workers AI and KV behind one base URL, as in production (one CLOUDFLARE_API_BASE_URL)."""

    def route(self, request: Request) -> Reply:
        if request.path.startswith("/ai/"):
            return WorkersAIStandIn.route(self, request)
        return KVStandIn.route(self, request)


@pytest.fixture
def cloudflare_api(local_embedder: Any) -> Iterator[CloudflareAPIStandIn]:
    with CloudflareAPIStandIn(local_embedder) as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def make_kv() -> Iterator[Callable[..., KVStandIn]]:
    """Start KV stand-ins with options (e.g. ``stale_seconds``); all are stopped afterwards."""
    with ExitStack() as stack:

        def make(**options: Any) -> KVStandIn:
            server = KVStandIn(**options)
            stack.enter_context(server)
            return server

        yield make


@pytest.fixture
def cloudflare_env(cloudflare_api: CloudflareAPIStandIn) -> dict[str, str]:
    """Settings selecting every Cloudflare backend (Workers AI embedder and LLM, KV stats) on the
    stand-in, with an in-memory store."""
    return {
        "PROMPTCACHE_STORE": "memory",
        "PROMPTCACHE_EMBEDDER": "workers-ai",
        "PROMPTCACHE_LLM": "workers-ai",
        "PROMPTCACHE_STATS": "cloudflare-kv",
        "CLOUDFLARE_ACCOUNT_ID": cloudflare_api.account_id,
        "CLOUDFLARE_API_TOKEN": cloudflare_api.token,
        "CLOUDFLARE_KV_NAMESPACE_ID": cloudflare_api.namespace_id,
        "CLOUDFLARE_API_BASE_URL": cloudflare_api.base_url,
    }
