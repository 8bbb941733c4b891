"""Cloudflare Workers AI over its REST API: embeddings (bge), text generation (Llama) and the
bge reranker as a verifier.

``POST {base}/accounts/{account}/ai/run/{model}`` with ``Authorization: Bearer TOKEN``.

- Embeddings: body ``{"text": [..<=100 texts]}`` -> ``result: {"shape": [n, dim], "data": [[..]]}``.
  Any failure is an ``EmbedderError``: the core then bypasses the cache for that request.
- Reranker (verifier): body ``{"query", "contexts": [{"text"}..], "top_k"}`` -> ``result:
  {"response": [{"id", "score"}..]}``, one score in [0, 1] per context. Any failure, or an answer
  that does not score every context exactly once, is a ``VerifierError``: its candidates are
  rejected (a miss).
- Generation: body ``{"messages": [...], "max_tokens", "temperature"}`` -> ``result: {"response",
  "usage": {"prompt_tokens", "completion_tokens"}}``; with ``"stream": true`` the answer is SSE
  (``data: {"response": "..."}`` lines, then ``data: [DONE]``).
- Generation with what ``/ai/run`` cannot carry as OpenAI does (tools and tool turns, a response
  format, content parts, any field but the sampling ones): ``POST {base}/accounts/{account}/ai/v1/
  chat/completions``, Workers AI's OpenAI-compatible endpoint, with the request as an OpenAI
  client would send it and the model in the body; the answer is OpenAI's ``chat.completion`` (or
  its chunks). ``/ai/run`` spells these differently (flat tool definitions, a bare schema in
  ``json_schema``, calls without ids, a JSON answer as an object), and the endpoint translates for
  its models; a model without function calling or JSON mode refuses them there (a 400 the client
  sees, nothing stored).

Generation's answers and errors are read in ``_workers_ai_answers`` (the error mapping is there).
Retries and the circuit breaker: see ``_http``. 3036 (daily allocation used up) is never retried.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, ClassVar

import httpx
import numpy as np
import numpy.typing as npt

from .._errors import (
    ConfigError,
    EmbedderError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
    VerifierError,
)
from .._types import ChatRequest, Completion
from . import _cloudflare as cf
from ._chat import chat_body
from ._http import CircuitBreaker, CircuitOpenError, ResilientHTTP, RetryPolicy
from ._workers_ai_answers import (
    CHAT,
    CODE_QUOTA,
    chat_deltas,
    llm_error,
    sse_deltas,
    succeeded,
    usage_of,
)
from .openai_compat import chat_payload, completion_of

DEFAULT_EMBEDDING_MODEL = "@cf/baai/bge-base-en-v1.5"
DEFAULT_LLM_MODEL = "@cf/meta/llama-3.1-8b-instruct"
DEFAULT_RERANKER_MODEL = "@cf/baai/bge-reranker-base"
#: Output sizes of the Workers AI embedding models this adapter knows.
EMBEDDING_DIMS = {
    "@cf/baai/bge-small-en-v1.5": 384,
    "@cf/baai/bge-base-en-v1.5": 768,
    "@cf/baai/bge-large-en-v1.5": 1024,
}
#: Cosine threshold for bge v1.5 (unit vectors). Not calibrated on labelled pairs: BGE v1.5
#: places true paraphrases mostly above ~0.9 and unrelated prompts well below; override it
#: with PROMPTCACHE_THRESHOLD once measured on real traffic.
DEFAULT_BGE_THRESHOLD = 0.90
MAX_BATCH = 100  # texts per embeddings call (Workers AI's limit)

_MODEL = re.compile(r"^@[A-Za-z0-9_-]+(/[A-Za-z0-9._:-]+)+$")


def _model_path(model: str) -> str:
    """A model name as it goes into the URL path; anything that could escape it is refused."""
    if not _MODEL.match(model) or "/../" in f"{model}/" or "/./" in f"{model}/":
        raise UpstreamBadRequest(
            f"Workers AI has no model {model!r}: model names look like '{DEFAULT_LLM_MODEL}'",
            code="model_not_found",
        )
    return model


def _not_permanent(response: httpx.Response) -> bool:
    """Retry veto: a used-up daily allocation (3036) does not come back within seconds."""
    return CODE_QUOTA not in cf.error_codes(response)


def _default_breaker(name: str, clock: Callable[[], float]) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=5, reset_timeout=30.0, clock=clock, name=name)


class _WorkersAI:
    """What both Workers AI adapters share: URL, auth, model check and the resilient client.

    Each adapter states only its defaults (model, retry policy, breaker name).
    """

    DEFAULT_MODEL: ClassVar[str]
    DEFAULT_POLICY: ClassVar[RetryPolicy]
    KIND: ClassVar[str]

    def __init__(
        self,
        client: httpx.Client,
        account_id: str,
        token: str,
        base_url: str = cf.DEFAULT_BASE_URL,
        model: str | None = None,
        *,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run_url = cf.account_url(base_url, account_id) + "/ai/run/"
        self._chat_url = cf.account_url(base_url, account_id) + "/ai/v1/chat/completions"
        self._headers = cf.auth_headers(token)
        self.model = model or self.DEFAULT_MODEL
        try:
            self._url(self.model)
        except UpstreamBadRequest as exc:
            raise ConfigError(exc.message) from None
        self._http = ResilientHTTP(
            client,
            policy=policy or self.DEFAULT_POLICY,
            breaker=breaker or _default_breaker(f"workers-ai {self.KIND}", clock),
            retryable=_not_permanent,
            sleep=sleep,
            clock=clock,
        )

    @property
    def breaker(self) -> CircuitBreaker:
        assert self._http.breaker is not None
        return self._http.breaker

    def close(self) -> None:
        """Close the HTTP client (the adapter is unusable afterwards)."""
        self._http.client.close()

    def _url(self, model: str) -> str:
        return self._run_url + _model_path(model)

    def _post(self, body: Any, error: type[Exception], what: str) -> httpx.Response:
        """POST ``body`` to the adapter's model; any failure, an HTTP error status included, is
        ``error`` naming ``what`` (the LLM maps its failures itself: they have codes)."""
        try:
            response = self._http.request(
                "POST", self._url(self.model), json=body, headers=self._headers
            )
        except CircuitOpenError as exc:
            raise error(f"Workers AI {what} unavailable: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise error(f"Workers AI {what} timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise error(f"Workers AI {what} unreachable: {exc!r}") from exc
        if response.status_code >= 400:
            raise error(f"Workers AI {what} failed: {cf.describe(response)}")
        return response


# ---------------------------------------------------------------------------- embeddings
class WorkersAIEmbedder(_WorkersAI):
    """Embedder protocol over Workers AI (default bge-base-en-v1.5, 768-d)."""

    DEFAULT_MODEL = DEFAULT_EMBEDDING_MODEL
    DEFAULT_POLICY = RetryPolicy(attempts=3, backoff=0.05, max_backoff=0.5)
    KIND = "embeddings"
    #: bge-base reads 512 word pieces (~2,000 characters of English); longer prompts are matched
    #: by the exact tier only.
    max_input_chars = 2000

    def __init__(
        self,
        client: httpx.Client,
        account_id: str,
        token: str,
        base_url: str = cf.DEFAULT_BASE_URL,
        model: str | None = None,
        *,
        dim: int | None = None,
        threshold: float | None = None,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``dim`` and ``threshold`` are needed only for a model not in ``EMBEDDING_DIMS``."""
        super().__init__(
            client,
            account_id,
            token,
            base_url,
            model,
            policy=policy,
            breaker=breaker,
            sleep=sleep,
            clock=clock,
        )
        if dim is None:
            if self.model not in EMBEDDING_DIMS:
                raise ConfigError(
                    f"unknown Workers AI embedding model {self.model!r}: pass its dimension "
                    f"(known: {sorted(EMBEDDING_DIMS)})"
                )
            dim = EMBEDDING_DIMS[self.model]
        self._dim = dim
        self._threshold = DEFAULT_BGE_THRESHOLD if threshold is None else threshold

    @property
    def id(self) -> str:
        return "cf-" + self.model.rsplit("/", 1)[-1]

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def default_threshold(self) -> float:
        return self._threshold

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        parts = [
            self._embed_batch(list(texts[start : start + MAX_BATCH]))
            for start in range(0, len(texts), MAX_BATCH)
        ]
        return np.concatenate(parts)

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        response = self._post({"text": texts}, EmbedderError, "embeddings")
        try:
            result = cf.result_of(response)
            return self._vectors(result, len(texts))
        except (ValueError, TypeError, KeyError) as exc:
            raise EmbedderError(f"Workers AI sent unusable embeddings: {exc}") from exc

    def _vectors(self, result: Any, n: int) -> npt.NDArray[np.float32]:
        if not isinstance(result, dict):
            raise ValueError("result is not an object")
        shape = result.get("shape")
        if shape != [n, self._dim]:
            raise ValueError(f"shape {shape!r}, expected [{n}, {self._dim}]")
        data = np.asarray(result["data"], dtype=np.float64)
        if data.shape != (n, self._dim):
            raise ValueError(f"data is {data.shape}, expected ({n}, {self._dim})")
        if not np.isfinite(data).all():
            raise ValueError("data holds non-finite numbers")
        norms = np.linalg.norm(data, axis=1, keepdims=True)
        if (norms <= 1e-12).any():
            raise ValueError("a vector has zero length")
        vectors: npt.NDArray[np.float32] = (data / norms).astype(np.float32)
        return vectors


# ---------------------------------------------------------------------------- reranker
class WorkersAIReranker(_WorkersAI):
    """Verifier protocol over the Workers AI reranker (default bge-reranker-base): one call per
    query scores all its candidates. Not calibrated on this cache's decisions (docs/verifier.md,
    "Workers AI reranker"): its scores rank candidates, and a cutoff for them must be measured."""

    DEFAULT_MODEL = DEFAULT_RERANKER_MODEL
    DEFAULT_POLICY = RetryPolicy(attempts=2, backoff=0.05, max_backoff=0.2)
    KIND = "reranker"

    @property
    def id(self) -> str:
        return "cf-" + self.model.rsplit("/", 1)[-1]

    def scores(self, query: str, candidates: Sequence[str]) -> list[float]:
        if not candidates:
            return []
        body = {
            "query": query,
            "contexts": [{"text": c} for c in candidates],
            "top_k": len(candidates),
        }
        response = self._post(body, VerifierError, "reranker")
        try:
            return _ranked(cf.result_of(response), len(candidates))
        except (ValueError, TypeError, KeyError) as exc:
            raise VerifierError(f"Workers AI sent unusable reranker scores: {exc}") from exc


def _ranked(result: Any, n: int) -> list[float]:
    """The reranker's answer (best first, by context index) back in the candidates' order."""
    items = result["response"] if isinstance(result, dict) else None
    if not isinstance(items, list):
        raise TypeError("result.response is not a list")
    scores: dict[int, float] = {}
    for item in items:
        index, score = item["id"], item["score"]
        if type(index) is not int or not 0 <= index < n or index in scores:
            raise ValueError(f"context id {index!r} is not one of 0..{n - 1} exactly once")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise TypeError(f"score {score!r} is not a number")
        if not 0.0 <= score <= 1.0:  # NaN fails too
            raise ValueError(f"score {score!r} is outside [0, 1]")
        scores[index] = float(score)
    if len(scores) != n:
        raise ValueError(f"{n - len(scores)} of {n} contexts were not scored")
    return [scores[i] for i in range(n)]


# ---------------------------------------------------------------------------- generation
#: The chat completions fields Workers AI text generation takes under the same name.
_SAMPLING = {"top_p", "seed", "frequency_penalty", "presence_penalty"}


def runs_natively(request: ChatRequest) -> bool:
    """Whether ``/ai/run`` carries the whole request: plain turns and the sampling fields it
    takes. Anything else goes to the OpenAI-compatible endpoint. (The identifying fields,
    ``ChatRequest.forward``, are not sent to ``/ai/run``: it has none, and they change no
    answer.)"""
    return set(request.options) <= _SAMPLING and all(m.plain for m in request.messages)


class WorkersAILLM(_WorkersAI):
    """LLM protocol over Workers AI text generation (default Llama 3.1 8B instruct).

    The model is the request's (``ChatRequest.model``), else the adapter's default.
    """

    DEFAULT_MODEL = DEFAULT_LLM_MODEL
    DEFAULT_POLICY = RetryPolicy(attempts=2, backoff=0.2, max_backoff=2.0)
    KIND = "generation"

    @property
    def name(self) -> str:
        return f"workers-ai ({self.model})"

    def payload(self, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        """The body for ``/ai/run`` (``runs_natively``), else for the OpenAI-compatible
        endpoint: the request as an OpenAI client sends it, every field included, the model in
        the body."""
        if not runs_natively(request):
            return chat_payload(request, request.model or self.model, stream=stream)
        body = chat_body(request, stream=stream)
        body.update({k: v for k, v in request.options.items() if k in _SAMPLING})
        return body

    def generate(self, request: ChatRequest) -> Completion:
        model = request.model or self.model
        if not runs_natively(request):
            answer = self._send(model, self.payload(request), stream=False, native=False)
            return completion_of(answer, model, CHAT)
        response = self._send(model, self.payload(request), stream=False)
        try:
            result = cf.result_of(response)
            if not isinstance(result, dict):
                raise TypeError("result is not an object")
            text = result.get("response")
            if not isinstance(text, str):
                raise TypeError("result.response is not a string")
            return Completion(text=text, model=model, usage=usage_of(result))
        except (ValueError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"Workers AI sent an unreadable answer: {exc}") from exc

    def stream(self, request: ChatRequest) -> Generator[str, None, Completion]:
        """Yield the answer's text as Workers AI streams it, one delta (non-empty str) at a time.

        Lazy: the request goes out on the first ``next()``. Errors are those of ``generate``
        (raised by the first ``next()`` when Workers AI refuses the request; ``UpstreamError`` or
        ``UpstreamTimeout`` if the stream breaks later, including a stream that ends without
        ``[DONE]``). Retries happen only before the first delta. Closing the generator closes the
        connection. When the stream ends normally the generator *returns* (``StopIteration.value``)
        a ``Completion`` with empty text, the model and the usage Workers AI reported (zeros if
        none). Caching is left to the caller: this method only relays.
        """
        model = request.model or self.model
        native = runs_natively(request)
        body = self.payload(request, stream=True)
        response = self._send(model, body, stream=True, native=native)
        try:
            if not native:
                return (yield from chat_deltas(response, model))
            return (yield from sse_deltas(response, model))
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"Workers AI stream timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Workers AI stream broke: {exc!r}") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"Workers AI sent an unreadable stream: {exc}") from exc
        finally:
            response.close()

    # ------------------------------------------------------------------ internals
    def _send(
        self, model: str, body: dict[str, Any], *, stream: bool, native: bool = True
    ) -> httpx.Response:
        """POST to ``/ai/run/{model}`` (``native``) or to the OpenAI-compatible endpoint (the
        model is in the body; its name is checked all the same)."""
        url = self._url(model) if native else self._chat_url
        _model_path(model)  # a name that cannot exist is refused before any call
        try:
            if stream:
                response = self._http.open_stream("POST", url, json=body, headers=self._headers)
            else:
                response = self._http.request("POST", url, json=body, headers=self._headers)
        except CircuitOpenError as exc:
            raise UpstreamError(
                f"Workers AI is failing, not calling it for now: {exc}", code="upstream_unavailable"
            ) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"Workers AI timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Workers AI is unreachable: {exc!r}") from exc
        if response.status_code >= 400:
            raise llm_error(response, model)
        enveloped = native and not stream and cf.envelope(response) is not None
        if enveloped and not succeeded(response):
            raise llm_error(response, model)
        return response
