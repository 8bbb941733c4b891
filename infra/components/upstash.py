"""Upstash: the Redis database (entries, exact keys and vector logs, over its REST API) and,
when the stack chooses it, the Vector index that serves the semantic tier server-side."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import upstash_pulumi as upstash


@dataclass(frozen=True)
class CacheDatabaseArgs:
    name: str
    primary_region: str
    budget: int
    eviction: bool


class CacheDatabase(pulumi.ComponentResource):
    endpoint: pulumi.Output[str]
    rest_url: pulumi.Output[str]
    rest_token: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        args: CacheDatabaseArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("promptcache:index:CacheDatabase", resource_name, None, opts)
        self.database = upstash.RedisDatabase(
            f"{resource_name}-redis",
            database_name=args.name,
            # Upstash creates global databases only; the primary region takes the writes.
            region="global",
            primary_region=args.primary_region,
            budget=args.budget,
            eviction=args.eviction,
            tls=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.endpoint = self.database.endpoint
        self.rest_url = self.database.endpoint.apply(lambda host: f"https://{host}")
        # Already a secret output of the provider; kept secret explicitly all the same.
        self.rest_token = pulumi.Output.secret(self.database.rest_token)
        self.register_outputs({"endpoint": self.endpoint, "rest_url": self.rest_url})


@dataclass(frozen=True)
class CacheVectorIndexArgs:
    name: str
    region: str
    dimension: int
    plan: str


class CacheVectorIndex(pulumi.ComponentResource):
    """An Upstash Vector index for PROMPTCACHE_INDEX=upstash-vector: COSINE (the adapter turns
    its (1 + cos) / 2 score back into the cosine), of the deployed embedder's dimension."""

    endpoint: pulumi.Output[str]
    rest_url: pulumi.Output[str]
    rest_token: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        args: CacheVectorIndexArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("promptcache:index:CacheVectorIndex", resource_name, None, opts)
        self.index = upstash.VectorIndex(
            f"{resource_name}-vector",
            name=args.name,
            region=args.region,
            dimension_count=args.dimension,
            similarity_function="COSINE",
            type=args.plan,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.endpoint = self.index.endpoint
        self.rest_url = self.index.endpoint.apply(lambda host: f"https://{host}")
        self.rest_token = pulumi.Output.secret(self.index.token)
        self.register_outputs({"endpoint": self.endpoint, "rest_url": self.rest_url})
