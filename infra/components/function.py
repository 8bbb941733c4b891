"""One Lambda function per handler: its log group, its role and the function itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from infra.components.iam import FunctionRole, FunctionRoleArgs


@dataclass(frozen=True)
class HandlerFunctionArgs:
    #: Physical function name, e.g. ``promptcache-dev-chat``.
    name: str
    #: Module of the handler in the function zip (``chat`` -> ``chat.lambda_handler``).
    module: str
    code_zip: Path
    code_hash: str
    layer_arn: pulumi.Input[str]
    runtime: str
    architecture: str
    memory_mb: int
    timeout_seconds: int
    environment: Mapping[str, pulumi.Input[str]]
    log_retention_days: int
    secret_parameter_arns: Sequence[pulumi.Input[str]]
    kms_key_arn: str | None
    tags: Mapping[str, str]
    #: The function's entry point; by default ``<module>.lambda_handler`` (``module`` then only
    #: labels the function).
    handler: str | None = None
    #: Layers after the core layer (e.g. the Lambda Web Adapter).
    extra_layer_arns: Sequence[pulumi.Input[str]] = ()


class HandlerFunction(pulumi.ComponentResource):
    name: pulumi.Output[str]
    arn: pulumi.Output[str]
    invoke_arn: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        args: HandlerFunctionArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("promptcache:index:HandlerFunction", resource_name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {**args.tags, "handler": args.module}
        # Created here, before the function, so its retention applies and the role can name it.
        self.log_group = aws.cloudwatch.LogGroup(
            f"{resource_name}-logs",
            name=f"/aws/lambda/{args.name}",
            retention_in_days=args.log_retention_days,
            tags=tags,
            opts=child,
        )
        self.role = FunctionRole(
            f"{resource_name}-exec",
            FunctionRoleArgs(
                name=args.name,
                log_group_arn=self.log_group.arn,
                secret_parameter_arns=args.secret_parameter_arns,
                kms_key_arn=args.kms_key_arn,
                tags=tags,
            ),
            opts=child,
        )
        self.function = aws.lambda_.Function(
            f"{resource_name}-function",
            name=args.name,
            description=f"promptcache {args.module} handler",
            role=self.role.arn,
            runtime=args.runtime,
            architectures=[args.architecture],
            handler=args.handler or f"{args.module}.lambda_handler",
            code=pulumi.FileArchive(str(args.code_zip)),
            source_code_hash=args.code_hash,
            layers=[args.layer_arn, *args.extra_layer_arns],
            memory_size=args.memory_mb,
            timeout=args.timeout_seconds,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=dict(args.environment)),
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="Text", log_group=self.log_group.name
            ),
            tags=tags,
            # The role's policy must exist before the first cold start writes logs or reads SSM.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.log_group, self.role.policy]),
        )
        self.name = self.function.name
        self.arn = self.function.arn
        self.invoke_arn = self.function.invoke_arn
        self.register_outputs({"name": self.name, "arn": self.arn})
