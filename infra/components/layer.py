"""A Lambda layer from a built zip: the core package and its runtime dependencies, or the
verifier's (its runtime and weights)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class CoreLayerArgs:
    name: str
    zip_path: Path
    source_code_hash: str
    runtime: str
    architecture: str
    description: str


class CoreLayer(pulumi.ComponentResource):
    arn: pulumi.Output[str]

    def __init__(
        self, resource_name: str, args: CoreLayerArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("promptcache:index:CoreLayer", resource_name, None, opts)
        self.version = aws.lambda_.LayerVersion(
            f"{resource_name}-version",
            layer_name=args.name,
            description=args.description,
            code=pulumi.FileArchive(str(args.zip_path)),
            source_code_hash=args.source_code_hash,
            compatible_runtimes=[args.runtime],
            compatible_architectures=[args.architecture],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.arn = self.version.arn
        self.register_outputs({"arn": self.arn})
