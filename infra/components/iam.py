"""A function's execution role: least privilege, every action named (no wildcard actions).

- CloudWatch Logs: create streams and put events in the function's own log group only (the
  group is created by Pulumi, so no logs:CreateLogGroup).
- X-Ray: put trace segments and telemetry (X-Ray has no resource-level permissions).
- SSM: read the named SecureString parameters only.
- KMS: decrypt with the customer-managed key, when one encrypts the parameters. The AWS-managed
  aws/ssm key needs no statement: its key policy lets the account's principals use it through SSM.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

ASSUME_ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


@dataclass(frozen=True)
class FunctionRoleArgs:
    name: str
    log_group_arn: pulumi.Input[str]
    secret_parameter_arns: Sequence[pulumi.Input[str]]
    kms_key_arn: str | None
    tags: Mapping[str, str]


def policy_document(
    log_group_arn: str, parameter_arns: Sequence[str], kms_key_arn: str | None
) -> dict[str, Any]:
    statements: list[dict[str, Any]] = [
        {
            "Sid": "OwnLogGroup",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [f"{log_group_arn}:*"],
        },
        {
            "Sid": "Tracing",
            "Effect": "Allow",
            "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
            "Resource": ["*"],
        },
        {
            "Sid": "ReadSecrets",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter"],
            "Resource": sorted(parameter_arns),
        },
    ]
    if kms_key_arn:
        statements.append(
            {
                "Sid": "DecryptSecrets",
                "Effect": "Allow",
                "Action": ["kms:Decrypt"],
                "Resource": [kms_key_arn],
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


class FunctionRole(pulumi.ComponentResource):
    arn: pulumi.Output[str]

    def __init__(
        self, resource_name: str, args: FunctionRoleArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("promptcache:index:FunctionRole", resource_name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            f"{resource_name}-role",
            name=args.name,
            description=f"Execution role of the Lambda function {args.name}",
            assume_role_policy=ASSUME_ROLE_POLICY,
            tags=dict(args.tags),
            opts=child,
        )
        document = pulumi.Output.all(args.log_group_arn, *args.secret_parameter_arns).apply(
            lambda arns: json.dumps(policy_document(arns[0], arns[1:], args.kms_key_arn))
        )
        self.policy = aws.iam.RolePolicy(
            f"{resource_name}-policy",
            name=f"{args.name}-least-privilege",
            role=self.role.id,
            policy=document,
            opts=child,
        )
        self.arn = self.role.arn
        self.register_outputs({"arn": self.arn})
