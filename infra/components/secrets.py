"""The functions' secrets as SSM Parameter Store SecureStrings: read once per cold start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class SecretParametersArgs:
    #: Parameter path prefix, e.g. ``/promptcache/dev``.
    path: str
    #: Parameter name (under ``path``) -> the secret value (a Pulumi secret).
    values: Mapping[str, pulumi.Output[str]]
    kms_key_arn: str | None
    tags: Mapping[str, str]


class SecretParameters(pulumi.ComponentResource):
    names: dict[str, pulumi.Output[str]]
    arns: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        resource_name: str,
        args: SecretParametersArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("promptcache:index:SecretParameters", resource_name, None, opts)
        self.parameters: dict[str, aws.ssm.Parameter] = {}
        for key, value in args.values.items():
            self.parameters[key] = aws.ssm.Parameter(
                f"{resource_name}-{key}",
                name=f"{args.path}/{key}",
                type="SecureString",
                # Secret in the state and in the plan, whatever the caller passed.
                value=pulumi.Output.from_input(value).apply(pulumi.Output.secret),
                key_id=args.kms_key_arn,
                description=f"promptcache {key} (read by the functions at cold start)",
                tags=dict(args.tags),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.names = {k: p.name for k, p in self.parameters.items()}
        self.arns = {k: p.arn for k, p in self.parameters.items()}
        self.register_outputs({"names": self.names})
