"""The Cloudflare Workers KV namespace that holds the durable statistics."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare


@dataclass(frozen=True)
class StatsNamespaceArgs:
    account_id: str
    title: str


class StatsNamespace(pulumi.ComponentResource):
    id: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        args: StatsNamespaceArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("promptcache:index:StatsNamespace", resource_name, None, opts)
        self.namespace = cloudflare.WorkersKvNamespace(
            f"{resource_name}-namespace",
            account_id=args.account_id,
            title=args.title,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.id = self.namespace.id
        self.register_outputs({"id": self.id})
