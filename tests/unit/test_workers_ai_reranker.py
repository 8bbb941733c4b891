"""The Workers AI reranker as the verifier (PROMPTCACHE_VERIFIER_MODEL=workers-ai): the request it
sends, its answer back in the candidates' order, and every failure a VerifierError (the core
rejects those candidates: a miss). The network boundary is the Workers AI stand-in as an httpx
transport (its scores come from the project's trained cross-encoder) or a handler of one case."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from promptcache import runtime
from promptcache._errors import ConfigError, VerifierError
from promptcache._protocols import Verifier
from promptcache.adapters._http import CircuitBreaker, RetryPolicy
from promptcache.adapters.local_verifier import LocalVerifier
from promptcache.adapters.workers_ai import DEFAULT_RERANKER_MODEL, WorkersAIReranker
from promptcache.settings import Settings
from tests.support.workers_ai_standin import WorkersAIStandIn

ACCOUNT, TOKEN = "acc0123456789", "test-token"
Handler = Callable[[httpx.Request], httpx.Response]


def reranker(handler: Handler, **kwargs: Any) -> tuple[WorkersAIReranker, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = httpx.Client(transport=httpx.MockTransport(record))
    kwargs.setdefault("sleep", lambda s: None)
    base = "https://api.cloudflare.com/client/v4"
    return WorkersAIReranker(client, ACCOUNT, TOKEN, base, **kwargs), seen


def answer(result: Any, status: int = 200) -> Handler:
    body = {"result": result, "success": status < 400, "errors": [], "messages": []}
    return lambda request: httpx.Response(
        status,
        content=json.dumps(body, allow_nan=True),
        headers={"content-type": "application/json"},
    )


@pytest.fixture(scope="module")
def standin() -> WorkersAIStandIn:
    return WorkersAIStandIn(embedder=None, account_id=ACCOUNT, token=TOKEN)


def test_it_is_a_verifier_and_scores_every_candidate_in_their_order(
    standin: WorkersAIStandIn,
) -> None:
    client = httpx.Client(transport=standin.transport())
    judge = WorkersAIReranker(client, ACCOUNT, TOKEN, "http://cf.test/client/v4")
    verifier: Verifier = judge  # the protocol, checked by mypy
    assert verifier.id == "cf-bge-reranker-base"
    query = "How do I learn to play the guitar?"
    candidates = [
        "What is the capital of Peru?",
        "How can I learn to play guitar?",
        "How do I learn to play the piano?",
    ]
    scores = judge.scores(query, candidates)
    # The stand-in answers best first; the adapter puts them back in the candidates' order.
    expected = LocalVerifier(timeout=60.0).scores(query, candidates)
    assert scores == pytest.approx(expected, abs=1e-6)
    assert scores[1] > scores[0]
    body = standin.bodies[-1]
    assert body == {
        "query": query,
        "contexts": [{"text": c} for c in candidates],
        "top_k": 3,
    }
    assert standin.calls[DEFAULT_RERANKER_MODEL] == 1


def test_no_candidates_send_nothing() -> None:
    judge, seen = reranker(answer({"response": []}))
    assert judge.scores("q", []) == []
    assert seen == []


def test_the_request_goes_to_the_reranker_model_with_the_token() -> None:
    judge, seen = reranker(answer({"response": [{"id": 0, "score": 0.25}]}))
    assert judge.scores("q", ["c"]) == [0.25]
    (request,) = seen
    assert request.url.path == f"/client/v4/accounts/{ACCOUNT}/ai/run/@cf/baai/bge-reranker-base"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"response": [{"id": 0, "score": 0.5}]}, "1 of 2 contexts were not scored"),
        ({"response": [{"id": 0, "score": 0.5}, {"id": 0, "score": 0.4}]}, "exactly once"),
        ({"response": [{"id": 2, "score": 0.5}, {"id": 0, "score": 0.4}]}, "exactly once"),
        ({"response": [{"id": True, "score": 0.5}, {"id": 0, "score": 0.4}]}, "exactly once"),
        ({"response": [{"id": 0, "score": 3.2}, {"id": 1, "score": 0.4}]}, "outside"),
        ({"response": [{"id": 0, "score": -1.0}, {"id": 1, "score": 0.4}]}, "outside"),
        ({"response": [{"id": 0, "score": float("nan")}, {"id": 1, "score": 0.4}]}, "outside"),
        ({"response": [{"id": 0, "score": "0.9"}, {"id": 1, "score": 0.4}]}, "not a number"),
        ({"response": [{"id": 0, "score": True}, {"id": 1, "score": 0.4}]}, "not a number"),
        ({"response": [{"id": 0}, {"id": 1, "score": 0.4}]}, "score"),
        ({"response": "0.9"}, "not a list"),
        (["not", "an", "object"], "not a list"),
    ],
)
def test_an_unusable_answer_is_a_verifier_error(result: Any, message: str) -> None:
    judge, _ = reranker(answer(result))
    with pytest.raises(VerifierError, match=message):
        judge.scores("q", ["a", "b"])


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(400, json={"success": False, "errors": [{"code": 5006, "message": "bad"}]}),
        httpx.Response(400, json={"success": False, "errors": [{"code": 5007, "message": "none"}]}),
        httpx.Response(
            401, json={"success": False, "errors": [{"code": 10000, "message": "auth"}]}
        ),
        httpx.Response(500, text="<html>oops</html>"),
        httpx.Response(200, text="not json"),
    ],
)
def test_a_refused_request_is_a_verifier_error(response: httpx.Response) -> None:
    judge, _ = reranker(lambda request: response, policy=RetryPolicy(attempts=1))
    with pytest.raises(VerifierError):
        judge.scores("q", ["a"])


def test_an_unreachable_reranker_is_a_verifier_error_after_its_retries() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    judge, seen = reranker(handler, policy=RetryPolicy(attempts=2))
    with pytest.raises(VerifierError, match="unreachable"):
        judge.scores("q", ["a"])
    assert len(seen) == 2


def test_an_open_breaker_fails_fast_without_a_request() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=30, clock=lambda: now[0])
    judge, seen = reranker(
        lambda r: httpx.Response(503), policy=RetryPolicy(attempts=1), breaker=breaker
    )
    for _ in range(2):
        with pytest.raises(VerifierError):
            judge.scores("q", ["a"])
    with pytest.raises(VerifierError, match="unavailable"):
        judge.scores("q", ["a"])
    assert len(seen) == 2


def test_the_setting_needs_cloudflare_credentials_and_builds_the_reranker() -> None:
    with pytest.raises(ConfigError, match="CLOUDFLARE_ACCOUNT_ID"):
        Settings.from_env({"PROMPTCACHE_VERIFIER_MODEL": "workers-ai"})
    settings = Settings.from_env(
        {
            "PROMPTCACHE_VERIFIER_MODEL": "workers-ai",
            "PROMPTCACHE_EMBEDDER": "local",
            "PROMPTCACHE_LLM": "none",
            "PROMPTCACHE_VERIFIER_TIMEOUT": "0.5",
            "CLOUDFLARE_ACCOUNT_ID": ACCOUNT,
            "CLOUDFLARE_API_TOKEN": TOKEN,
        }
    )
    judge = runtime.VERIFIER_MODELS[settings.verifier_model](settings)
    assert isinstance(judge, WorkersAIReranker) and judge.model == DEFAULT_RERANKER_MODEL
    with pytest.raises(ConfigError, match="PROMPTCACHE_VERIFIER_MODEL"):
        Settings.from_env({"PROMPTCACHE_VERIFIER_MODEL": "bge"})
