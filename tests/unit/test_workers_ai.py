"""adapters/workers_ai with httpx.MockTransport: request shapes, result checks, error mapping."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from promptcache import (
    LLM,
    ChatRequest,
    ConfigError,
    Embedder,
    EmbedderError,
    Message,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from promptcache._errors import UpstreamBadRequest, UpstreamPayloadTooLarge
from promptcache._types import ToolCall
from promptcache.adapters._http import CircuitBreaker, RetryPolicy
from promptcache.adapters.workers_ai import (
    DEFAULT_BGE_THRESHOLD,
    DEFAULT_LLM_MODEL,
    WorkersAIEmbedder,
    WorkersAILLM,
)

BASE = "https://cf.example.test/client/v4"
ACCOUNT = "acc123"
TOKEN = "tok-secret"
EMBED_PATH = f"/client/v4/accounts/{ACCOUNT}/ai/run/@cf/baai/bge-base-en-v1.5"
LLM_PATH = f"/client/v4/accounts/{ACCOUNT}/ai/run/{DEFAULT_LLM_MODEL}"

Handler = Callable[[httpx.Request], httpx.Response]


def ok(result: Any) -> dict[str, Any]:
    return {"result": result, "success": True, "errors": [], "messages": []}


def failed(code: int, message: str) -> dict[str, Any]:
    return {
        "result": None,
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
    }


class Recorder:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests]


def no_sleep(seconds: float) -> None:
    pass


def embedder(handler: Handler, **kwargs: Any) -> tuple[WorkersAIEmbedder, Recorder]:
    rec = Recorder(handler)
    client = httpx.Client(transport=httpx.MockTransport(rec))
    kwargs.setdefault("sleep", no_sleep)
    return WorkersAIEmbedder(client, ACCOUNT, TOKEN, BASE, **kwargs), rec


def llm(handler: Handler, **kwargs: Any) -> tuple[WorkersAILLM, Recorder]:
    rec = Recorder(handler)
    client = httpx.Client(transport=httpx.MockTransport(rec))
    kwargs.setdefault("sleep", no_sleep)
    return WorkersAILLM(client, ACCOUNT, TOKEN, BASE, **kwargs), rec


def vectors_for(texts: list[str], dim: int = 768) -> list[list[float]]:
    rng = np.random.default_rng(len(texts))
    return (rng.normal(size=(len(texts), dim)) * 3.0).tolist()  # deliberately not unit length


def embed_ok(request: httpx.Request) -> httpx.Response:
    texts = json.loads(request.content)["text"]
    return httpx.Response(200, json=ok({"shape": [len(texts), 768], "data": vectors_for(texts)}))


def request(prompt: str = "What is KV?", **kwargs: Any) -> ChatRequest:
    messages = (Message("system", "Be brief."), Message("user", prompt))
    return ChatRequest(messages=messages, model=kwargs.pop("model", DEFAULT_LLM_MODEL), **kwargs)


# ---------------------------------------------------------------------------- embedder
def test_embedder_protocol_and_identity() -> None:
    emb, _ = embedder(embed_ok)
    assert isinstance(emb, Embedder)
    assert emb.id == "cf-bge-base-en-v1.5"
    assert emb.dim == 768
    assert emb.default_threshold == DEFAULT_BGE_THRESHOLD == 0.90


def test_embed_sends_texts_with_auth_and_returns_unit_float32() -> None:
    emb, rec = embedder(embed_ok)
    out = emb.embed(["a", "b", "c"])
    assert out.dtype == np.float32 and out.shape == (3, 768)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    sent = rec.requests[0]
    assert sent.method == "POST" and sent.url.path == EMBED_PATH
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert rec.bodies == [{"text": ["a", "b", "c"]}]


def test_embed_batches_by_100_in_order() -> None:
    emb, rec = embedder(embed_ok)
    texts = [f"text {i}" for i in range(250)]
    out = emb.embed(texts)
    assert [len(b["text"]) for b in rec.bodies] == [100, 100, 50]
    assert [t for b in rec.bodies for t in b["text"]] == texts
    expected = np.asarray(vectors_for(texts[200:]))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(out[200:], expected, atol=1e-6)


def test_embed_nothing_sends_nothing() -> None:
    emb, rec = embedder(embed_ok)
    assert emb.embed([]).shape == (0, 768)
    assert rec.requests == []


@pytest.mark.parametrize(
    "result",
    [
        {"shape": [2, 384], "data": vectors_for(["a", "b"], 384)},  # wrong width
        {"shape": [1, 768], "data": vectors_for(["a"])},  # wrong count
        {"shape": [2, 768], "data": vectors_for(["a"])},  # shape lies about data
        {"shape": [2, 768], "data": [[0.0] * 768, [1.0] * 768]},  # a zero vector
        {"shape": [2, 768], "data": [[float("nan")] * 768, [1.0] * 768]},
        {"shape": [2, 768]},  # no data
        ["not", "an", "object"],
    ],
)
def test_embed_rejects_malformed_results(result: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.dumps(ok(result), allow_nan=True)
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    emb, _ = embedder(handler)
    with pytest.raises(EmbedderError):
        emb.embed(["a", "b"])


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(400, json=failed(5006, "Invalid input")),
        httpx.Response(401, json=failed(10000, "Authentication error")),
        httpx.Response(500, json=failed(3001, "Internal error")),
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json=failed(3007, "timeout")),  # success false with a 200
    ],
)
def test_embed_failures_are_embedder_errors(response: httpx.Response) -> None:
    emb, _ = embedder(lambda request: response)
    with pytest.raises(EmbedderError):
        emb.embed(["a"])


def test_embed_transport_failures_are_embedder_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    emb, rec = embedder(handler, policy=RetryPolicy(attempts=2))
    with pytest.raises(EmbedderError, match="timed out"):
        emb.embed(["a"])
    assert len(rec.requests) == 2


def test_embed_retries_a_503_then_succeeds() -> None:
    answers = iter([httpx.Response(503, json=failed(3040, "capacity"))])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or embed_ok(request)

    emb, rec = embedder(handler)
    assert emb.embed(["a"]).shape == (1, 768)
    assert len(rec.requests) == 2


def test_embed_breaker_open_fails_fast_as_embedder_error() -> None:
    now = [0.0]
    cb = CircuitBreaker(failure_threshold=2, reset_timeout=30, clock=lambda: now[0])
    emb, rec = embedder(lambda r: httpx.Response(503), policy=RetryPolicy(attempts=1), breaker=cb)
    for _ in range(2):
        with pytest.raises(EmbedderError):
            emb.embed(["a"])
    with pytest.raises(EmbedderError, match="circuit open"):
        emb.embed(["a"])
    assert len(rec.requests) == 2


def test_embedder_configuration_errors() -> None:
    client = httpx.Client(transport=httpx.MockTransport(embed_ok))
    with pytest.raises(ConfigError, match="dimension"):
        WorkersAIEmbedder(client, ACCOUNT, TOKEN, BASE, "@cf/some/new-embedder")
    custom = WorkersAIEmbedder(client, ACCOUNT, TOKEN, BASE, "@cf/some/new-embedder", dim=512)
    assert custom.dim == 512
    with pytest.raises(ConfigError, match="CLOUDFLARE_ACCOUNT_ID"):
        WorkersAIEmbedder(client, "../other", TOKEN, BASE)
    with pytest.raises(ConfigError, match="token"):
        WorkersAIEmbedder(client, ACCOUNT, "", BASE)
    with pytest.raises(ConfigError):
        WorkersAIEmbedder(client, ACCOUNT, TOKEN, BASE, "@cf/x/../../secrets", dim=8)


# ---------------------------------------------------------------------------- generation
def llm_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json=ok(
            {
                "response": "KV is a key-value store.",
                "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
            }
        ),
    )


def test_llm_protocol_and_generate() -> None:
    model, rec = llm(llm_ok)
    assert isinstance(model, LLM)
    completion = model.generate(request(max_tokens=64, temperature=0.2))
    assert completion.text == "KV is a key-value store."
    assert completion.model == DEFAULT_LLM_MODEL
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 6)
    sent = rec.requests[0]
    assert sent.url.path == LLM_PATH
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert rec.bodies[0] == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is KV?"},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
    }


def test_llm_omits_unset_parameters_and_uses_the_request_model() -> None:
    model, rec = llm(llm_ok)
    model.generate(request(model="@cf/meta/llama-3.3-70b-instruct-fp8-fast"))
    assert set(rec.bodies[0]) == {"messages"}
    assert rec.requests[0].url.path.endswith("/ai/run/@cf/meta/llama-3.3-70b-instruct-fp8-fast")


def test_llm_usage_missing_is_zero() -> None:
    model, _ = llm(lambda r: httpx.Response(200, json=ok({"response": "hi"})))
    assert model.generate(request()).usage.total_tokens == 0


# (HTTP status, Cloudflare code) -> (exception, client status, error code)
MAPPING = [
    (400, 5007, UpstreamBadRequest, 400, "model_not_found"),
    (413, 3006, UpstreamPayloadTooLarge, 413, "payload_too_large"),
    (400, 3006, UpstreamPayloadTooLarge, 413, "payload_too_large"),
    (408, 3007, UpstreamTimeout, 504, "upstream_timeout"),
    (200, 3007, UpstreamTimeout, 504, "upstream_timeout"),  # success false in a 200
    (429, 3036, UpstreamRateLimited, 429, "upstream_rate_limited"),
    (429, 3040, UpstreamRateLimited, 429, "upstream_rate_limited"),
    (503, 3040, UpstreamRateLimited, 429, "upstream_rate_limited"),
    (429, None, UpstreamRateLimited, 429, "upstream_rate_limited"),
    (504, None, UpstreamTimeout, 504, "upstream_timeout"),
    (500, 3001, UpstreamError, 502, "upstream_error"),
    (400, 5006, UpstreamBadRequest, 400, "upstream_bad_request"),  # invalid input: the request
    (404, 3042, UpstreamBadRequest, 400, "upstream_bad_request"),
    (422, None, UpstreamBadRequest, 400, "upstream_bad_request"),
    (401, 10000, UpstreamError, 502, "upstream_error"),
    (403, 10000, UpstreamError, 502, "upstream_error"),
    (502, None, UpstreamError, 502, "upstream_error"),
]


@pytest.mark.parametrize(("status", "code", "exc", "http", "error_code"), MAPPING)
def test_llm_error_mapping(
    status: int, code: int | None, exc: type[UpstreamError], http: int, error_code: str
) -> None:
    body = failed(code, f"cloudflare says {code}") if code else None
    response = httpx.Response(status, json=body) if body else httpx.Response(status, text="oops")
    model, _ = llm(lambda r: response, policy=RetryPolicy(attempts=1))
    with pytest.raises(exc) as info:
        model.generate(request())
    assert type(info.value) is exc
    assert (info.value.status, info.value.code) == (http, error_code)
    if code:
        assert str(code) in info.value.message


def test_no_such_model_names_the_model() -> None:
    model, _ = llm(lambda r: httpx.Response(400, json=failed(5007, "No such model")))
    with pytest.raises(UpstreamBadRequest) as info:
        model.generate(request(model="@cf/meta/llama-9-imaginary"))
    assert "@cf/meta/llama-9-imaginary" in info.value.message


def test_bad_credentials_say_which_settings_to_check() -> None:
    model, _ = llm(lambda r: httpx.Response(401, json=failed(10000, "Authentication error")))
    with pytest.raises(UpstreamError, match="CLOUDFLARE_API_TOKEN"):
        model.generate(request())


@pytest.mark.parametrize(
    "name", ["gpt-4o-mini", "@cf/meta/../../accounts/x", "@cf/a b/c", "@cf/x?y=1"]
)
def test_a_model_name_that_cannot_exist_is_refused_without_a_call(name: str) -> None:
    model, rec = llm(llm_ok)
    with pytest.raises(UpstreamBadRequest) as info:
        model.generate(request(model=name))
    assert info.value.status == 400 and info.value.code == "model_not_found"
    assert rec.requests == []


def test_quota_used_up_is_not_retried_but_capacity_is() -> None:
    model, rec = llm(
        lambda r: httpx.Response(429, json=failed(3036, "daily limit")),
        policy=RetryPolicy(attempts=3),
    )
    with pytest.raises(UpstreamRateLimited):
        model.generate(request())
    assert len(rec.requests) == 1

    model, rec = llm(
        lambda r: httpx.Response(429, json=failed(3040, "out of capacity")),
        policy=RetryPolicy(attempts=3),
    )
    with pytest.raises(UpstreamRateLimited):
        model.generate(request())
    assert len(rec.requests) == 3


def test_a_model_timeout_is_not_retried() -> None:
    model, rec = llm(
        lambda r: httpx.Response(408, json=failed(3007, "timeout")), policy=RetryPolicy(attempts=3)
    )
    with pytest.raises(UpstreamTimeout):
        model.generate(request())
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    ("exc", "mapped"),
    [
        (httpx.ReadTimeout, UpstreamTimeout),
        (httpx.ConnectTimeout, UpstreamTimeout),
        (httpx.ConnectError, UpstreamError),
        (httpx.RemoteProtocolError, UpstreamError),
    ],
)
def test_llm_transport_errors(exc: type[Exception], mapped: type[UpstreamError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)  # type: ignore[call-arg]

    model, _ = llm(handler, policy=RetryPolicy(attempts=2))
    with pytest.raises(mapped):
        model.generate(request())


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>"),
        httpx.Response(200, json=ok({"response": 42})),
        httpx.Response(200, json=ok(None)),
        httpx.Response(200, json=ok({"response": "x", "usage": {"prompt_tokens": "many"}})),
    ],
)
def test_llm_unreadable_answers(response: httpx.Response) -> None:
    model, _ = llm(lambda r: response)
    with pytest.raises(UpstreamError, match="unreadable"):
        model.generate(request())


def test_llm_breaker_open_is_502_upstream_unavailable_without_a_call() -> None:
    cb = CircuitBreaker(failure_threshold=1, reset_timeout=60)
    model, rec = llm(lambda r: httpx.Response(500), policy=RetryPolicy(attempts=1), breaker=cb)
    with pytest.raises(UpstreamError):
        model.generate(request())
    with pytest.raises(UpstreamError) as info:
        model.generate(request())
    assert info.value.code == "upstream_unavailable" and info.value.status == 502
    assert len(rec.requests) == 1


# ---------------------------------------------------------------------------- streaming
def sse(*events: str) -> bytes:
    return "".join(f"data: {e}\n\n" for e in events).encode()


def sse_response(body: bytes | Iterator[bytes]) -> httpx.Response:
    content: Any = body if isinstance(body, bytes) else httpx.ByteStream(b"".join(body))
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content)


def drain(gen: Any) -> tuple[list[str], Any]:
    out = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration as stop:
            return out, stop.value


def test_stream_yields_deltas_and_returns_usage() -> None:
    body = sse(
        json.dumps({"response": "Hello", "p": "ab"}),
        json.dumps({"response": ","}),
        json.dumps({"response": " world"}),
        json.dumps({"response": "", "usage": {"prompt_tokens": 5, "completion_tokens": 3}}),
        "[DONE]",
    )
    model, rec = llm(lambda r: sse_response(body))
    deltas, completion = drain(model.stream(request(max_tokens=10)))
    assert deltas == ["Hello", ",", " world"]
    assert completion.model == DEFAULT_LLM_MODEL
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 3)
    assert rec.bodies[0]["stream"] is True and rec.bodies[0]["max_tokens"] == 10


def test_stream_is_lazy() -> None:
    model, rec = llm(lambda r: sse_response(sse("[DONE]")))
    gen = model.stream(request())
    assert rec.requests == []
    assert drain(gen)[0] == []
    assert len(rec.requests) == 1


def test_stream_without_done_is_an_upstream_error() -> None:
    model, _ = llm(lambda r: sse_response(sse(json.dumps({"response": "Hel"}))))
    gen = model.stream(request())
    assert next(gen) == "Hel"
    with pytest.raises(UpstreamError, match="before \\[DONE\\]"):
        next(gen)


def test_stream_errors_are_mapped_on_first_next() -> None:
    model, _ = llm(lambda r: httpx.Response(408, json=failed(3007, "timeout")))
    with pytest.raises(UpstreamTimeout):
        next(model.stream(request()))
    model, _ = llm(lambda r: httpx.Response(400, json=failed(5007, "no such model")))
    with pytest.raises(UpstreamBadRequest):
        next(model.stream(request()))


def test_stream_of_garbage_is_an_upstream_error() -> None:
    model, _ = llm(lambda r: sse_response(b"data: {not json\n\n"))
    with pytest.raises(UpstreamError, match="unreadable"):
        next(model.stream(request()))


def test_stream_read_timeout_midway_is_upstream_timeout() -> None:
    class Breaks(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield sse(json.dumps({"response": "partial"}))
            raise httpx.ReadTimeout("stalled")

    model, _ = llm(
        lambda r: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=Breaks()
        )
    )
    gen = model.stream(request())
    assert next(gen) == "partial"
    with pytest.raises(UpstreamTimeout):
        next(gen)


def test_stream_closing_early_closes_the_response() -> None:
    closed: list[bool] = []

    class Tracked(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield sse(json.dumps({"response": "a"}), json.dumps({"response": "b"}), "[DONE]")

        def close(self) -> None:
            closed.append(True)

    model, _ = llm(
        lambda r: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=Tracked()
        )
    )
    gen = model.stream(request())
    assert next(gen) == "a"
    gen.close()
    assert closed


def test_stream_accepts_a_non_streamed_json_answer() -> None:
    model, _ = llm(llm_ok)
    deltas, completion = drain(model.stream(request()))
    assert deltas == ["KV is a key-value store."]
    assert completion.usage.completion_tokens == 6


def test_stream_retries_before_the_first_delta() -> None:
    answers = iter([httpx.Response(503)])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or sse_response(sse(json.dumps({"response": "ok"}), "[DONE]"))

    model, rec = llm(handler)
    assert drain(model.stream(request()))[0] == ["ok"]
    assert len(rec.requests) == 2


def test_the_sampling_fields_workers_ai_takes_are_forwarded() -> None:
    model, rec = llm(llm_ok)
    options = {"seed": 7, "top_p": 0.5, "frequency_penalty": 0.1, "presence_penalty": 0.2}
    model.generate(ChatRequest(messages=(Message("user", "hi"),), model="", options=options))
    sent = json.loads(rec.requests[0].content)
    assert {k: sent[k] for k in options} == options


# ---------------------------------------------------------------------------- tools, JSON mode
CHAT_PATH = f"/client/v4/accounts/{ACCOUNT}/ai/v1/chat/completions"
TOOL_MODEL = "@hf/nousresearch/hermes-2-pro-mistral-7b"
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def chat_completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    """Workers AI's OpenAI-compatible answer (OpenAI's ``chat.completion``, no envelope)."""
    return {
        "id": "id-1",
        "object": "chat.completion",
        "created": 1,
        "model": TOOL_MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39},
    }


CALL = {
    "id": "chatcmpl-tool-1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
}


def calls_weather(request: httpx.Request) -> httpx.Response:
    message = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    return httpx.Response(200, json=chat_completion(message, "tool_calls"))


def ask(*messages: Message, **options: Any) -> ChatRequest:
    return ChatRequest(messages=messages, model=TOOL_MODEL, max_tokens=50, options=options)


def test_tools_go_to_the_openai_compatible_endpoint_as_sent() -> None:
    model, rec = llm(calls_weather)
    completion = model.generate(ask(Message("user", "Weather in Paris?"), tools=[WEATHER]))
    assert rec.requests[0].url.path == CHAT_PATH
    assert rec.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert rec.bodies[0] == {
        "model": TOOL_MODEL,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "max_tokens": 50,
        "tools": [WEATHER],
    }
    assert completion.tool_calls == (ToolCall("weather", '{"city": "Paris"}', "chatcmpl-tool-1"),)
    assert completion.finish_reason == "tool_calls" and completion.text == ""
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (30, 9)


def test_a_tool_loop_turn_is_sent_in_openais_shape() -> None:
    def answers(request: httpx.Request) -> httpx.Response:
        message = {"role": "assistant", "content": "It is 12C in Paris."}
        return httpx.Response(200, json=chat_completion(message))

    model, rec = llm(answers)
    turns = (
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=(ToolCall("weather", '{"city":"Paris"}', "c1"),)),
        Message("tool", "12C", tool_call_id="c1"),
    )
    completion = model.generate(ask(*turns, tools=[WEATHER], tool_choice="auto"))
    assert completion.text == "It is 12C in Paris." and completion.tool_calls == ()
    sent = rec.bodies[0]
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert sent["messages"][2] == {"role": "tool", "content": "12C", "tool_call_id": "c1"}
    assert sent["tool_choice"] == "auto"


@pytest.mark.parametrize(
    "request_",
    [
        ask(Message("user", "India?"), response_format={"type": "json_object"}),
        ask(
            Message("user", "India?"),
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "c", "schema": {"type": "object"}},
            },
        ),
        ask(Message("user", "hi"), stop=["\n"]),  # a field /ai/run does not take
        ask(
            Message(
                "user",
                "What is this?",
                parts=({"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},),
            )
        ),
    ],
)
def test_what_ai_run_cannot_carry_goes_whole_to_the_openai_endpoint(request_: ChatRequest) -> None:
    def answers(request: httpx.Request) -> httpx.Response:
        message = {"role": "assistant", "content": '{"name": "India"}'}
        return httpx.Response(200, json=chat_completion(message))

    model, rec = llm(answers)
    assert model.generate(request_).text == '{"name": "India"}'
    assert rec.requests[0].url.path == CHAT_PATH
    for name, value in request_.options.items():
        assert rec.bodies[0][name] == value  # as the client sent it, never dropped
    assert rec.bodies[0]["messages"] == [m.as_dict() for m in request_.messages]


def test_plain_text_stays_on_ai_run() -> None:
    model, rec = llm(llm_ok)
    model.generate(ChatRequest(messages=(Message("user", "hi"),), model="", options={"seed": 1}))
    assert rec.requests[0].url.path == LLM_PATH


@pytest.mark.parametrize(
    "response",
    [
        # the documented envelope, as Workers AI answers a model without function calling
        httpx.Response(400, json=failed(5006, "this model does not support function calling")),
        # an OpenAI-shaped error body
        httpx.Response(
            400, json={"error": {"message": "this model does not support function calling"}}
        ),
    ],
)
def test_a_refused_field_is_a_400_with_the_upstreams_message_not_retried(
    response: httpx.Response,
) -> None:
    model, rec = llm(lambda r: response)
    with pytest.raises(UpstreamBadRequest) as info:
        model.generate(ask(Message("user", "Weather?"), tools=[WEATHER]))
    assert info.value.status == 400 and "does not support function calling" in info.value.message
    assert TOOL_MODEL in info.value.message
    assert len(rec.requests) == 1


def test_the_openai_endpoint_maps_errors_as_ai_run_does() -> None:
    model, _ = llm(lambda r: httpx.Response(400, json=failed(5007, "No such model")))
    with pytest.raises(UpstreamBadRequest) as info:
        model.generate(ask(Message("user", "Weather?"), tools=[WEATHER]))
    assert info.value.code == "model_not_found"
    limited, rec = llm(lambda r: httpx.Response(429, json=failed(3036, "daily allocation")))
    with pytest.raises(UpstreamRateLimited):
        limited.generate(ask(Message("user", "Weather?"), tools=[WEATHER]))
    assert len(rec.requests) == 1  # a used-up allocation is not retried


def test_the_openai_endpoint_checks_the_model_name_without_a_call() -> None:
    model, rec = llm(calls_weather)
    bad = ChatRequest(
        messages=(Message("user", "x"),), model="../../zones", options={"tools": [WEATHER]}
    )
    with pytest.raises(UpstreamBadRequest):
        model.generate(bad)
    assert rec.requests == []


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, text="<html>"),
        httpx.Response(200, json=ok({"response": "an envelope, not a chat.completion"})),
    ],
)
def test_an_unreadable_openai_answer_is_an_upstream_error(response: httpx.Response) -> None:
    model, _ = llm(lambda r: response)
    with pytest.raises(UpstreamError, match="unreadable"):
        model.generate(ask(Message("user", "Weather?"), tools=[WEATHER]))


def test_a_streamed_tool_call_is_joined_from_its_fragments() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return json.dumps(
            {"object": "chat.completion.chunk", "model": TOOL_MODEL, "choices": [choice]}
        )

    head = {
        "index": 0,
        "id": "c9",
        "type": "function",
        "function": {"name": "weather", "arguments": ""},
    }
    body = sse(
        chunk({"role": "assistant", "content": "Let me look. "}),
        chunk({"tool_calls": [head]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    model, rec = llm(lambda r: sse_response(body))
    deltas, completion = drain(model.stream(ask(Message("user", "Weather?"), tools=[WEATHER])))
    assert deltas == ["Let me look. "]
    assert completion.tool_calls == (ToolCall("weather", '{"city": "Paris"}', "c9"),)
    assert completion.finish_reason == "tool_calls"
    assert rec.requests[0].url.path == CHAT_PATH and rec.bodies[0]["stream"] is True


def test_a_whole_answer_to_a_streamed_request_is_relayed_as_one_delta() -> None:
    """JSON mode does not stream on Workers AI: a whole ``chat.completion`` is one delta."""
    message = {"role": "assistant", "content": '{"name": "India"}'}
    model, _ = llm(lambda r: httpx.Response(200, json=chat_completion(message)))
    request_ = ask(Message("user", "India?"), response_format={"type": "json_object"})
    deltas, completion = drain(model.stream(request_))
    assert deltas == ['{"name": "India"}'] and completion.text == ""
    assert completion.usage.completion_tokens == 9


def test_a_broken_openai_stream_is_an_upstream_error() -> None:
    body = sse(json.dumps({"choices": [{"index": 0, "delta": {"content": "Hal"}}]}))
    model, _ = llm(lambda r: sse_response(body))
    gen = model.stream(ask(Message("user", "Weather?"), tools=[WEATHER]))
    with pytest.raises(UpstreamError, match="ended before the answer was complete"):
        drain(gen)
