"""POST /chat, OpenAI's POST /v1/chat/completions, GET /v1/models, POST /v1/responses and GET
/v1/responses/{id}, and Anthropic's POST /v1/messages (and its count_tokens): answer a prompt from
the cache or the LLM. GET and
DELETE /entries/{id}: read or remove a stored answer. The admin API (/admin/entries,
/admin/flush, /admin/forget): the admin key's."""

from collections.abc import Iterator
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from promptcache import runtime
from promptcache.http import admin_api, anthropic_api, api, openai_api, resolver, responses_api, sse
from promptcache.http.observability import count, invocation, tracer

app = resolver.make_app(runtime.settings())


@app.post("/chat")
@tracer.capture_method
def chat() -> Response[str]:
    return api.chat(app.current_event, runtime.service())


@app.post("/v1/chat/completions")
@tracer.capture_method
def chat_completions() -> Response[str]:
    return openai_api.chat_completions(app.current_event, runtime.service())


@app.post("/v1/messages")
@tracer.capture_method
def messages() -> Response[str]:
    return anthropic_api.messages(app.current_event, runtime.service())


@app.post("/v1/messages/count_tokens")
@tracer.capture_method
def count_tokens() -> Response[str]:
    return anthropic_api.count_tokens(app.current_event, runtime.service())


@app.get("/v1/models")
@tracer.capture_method
def models() -> Response[str]:
    return openai_api.models(app.current_event, runtime.service())


@app.post("/v1/responses")
@tracer.capture_method
def responses() -> Response[str]:
    return responses_api.create(app.current_event, runtime.service())


@app.get("/v1/responses/<response_id>")
@tracer.capture_method
def response(response_id: str) -> Response[str]:
    return responses_api.retrieve(app.current_event, response_id, runtime.service())


@app.get("/entries/<entry_id>")
@tracer.capture_method
def entry(entry_id: str) -> Response[str]:
    return api.entry(app.current_event, entry_id, runtime.service())


@app.delete("/entries/<entry_id>")
@tracer.capture_method
def forget(entry_id: str) -> Response[str]:
    return api.forget(app.current_event, entry_id, runtime.service())


@app.get("/admin/entries")
@tracer.capture_method
def admin_entries() -> Response[str]:
    return admin_api.entries(app.current_event, runtime.service())


@app.post("/admin/flush")
@tracer.capture_method
def admin_flush() -> Response[str]:
    return admin_api.flush(app.current_event, runtime.service())


@app.post("/admin/forget")
@tracer.capture_method
def admin_forget() -> Response[str]:
    return admin_api.forget(app.current_event, runtime.service())


@invocation(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    count("requests")
    return app.resolve(event, context)


def stream_handler(
    event: dict[str, Any], context: LambdaContext
) -> tuple[dict[str, Any], Iterator[bytes] | None]:
    """``lambda_handler`` for a server that can send a body while it is produced (``promptcache
    serve``): the same resolver and routes, except that a streamed completion's event stream comes
    back live, as an iterator of byte chunks, instead of buffered in the result's body."""
    with sse.live_body() as slot:
        result = lambda_handler(event, context)
    return result, slot.take(result)
