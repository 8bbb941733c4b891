"""A loopback stand-in for Cloudflare Workers AI's REST API (``/accounts/{id}/ai/run/{model}``).

- Embeddings (bge models): vectors come from a real sentence embedder (the project's
  LocalEmbedder, 384-d), repeated to the model's width and renormalized. Repeating a unit vector
  k times and dividing by sqrt(k) preserves every cosine exactly, so paraphrases stay near.
- Generation: a deterministic answer derived from the prompt, labelled as coming from this
  stand-in; ``max_tokens`` truncates it (in words); usage counts words. ``stream: true`` answers
  in SSE: ``data: {"response": "..."}`` events, a last event carrying ``usage``, ``data: [DONE]``.
- Reranker (``@cf/baai/bge-reranker-base``): ``{"query", "contexts": [{"text"}], "top_k"}`` ->
  ``{"response": [{"id", "score"}]}``, best first, at most ``top_k``; the scores come from a real
  cross-encoder (the project's LocalVerifier, probabilities in [0, 1]), loaded on first use.
- Errors Cloudflare documents: unknown model -> 400 code 5007; invalid input -> 400 code 5006;
  more than 100 texts -> 400 code 5006. Others are injected with ``fail(...)``; ``delay`` and
  ``stream_delay`` slow it down; ``calls`` counts requests per model.
- The OpenAI-compatible endpoint (``POST /ai/v1/chat/completions``, the model in the body): takes
  OpenAI's chat completions request and answers OpenAI's ``chat.completion`` (no envelope) or,
  streamed, its ``chat.completion.chunk`` events and ``data: [DONE]``. Function calling works on
  ``FUNCTION_CALLING_MODELS`` only (Cloudflare lists it per model): a request with ``tools`` whose
  last turn is a user turn is answered with one call of each tool (arguments ``{"question":
  ...}``), ``finish_reason: tool_calls``; a turn ending in tool results gets text naming them.
  JSON mode (``response_format`` ``json_object`` or ``json_schema``) works on
  ``JSON_MODE_MODELS`` (Cloudflare's documented list) and, as documented, not streamed. Where a
  model lacks the feature the answer is a 400 in Cloudflare's envelope; its code and wording are
  this stand-in's own (Cloudflare documents neither).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from .cloudflare_standin import CloudflareStandIn, Reply, Request, envelope, error

EMBEDDING_MODELS = {
    "@cf/baai/bge-small-en-v1.5": 384,
    "@cf/baai/bge-base-en-v1.5": 768,
}
TEXT_MODELS = {
    "@cf/meta/llama-3.1-8b-instruct",
    "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
    "@hf/nousresearch/hermes-2-pro-mistral-7b",
}
FUNCTION_CALLING_MODELS = {
    "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
    "@hf/nousresearch/hermes-2-pro-mistral-7b",
}
JSON_MODE_MODELS = TEXT_MODELS  # all three are on Cloudflare's JSON mode list
CHAT_PATH = "/ai/v1/chat/completions"
RERANKER_MODELS = {"@cf/baai/bge-reranker-base"}
DEFAULT_MAX_TOKENS = 256


def _words(text: str) -> int:
    return len(text.split())


class WorkersAIStandIn(CloudflareStandIn):
    def __init__(self, embedder: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.embedder = embedder
        self.calls: Counter[str] = Counter()
        self.texts_embedded = 0
        self.bodies: list[dict[str, Any]] = []
        self.stream_delay = 0.0
        self._reranker: Any = None

    def route(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == CHAT_PATH:
            return self._chat_completions(request)
        if request.method != "POST" or not request.path.startswith("/ai/run/"):
            return Reply(404, json_body=error(7000, f"No route for that URI: {request.path}"))
        model = request.path[len("/ai/run/") :]
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return Reply(400, json_body=error(5006, "Invalid input: body is not JSON"))
        with self._lock:
            self.calls[model] += 1
            self.bodies.append(body)
        if model in EMBEDDING_MODELS:
            return self._embed(model, body)
        if model in TEXT_MODELS:
            return self._generate(model, body)
        if model in RERANKER_MODELS:
            return self._rerank(body)
        return Reply(400, json_body=error(5007, f"No such model {model} or task"))

    # ------------------------------------------------------------------ embeddings
    def _embed(self, model: str, body: Any) -> Reply:
        text = body.get("text") if isinstance(body, dict) else None
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            message = "Invalid input: 'text' must be a string or a list of strings"
            return Reply(400, json_body=error(5006, message))
        if len(texts) > 100:
            return Reply(400, json_body=error(5006, "Invalid input: at most 100 texts per call"))
        width = EMBEDDING_MODELS[model]
        base = np.asarray(self.embedder.embed(texts), dtype=np.float64)
        repeat = width // base.shape[1]
        vectors = np.tile(base, (1, repeat)) / np.sqrt(repeat)
        with self._lock:
            self.texts_embedded += len(texts)
        result = {"shape": [len(texts), width], "data": vectors.tolist(), "pooling": "mean"}
        return Reply(json_body=envelope(result))

    # ------------------------------------------------------------------ reranker
    def _rerank(self, body: Any) -> Reply:
        query = body.get("query") if isinstance(body, dict) else None
        contexts = body.get("contexts") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query:
            return Reply(400, json_body=error(5006, "Invalid input: 'query' must be a string"))
        if (
            not isinstance(contexts, list)
            or not contexts
            or not all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in contexts)
            or not all(c["text"] for c in contexts)
        ):
            message = "Invalid input: 'contexts' must be a list of {text} objects"
            return Reply(400, json_body=error(5006, message))
        top_k = body.get("top_k", len(contexts))
        if type(top_k) is not int or top_k < 1:
            return Reply(400, json_body=error(5006, "Invalid input: top_k"))
        with self._lock:
            if self._reranker is None:
                from promptcache.adapters.local_verifier import LocalVerifier

                self._reranker = LocalVerifier(timeout=60.0)
        scores = self._reranker.scores(query, [c["text"] for c in contexts])
        ranked = sorted(range(len(scores)), key=lambda i: -scores[i])[:top_k]
        return Reply(
            json_body=envelope({"response": [{"id": i, "score": scores[i]} for i in ranked]})
        )

    # ------------------------------------------------------------------ generation
    def _generate(self, model: str, body: Any) -> Reply:
        if not isinstance(body, dict):
            return Reply(400, json_body=error(5006, "Invalid input: body must be an object"))
        messages = body.get("messages")
        if isinstance(messages, list) and messages:
            if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
                return Reply(400, json_body=error(5006, "Invalid input: malformed messages"))
            question = next(
                (m["content"] for m in reversed(messages) if m.get("role") == "user"),
                messages[-1]["content"],
            )
            prompt_tokens = sum(_words(m["content"]) for m in messages)
        elif isinstance(body.get("prompt"), str):
            question = body["prompt"]
            prompt_tokens = _words(question)
        else:
            return Reply(400, json_body=error(5006, "Invalid input: 'messages' or 'prompt' needed"))
        max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return Reply(400, json_body=error(5006, "Invalid input: max_tokens"))
        words = f"[Workers AI stand-in, {model}] You asked: {question}".split()[:max_tokens]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        if body.get("stream") is True:
            return Reply(content_type="text/event-stream", chunks=lambda: self._sse(words, usage))
        return Reply(json_body=envelope({"response": " ".join(words), "usage": usage}))

    def _sse(self, words: list[str], usage: dict[str, int]) -> Iterator[str]:
        for i, word in enumerate(words):
            if self.stream_delay:
                time.sleep(self.stream_delay)
            piece = word if i == 0 else " " + word
            yield f"data: {json.dumps({'response': piece, 'p': 'abcdef'[: i % 6]})}\n\n"
        yield f"data: {json.dumps({'response': '', 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    # ------------------------------------------------------------------ OpenAI-compatible
    def _chat_completions(self, request: Request) -> Reply:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return Reply(400, json_body=error(5006, "Invalid input: body is not JSON"))
        model = body.get("model") if isinstance(body, dict) else None
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(model, str) or not isinstance(messages, list) or not messages:
            return Reply(400, json_body=error(5006, "Invalid input: 'model' and 'messages'"))
        with self._lock:
            self.calls[model] += 1
            self.bodies.append(body)
        if model not in TEXT_MODELS:
            return Reply(400, json_body=error(5007, f"No such model {model} or task"))
        tools, fmt = body.get("tools") or [], body.get("response_format")
        stream = body.get("stream") is True
        if tools and model not in FUNCTION_CALLING_MODELS:
            message = f"Invalid input: {model} does not support function calling (tools)"
            return Reply(400, json_body=error(5006, message))
        if fmt is not None and model not in JSON_MODE_MODELS:
            return Reply(400, json_body=error(5006, f"Invalid input: {model} has no JSON mode"))
        if fmt is not None and stream:
            return Reply(
                400, json_body=error(5006, "JSON Mode currently doesn't support streaming")
            )
        last = messages[-1]
        question = _text(last.get("content")) if isinstance(last, dict) else ""
        text, calls = "", []
        if tools and last.get("role") == "user":
            calls = [
                {
                    "id": f"chatcmpl-tool-{i}",
                    "type": "function",
                    "function": {
                        "name": tool["function"]["name"],
                        "arguments": json.dumps({"question": question}),
                    },
                }
                for i, tool in enumerate(tools)
            ]
        elif last.get("role") == "tool":
            results = [_text(m.get("content")) for m in messages if m.get("role") == "tool"]
            text = f"[Workers AI stand-in, {model}] The tools answered: {'; '.join(results)}"
        elif isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
            text = json.dumps(_record(fmt, question))
        else:
            limit = body.get("max_tokens") or body.get("max_completion_tokens") or 256
            words = f"[Workers AI stand-in, {model}] You asked: {question}".split()[:limit]
            text = " ".join(words)
        prompt_tokens = sum(_words(_text(m.get("content"))) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": _words(text) + len(calls),
            "total_tokens": prompt_tokens + _words(text) + len(calls),
        }
        finish = "tool_calls" if calls else "stop"
        if stream:
            chunks = lambda: self._chunks(model, text, calls, finish, usage)  # noqa: E731
            return Reply(content_type="text/event-stream", chunks=chunks)
        message: dict[str, Any] = {"role": "assistant", "content": text if not calls else None}
        if calls:
            message["tool_calls"] = calls
        answer = {
            "id": f"id-{self.calls.total()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage,
        }
        return Reply(json_body=answer)

    def _chunks(
        self,
        model: str,
        text: str,
        calls: list[dict[str, Any]],
        finish: str,
        usage: dict[str, int],
    ) -> Iterator[str]:
        def event(delta: dict[str, Any], done: str | None = None, **extra: Any) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": done}
            chunk = {"object": "chat.completion.chunk", "model": model, "choices": [choice]}
            return f"data: {json.dumps({**chunk, **extra})}\n\n"

        yield event({"role": "assistant", "content": ""})
        for i, word in enumerate(text.split()):
            if self.stream_delay:
                time.sleep(self.stream_delay)
            yield event({"content": word if i == 0 else " " + word})
        for index, call in enumerate(calls):
            head = {**call, "index": index, "function": {**call["function"], "arguments": ""}}
            yield event({"tool_calls": [head]})
            arguments = call["function"]["arguments"]
            for at in range(0, len(arguments), 8):
                piece = {"index": index, "function": {"arguments": arguments[at : at + 8]}}
                yield event({"tool_calls": [piece]})
        yield event({}, finish, usage=usage)
        yield "data: [DONE]\n\n"


def _text(content: Any) -> str:
    """A message's text: a string, or its text parts joined (other parts left out)."""
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _record(fmt: dict[str, Any], question: str) -> dict[str, Any]:
    """A JSON mode answer: ``{"answer": question}``, or an object with the schema's properties
    (OpenAI's ``{"name", "schema"}`` wrapper, as the OpenAI-compatible endpoint takes it)."""
    wrapper = fmt.get("json_schema") if fmt.get("type") == "json_schema" else None
    schema = wrapper.get("schema", wrapper) if isinstance(wrapper, dict) else None
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return {"answer": question}
    samples = {"string": question, "integer": 1, "number": 1.5, "boolean": True, "array": []}
    return {
        name: samples.get(spec.get("type") if isinstance(spec, dict) else None, {})
        for name, spec in properties.items()
    }
