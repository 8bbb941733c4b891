from __future__ import annotations

import json

import httpx
import pytest

from promptcache import ChatRequest, Message, UpstreamError, UpstreamRateLimited, UpstreamTimeout
from promptcache._errors import UpstreamBadRequest, UpstreamPayloadTooLarge
from promptcache.adapters.openai_compat import OpenAICompatibleLLM

REQ = ChatRequest(
    messages=(Message("system", "s"), Message("user", "hi")),
    model="m",
    max_tokens=5,
    temperature=0.0,
)


def llm(handler) -> OpenAICompatibleLLM:  # type: ignore[no-untyped-def]
    return OpenAICompatibleLLM(
        httpx.Client(transport=httpx.MockTransport(handler)), base_url="http://up/v1", api_key="k"
    )


def test_request_and_answer() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["auth"] = request.headers["authorization"]
        seen["body"] = json.loads(request.content)
        return httpx.Response(
            200,
            json={
                "model": "m-1",
                "choices": [{"message": {"content": "yo"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            },
        )

    completion = llm(handler).generate(REQ)
    assert (
        completion.text == "yo" and completion.model == "m-1" and completion.usage.total_tokens == 4
    )
    assert seen["url"] == "http://up/v1/chat/completions" and seen["auth"] == "Bearer k"
    assert seen["body"] == {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "temperature": 0.0,
    }


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(429, json={"error": {"message": "slow down"}}), UpstreamRateLimited),
        (httpx.Response(504, text="gateway timeout"), UpstreamTimeout),
        (httpx.Response(500, json={"error": "boom"}), UpstreamError),
        (httpx.Response(404, json={"error": {"message": "model not found"}}), UpstreamBadRequest),
        (httpx.Response(400, json={"error": {"message": "too many tokens"}}), UpstreamBadRequest),
        (httpx.Response(413, text="too large"), UpstreamPayloadTooLarge),
        (httpx.Response(200, json={"choices": []}), UpstreamError),
        (httpx.Response(200, text="not json"), UpstreamError),
    ],
)
def test_errors_are_mapped(response: httpx.Response, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        llm(lambda request: response).generate(REQ)
    assert type(info.value) is error


def test_refused_credentials_are_ours_not_the_clients() -> None:
    with pytest.raises(UpstreamError, match="OPENAI_API_KEY") as info:
        llm(lambda request: httpx.Response(401, json={"error": {"message": "bad key"}})).generate(
            REQ
        )
    assert info.value.status == 502


def test_transport_errors_are_mapped() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamTimeout):
        llm(timeout).generate(REQ)
    with pytest.raises(UpstreamError, match="unreachable"):
        llm(refused).generate(REQ)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "12"}, 12),
        ({"Retry-After": "0.2"}, 1),
        ({}, 5),
        ({"Retry-After": "soon"}, 5),
    ],
)
def test_a_429_carries_the_upstreams_retry_after(headers: dict[str, str], seconds: int) -> None:
    response = httpx.Response(429, json={"error": {"message": "slow down"}}, headers=headers)
    with pytest.raises(UpstreamRateLimited) as info:
        llm(lambda request: response).generate(REQ)
    assert info.value.retry_after == seconds
