"""The HTTP API (API Gateway v2, payload 2.0): CORS, one Lambda integration per function, the
product's routes, a ``$default`` route for every other request (the fallback function answers the
JSON 404/405), the ``$default`` stage with throttling and JSON access logs, and the permissions
that let each route, and only it, invoke its function.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "time": "$context.requestTime",
        "ip": "$context.identity.sourceIp",
        "method": "$context.httpMethod",
        "path": "$context.path",
        "routeKey": "$context.routeKey",
        "status": "$context.status",
        "protocol": "$context.protocol",
        "responseLength": "$context.responseLength",
        "latencyMs": "$context.responseLatency",
        "integrationLatencyMs": "$context.integrationLatency",
        "integrationStatus": "$context.integrationStatus",
        "integrationError": "$context.integrationErrorMessage",
        "error": "$context.error.message",
    },
    separators=(",", ":"),
)


@dataclass(frozen=True)
class FunctionTarget:
    name: pulumi.Input[str]
    invoke_arn: pulumi.Input[str]


@dataclass(frozen=True)
class HttpApiArgs:
    name: str
    #: (method, path) -> handler module, as in promptcache.routes.ROUTES.
    routes: Mapping[tuple[str, str], str]
    #: handler module -> its function.
    functions: Mapping[str, FunctionTarget]
    #: Handler module that answers requests no route matches (with a JSON 404 or 405).
    fallback: str
    cors_allow_origins: Sequence[str]
    cors_allow_headers: Sequence[str]
    cors_expose_headers: Sequence[str]
    throttle_rate_limit: int
    throttle_burst_limit: int
    integration_timeout_ms: int
    log_retention_days: int
    tags: Mapping[str, str]


def route_slug(method: str, path: str) -> str:
    return "-".join(filter(None, [method.lower(), *re.split(r"[^a-z0-9]+", path.lower())]))


class HttpApi(pulumi.ComponentResource):
    url: pulumi.Output[str]

    def __init__(
        self, resource_name: str, args: HttpApiArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("promptcache:index:HttpApi", resource_name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        for (method, path), module in args.routes.items():
            if method not in METHODS or not path.startswith("/"):
                raise ValueError(f"invalid route {method} {path}")
            if module not in args.functions:
                raise ValueError(f"route {method} {path} names {module!r}, which has no function")
        if args.fallback not in args.functions:
            raise ValueError(f"the fallback {args.fallback!r} has no function")
        methods = sorted({m for m, _ in args.routes} | {"OPTIONS"})

        self.api = aws.apigatewayv2.Api(
            f"{resource_name}-api",
            name=args.name,
            protocol_type="HTTP",
            description="promptcache HTTP API",
            cors_configuration=aws.apigatewayv2.ApiCorsConfigurationArgs(
                allow_origins=list(args.cors_allow_origins),
                allow_methods=methods,
                allow_headers=list(args.cors_allow_headers),
                expose_headers=list(args.cors_expose_headers),
                max_age=600,
            ),
            tags=dict(args.tags),
            opts=child,
        )
        self.integrations: dict[str, aws.apigatewayv2.Integration] = {}
        for module in sorted(set(args.routes.values()) | {args.fallback}):
            self.integrations[module] = aws.apigatewayv2.Integration(
                f"{resource_name}-{module}-integration",
                api_id=self.api.id,
                integration_type="AWS_PROXY",
                integration_method="POST",
                integration_uri=args.functions[module].invoke_arn,
                payload_format_version="2.0",
                timeout_milliseconds=args.integration_timeout_ms,
                description=f"Lambda {module}",
                opts=child,
            )

        # route key -> (handler module, the execute-api ARN suffix that this route invokes with;
        # the ARN holds the request's path, so a path parameter is a wildcard there)
        keys: dict[str, tuple[str, str]] = {
            f"{method} {path}": (module, f"{method}{re.sub(r'{[^}/]+}', '*', path)}")
            for (method, path), module in args.routes.items()
        }
        keys["$default"] = (args.fallback, "$default")
        self.routes: dict[str, aws.apigatewayv2.Route] = {}
        self.permissions: dict[str, aws.lambda_.Permission] = {}
        for key, (module, arn_suffix) in keys.items():
            slug = "default" if key == "$default" else route_slug(*key.split(" ", 1))
            self.routes[key] = aws.apigatewayv2.Route(
                f"{resource_name}-{slug}-route",
                api_id=self.api.id,
                route_key=key,
                target=self.integrations[module].id.apply(lambda i: f"integrations/{i}"),
                opts=child,
            )
            self.permissions[key] = aws.lambda_.Permission(
                f"{resource_name}-{slug}-invoke",
                action="lambda:InvokeFunction",
                function=args.functions[module].name,
                principal="apigateway.amazonaws.com",
                source_arn=pulumi.Output.concat(self.api.execution_arn, "/*/", arn_suffix),
                opts=child,
            )

        self.access_logs = aws.cloudwatch.LogGroup(
            f"{resource_name}-access-logs",
            name=f"/aws/apigateway/{args.name}",
            retention_in_days=args.log_retention_days,
            tags=dict(args.tags),
            opts=child,
        )
        self.stage = aws.apigatewayv2.Stage(
            f"{resource_name}-stage",
            api_id=self.api.id,
            name="$default",
            auto_deploy=True,
            default_route_settings=aws.apigatewayv2.StageDefaultRouteSettingsArgs(
                throttling_rate_limit=args.throttle_rate_limit,
                throttling_burst_limit=args.throttle_burst_limit,
                detailed_metrics_enabled=True,
            ),
            access_log_settings=aws.apigatewayv2.StageAccessLogSettingsArgs(
                destination_arn=self.access_logs.arn,
                format=ACCESS_LOG_FORMAT,
            ),
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.routes.values())),
        )
        self.url = self.api.api_endpoint
        self.register_outputs({"url": self.url})
