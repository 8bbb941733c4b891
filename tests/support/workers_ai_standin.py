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
}
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
