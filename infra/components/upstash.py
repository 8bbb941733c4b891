"""The Upstash Redis database: entries, exact keys and vector logs, over its REST API."""

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
