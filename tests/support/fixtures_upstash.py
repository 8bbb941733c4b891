"""Fixtures for the Upstash store and the server-side indexes: one real Redis 8 (with the query
engine) and the REST stand-ins (Upstash Redis, Upstash Vector) per session, emptied before each
test that uses them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from promptcache.adapters.upstash import UpstashStore
from tests.support.redis_server import RedisServer
from tests.support.upstash_standin import UpstashStandIn
from tests.support.upstash_vector_standin import UpstashVectorStandIn

#: The Upstash Vector stand-in's index dimension (the tests' fake embedder's).
VECTOR_DIM = 8


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(modules=True) as server:
        yield server


@pytest.fixture(scope="session")
def _upstash_session(redis_server: RedisServer) -> Iterator[UpstashStandIn]:
    with UpstashStandIn(redis_server.port) as standin:
        yield standin


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def upstash(_upstash_session: UpstashStandIn, redis_client: redis.Redis) -> UpstashStandIn:
    """The REST stand-in over an empty Redis, with its counters at zero."""
    _upstash_session.reset_counters()
    return _upstash_session


@pytest.fixture
def make_upstash_store(upstash: UpstashStandIn) -> Iterator[Callable[..., UpstashStore]]:
    """``make_upstash_store(**kwargs)``: a new UpstashStore (own httpx client) on the stand-in."""
    clients: list[httpx.Client] = []

    def make(**kwargs: Any) -> UpstashStore:
        client = httpx.Client(timeout=10.0)
        clients.append(client)
        return UpstashStore(client, upstash.url, upstash.token, **kwargs)

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def _vector_session(redis_server: RedisServer) -> Iterator[UpstashVectorStandIn]:
    with UpstashVectorStandIn(redis_server.port, dim=VECTOR_DIM) as standin:
        yield standin


@pytest.fixture
def upstash_vector(
    _vector_session: UpstashVectorStandIn, redis_client: redis.Redis
) -> UpstashVectorStandIn:
    """The Upstash Vector stand-in over an empty Redis (its search index made again)."""
    _vector_session.reset_index()
    return _vector_session
