"""The streaming endpoint (optional): ``promptcache serve`` in one more Lambda function, behind the
AWS Lambda Web Adapter and a public Lambda Function URL in ``RESPONSE_STREAM`` mode, so that a
``"stream": true`` answer reaches the client as the model writes it. The HTTP API cannot do this:
it buffers every response until the function returns.

- The function (a ``HandlerFunction``: its own log group and least-privilege role): the same code
  zip and core layer as the others, plus the adapter's layer. Its handler is ``run.sh`` from the
  zip, which the adapter's ``/opt/bootstrap`` (``AWS_LAMBDA_EXEC_WRAPPER``) executes; the adapter
  then waits for ``/health`` to answer and forwards every request to the server, streaming the
  response body back chunk by chunk.
- The URL: authorization ``NONE`` (the application itself checks API keys when the stack has
  them), CORS from the stack's origins.
- Two resource-based permissions, both needed by a public Function URL created since October 2025:
  ``lambda:InvokeFunctionUrl`` for auth type ``NONE``, and ``lambda:InvokeFunction`` restricted to
  invocations through a Function URL (``lambda:InvokedViaFunctionUrl``), so nobody can invoke the
  function directly. The URL is created after them: it answers as soon as it exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pulumi
import pulumi_aws as aws

from infra.build import STARTUP_SCRIPT
from infra.components.function import HandlerFunction, HandlerFunctionArgs

#: The AWS account that publishes the Lambda Web Adapter layers (aws partition).
WEB_ADAPTER_ACCOUNT = "753240598075"
#: Lambda architecture -> the adapter's layer name.
WEB_ADAPTER_LAYERS = {"arm64": "LambdaAdapterLayerArm64", "x86_64": "LambdaAdapterLayerX86"}
#: Where ``run.sh`` starts the server (loopback only) and the adapter forwards requests.
ADAPTER_PORT = 8080
READINESS_CHECK_PATH = "/health"
#: ``/health`` answers 200, or 503 while the store is unreachable: either way the server answers
#: requests (the cache is bypassed, the model still answers), so both count as ready.
READINESS_CHECK_HEALTHY_STATUS = "200,503"


def web_adapter_layer_arn(region: str, architecture: str, version: int) -> str:
    """The public Lambda Web Adapter layer for ``region`` and ``architecture``."""
    if architecture not in WEB_ADAPTER_LAYERS:
        raise ValueError(f"no Lambda Web Adapter layer for architecture {architecture!r}")
    layer = WEB_ADAPTER_LAYERS[architecture]
    return f"arn:aws:lambda:{region}:{WEB_ADAPTER_ACCOUNT}:layer:{layer}:{version}"


def adapter_environment(port: int = ADAPTER_PORT) -> dict[str, str]:
    """The adapter's settings (read by the layer's bootstrap and extension, and by ``run.sh`` for
    the port)."""
    return {
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
        "AWS_LWA_INVOKE_MODE": "response_stream",
        "AWS_LWA_PORT": str(port),
        "AWS_LWA_READINESS_CHECK_PATH": READINESS_CHECK_PATH,
        "AWS_LWA_READINESS_CHECK_HEALTHY_STATUS": READINESS_CHECK_HEALTHY_STATUS,
        # The server turns metrics off unless told otherwise; here its stdout is the function's
        # log, where CloudWatch reads the embedded metrics like the other functions'.
        "POWERTOOLS_METRICS_DISABLED": "false",
    }


@dataclass(frozen=True)
class StreamingEndpointArgs:
    #: The function as every handler function is made (physical name, e.g.
    #: ``promptcache-dev-chat-stream``, code, layer, the application's settings, role inputs);
    #: its module, handler, extra layer and the adapter's settings are set here.
    function: HandlerFunctionArgs
    adapter_layer_arn: str
    cors_allow_origins: Sequence[str]
    cors_allow_methods: Sequence[str]
    cors_allow_headers: Sequence[str]
    cors_expose_headers: Sequence[str]


class StreamingEndpoint(pulumi.ComponentResource):
    url: pulumi.Output[str]
    function_name: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        args: StreamingEndpointArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("promptcache:index:StreamingEndpoint", resource_name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        clash = sorted(set(args.function.environment) & set(adapter_environment()))
        if clash:
            raise ValueError(f"the streaming function's adapter settings are fixed: {clash}")
        self.function = HandlerFunction(
            args.function.name,
            replace(
                args.function,
                module="chat-stream",
                handler=STARTUP_SCRIPT,
                extra_layer_arns=[*args.function.extra_layer_arns, args.adapter_layer_arn],
                environment={**args.function.environment, **adapter_environment()},
            ),
            opts=child,
        )
        self.url_permission = aws.lambda_.Permission(
            f"{resource_name}-public-url",
            action="lambda:InvokeFunctionUrl",
            function=self.function.name,
            principal="*",
            function_url_auth_type="NONE",
            opts=child,
        )
        self.invoke_permission = aws.lambda_.Permission(
            f"{resource_name}-public-invoke",
            action="lambda:InvokeFunction",
            function=self.function.name,
            principal="*",
            invoked_via_function_url=True,
            opts=child,
        )
        self.function_url = aws.lambda_.FunctionUrl(
            f"{resource_name}-url",
            function_name=self.function.name,
            authorization_type="NONE",
            invoke_mode="RESPONSE_STREAM",
            cors=aws.lambda_.FunctionUrlCorsArgs(
                allow_origins=list(args.cors_allow_origins),
                allow_methods=list(args.cors_allow_methods),
                allow_headers=list(args.cors_allow_headers),
                expose_headers=list(args.cors_expose_headers),
                max_age=600,
            ),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.url_permission, self.invoke_permission]
            ),
        )
        # Lambda gives the URL with a trailing slash; clients append /v1/chat/completions.
        self.url = self.function_url.function_url.apply(lambda u: u.rstrip("/"))
        self.function_name = self.function.name
        self.register_outputs({"url": self.url, "function_name": self.function_name})
