"""LLM adapter for any OpenAI-compatible chat completions server (OpenAI, Ollama, vLLM, llama.cpp).

Configured with the OpenAI SDK's own variables: OPENAI_BASE_URL and OPENAI_API_KEY.
"""

from __future__ import annotations

from typing import Any

import httpx

from .._errors import UpstreamError, UpstreamRateLimited, UpstreamTimeout
from .._types import ChatRequest, Completion, Usage

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or body)[:300]


class OpenAICompatibleLLM:
    def __init__(self, client: httpx.Client, *, base_url: str = "", api_key: str = "") -> None:
        self._client = client
        self._url = (base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @property
    def name(self) -> str:
        return f"openai-compatible ({self._url.rsplit('/chat/completions', 1)[0]})"

    def payload(self, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [m.as_dict() for m in request.messages],
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if stream:
            body["stream"] = True
        return body

    def generate(self, request: ChatRequest) -> Completion:
        try:
            response = self._client.post(self._url, json=self.payload(request), headers=self._headers)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"the LLM upstream timed out: {exc}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the LLM upstream is unreachable: {exc}") from exc
        if response.status_code == 429:
            raise UpstreamRateLimited(f"the LLM upstream is rate limiting: {_error_message(response)}")
        if response.status_code in (408, 504):
            raise UpstreamTimeout(f"the LLM upstream timed out: {_error_message(response)}")
        if response.status_code >= 400:
            raise UpstreamError(
                f"the LLM upstream answered {response.status_code}: {_error_message(response)}"
            )
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("message.content is not a string")
            usage = body.get("usage") or {}
            return Completion(
                text=text,
                model=str(body.get("model") or request.model),
                usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
                finish_reason=str(choice.get("finish_reason") or "stop"),
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise UpstreamError(f"the LLM upstream sent an unreadable answer: {exc}") from exc
