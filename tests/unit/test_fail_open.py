"""Fail-open by construction: whatever a backend raises, from any method of its protocol, a chat
gets an answer. The backends here are the real in-memory ones behind ``Faulty``, which makes one
method raise an arbitrary exception (not the project's errors: a bug's, a driver's)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from promptcache import (
    CacheMode,
    ChatRequest,
    ChatResult,
    Documents,
    Embedder,
    EmbedderError,
    Locks,
    Message,
    PromptCache,
    RateWindows,
    Stats,
    StatsError,
    Store,
    StoreError,
    Tier,
    UpstreamError,
    runtime,
)
from promptcache._boundary import (
    GuardedDocuments,
    GuardedEmbedder,
    GuardedLLM,
    GuardedLocks,
    GuardedStats,
    GuardedStore,
)
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.unit.fakes import FakeEmbedder, FakeLLM, blend, unit

EXCEPTIONS = [RuntimeError("boom"), KeyError("gone"), ValueError("bad value"), OSError("reset")]


def methods(*protocols: type) -> list[str]:
    """Every method a protocol declares (its properties are data, not calls)."""
    return sorted(
        {n for p in protocols for n, v in vars(p).items() if callable(v) and not n.startswith("_")}
    )


#: (backend, method) for each method of each protocol the cache's backends implement.
BROKEN = [
    *[("store", m) for m in methods(Store, Locks, RateWindows)],
    *[("embedder", m) for m in methods(Embedder)],
    *[("stats", m) for m in methods(Stats)],
]


class Faulty:
    """``inner``, except that its method ``broken`` (when set) raises ``exc``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.broken: str | None = None
        self.exc: Exception = RuntimeError("unset")

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if name != self.broken:
            return value

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.exc

        return fail


STORED = "How do I reset my password?"
PROMPTS = {
    "exact": STORED,
    "semantic": "How can I reset my password?",
    "miss": "Something else entirely",
    "refresh": STORED,
}
TIERS = {"exact": Tier.EXACT, "semantic": Tier.SEMANTIC, "miss": Tier.MISS, "refresh": Tier.MISS}
#: Where a broken method bypasses the cache: the model answers, nothing is stored (or, for a
#: refresh whose old entry cannot be deleted, the new one is stored but not reported as such).
#: Everywhere else the failure changes nothing: stats never change an answer, a lock that
#: cannot be taken or released only costs cross-process single-flight, a refresh whose lookup
#: fails still replaces the exact key's entry.
BYPASSES = {
    ("store", "sync"): {"exact", "semantic", "miss"},
    ("store", "get"): {"semantic"},
    ("store", "put"): {"miss", "refresh"},
    ("store", "delete"): {"refresh"},
    ("embedder", "embed"): {"semantic", "miss", "refresh"},
}


def req(prompt: str, cache: CacheMode = CacheMode.USE) -> ChatRequest:
    return ChatRequest(messages=(Message("user", prompt),), model="m", cache=cache)


def faulty_cache(probe_max_age: float = 30.0) -> tuple[PromptCache, dict[str, Faulty], FakeLLM]:
    base = unit("reset password")
    embedder = FakeEmbedder(
        {
            "how do i reset my password?": base,
            "how can i reset my password?": blend(base, unit("x"), 0.95),
        }
    )
    backends = {
        "store": Faulty(MemoryStore()),
        "embedder": Faulty(embedder),
        "stats": Faulty(MemoryStats()),
    }
    llm = FakeLLM()
    cache = PromptCache(llm=llm, probe_max_age=probe_max_age, **backends)  # type: ignore[arg-type]
    assert cache.locks is backends["store"]  # the store's locks, wrapped like the store
    assert cache.chat(req(STORED)).tier is Tier.MISS
    return cache, backends, llm


#: Those of BYPASSES that happen once the model has answered (storing the answer): a stream has
#: announced tier miss before them, its final result says bypass.
LATE = {
    ("store", "put"): {"miss", "refresh"},
    ("store", "delete"): {"refresh"},
    ("embedder", "embed"): {"refresh"},
}


def answer(cache: PromptCache, request: ChatRequest, streamed: bool) -> tuple[ChatResult, Tier]:
    """The final result, and the tier announced first (a stream's, before its first delta)."""
    if not streamed:
        result = cache.chat(request)
        return result, result.tier
    stream = cache.chat_stream(request)
    text = "".join(stream)
    assert stream.result is not None and stream.result.response == text
    return stream.result, stream.tier


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("scenario", list(PROMPTS))
@pytest.mark.parametrize(("backend", "method"), BROKEN, ids=[f"{b}.{m}" for b, m in BROKEN])
def test_any_backend_failure_still_answers(
    backend: str, method: str, scenario: str, streamed: bool
) -> None:
    cache, backends, llm = faulty_cache()
    exc = EXCEPTIONS[BROKEN.index((backend, method)) % len(EXCEPTIONS)]
    backends[backend].broken, backends[backend].exc = method, exc
    mode = CacheMode.REFRESH if scenario == "refresh" else CacheMode.USE

    result, announced = answer(cache, req(PROMPTS[scenario], mode), streamed)

    bypassed = scenario in BYPASSES.get((backend, method), set())
    assert result.tier is (Tier.BYPASS if bypassed else TIERS[scenario])
    late = streamed and scenario in LATE.get((backend, method), set())
    assert announced is (TIERS[scenario] if late else result.tier)
    assert result.response
    if bypassed:
        code = "embedder_error" if backend == "embedder" else "store_error"
        assert (result.bypass_reason or "").startswith(f"{code}: ")
        assert type(exc).__name__ in (result.bypass_reason or "")
        assert result.response.startswith(f"answer {llm.calls}: ")  # the model answered


@pytest.mark.parametrize(("backend", "method"), BROKEN, ids=[f"{b}.{m}" for b, m in BROKEN])
def test_the_report_models_and_health_survive_any_backend_failure(
    backend: str, method: str
) -> None:
    cache, backends, _ = faulty_cache(probe_max_age=0.0)
    backends[backend].broken, backends[backend].exc = method, KeyError("nope")
    ok, checks = cache.health()
    assert ok == ((backend, method) != ("store", "ping"))  # only the store is required
    failed = {c.name for c in checks if not c.ok} - {"llm"}
    assert failed == ({backend} if (backend, method) in _PROBED else set())
    if (backend, method) == ("stats", "read"):
        with pytest.raises(StatsError, match="KeyError"):
            cache.report()  # the report is the stats: a 503, said so
        assert cache.models() == []
    else:
        assert cache.report()["requests"] == 1
        assert cache.models() == ["m"]


_PROBED = {("store", "ping"), ("embedder", "embed"), ("stats", "read")}


# ---------------------------------------------------------------------- the boundary itself
_ARGS: dict[str, tuple[Any, ...]] = {
    "sync": ("ns", "key", None),
    "get": ("id",),
    "put": (None, None),
    "delete": ("id",),
    "entries": (0, 10),
    "count": (),
    "clear": (),
    "ping": (),
    "try_lock": ("lock", "token", 1.0),
    "unlock": ("lock", "token"),
    "embed": (["text"],),
    "add": ({"x": 1.0},),
    "read": (),
    "reset": (),
    "drop": (["x"],),
    "put_document": ("name", {"a": 1}, 60.0),
    "get_document": ("name",),
}
#: (wrapper, protocol, backend, the only error the wrapper may raise)
_GUARDS: list[tuple[Any, type, Any, type[Exception]]] = [
    (GuardedStore, Store, MemoryStore, StoreError),
    (GuardedLocks, Locks, MemoryStore, StoreError),
    (GuardedDocuments, Documents, MemoryStore, StoreError),
    (GuardedEmbedder, Embedder, FakeEmbedder, EmbedderError),
    (GuardedStats, Stats, MemoryStats, StatsError),
]
_WRAPPED = [(g, name, backend, error) for g, p, backend, error in _GUARDS for name in methods(p)]


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize(
    ("guard", "name", "backend", "error"),
    _WRAPPED,
    ids=[f"{g.__name__}.{name}" for g, name, _, _ in _WRAPPED],
)
def test_every_wrapped_method_raises_only_its_backends_error_chained(
    guard: Any, name: str, backend: Any, error: type[Exception], exc: Exception
) -> None:
    inner = Faulty(backend())
    inner.broken, inner.exc = name, exc
    with pytest.raises(error) as info:
        getattr(guard(inner), name)(*_ARGS[name])
    assert info.value.__cause__ is exc and type(exc).__name__ in str(info.value)


def test_every_protocol_method_is_wrapped() -> None:
    for guard, protocol, _, _ in _GUARDS:
        assert set(methods(protocol)) <= set(vars(guard)), guard
    assert set(methods(Store, Locks, Documents, Embedder, Stats)) == set(_ARGS)


def test_a_store_without_documents_keeps_none_and_says_so() -> None:
    """Keeping a response needs the Documents capability: a store without it is a StoreError
    (the face answers anyway, unkept), never an AttributeError."""

    class EntriesOnly:
        def __init__(self) -> None:
            self._inner = MemoryStore()

        def __getattr__(self, name: str) -> Any:
            if name in ("put_document", "get_document"):
                raise AttributeError(name)
            return getattr(self._inner, name)

    cache = PromptCache(store=EntriesOnly(), embedder=FakeEmbedder({}), stats=MemoryStats())  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="keeps no documents"):
        cache.keep("resp", {"a": 1})
    with pytest.raises(StoreError, match="keeps no documents"):
        cache.kept("resp")


def test_an_embedder_answering_the_wrong_shape_is_an_embedder_error() -> None:
    class Short(FakeEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            return super().embed(texts)[:, :3]

    with pytest.raises(EmbedderError, match="shape"):
        GuardedEmbedder(Short()).embed(["a", "b"])
    cache = PromptCache(store=MemoryStore(), embedder=Short(), stats=MemoryStats(), llm=FakeLLM())
    result = cache.chat(req("anything"))
    assert result.tier is Tier.BYPASS and "shape" in (result.bypass_reason or "")


class _BrokenModel(FakeLLM):
    def generate(self, request: ChatRequest) -> Any:
        raise KeyError("choices")


class _BrokenStream(FakeLLM):
    def stream(self, request: ChatRequest) -> Iterator[str]:
        yield "partial "
        raise ValueError("bad chunk")


def test_a_model_failure_of_any_kind_is_an_upstream_error_and_stores_nothing() -> None:
    """The model is wrapped too: a stray exception is a 502, never a 500; nothing is stored."""
    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), llm=_BrokenModel()
    )
    with pytest.raises(UpstreamError, match="KeyError") as info:
        cache.chat(req("anything"))
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(UpstreamError, match="KeyError"):
        cache.chat_stream(req("anything"))  # before the first delta: still an HTTP error
    streaming = PromptCache(
        store=cache.store, embedder=FakeEmbedder(), stats=MemoryStats(), llm=_BrokenStream()
    )
    stream = streaming.chat_stream(req("anything"))
    assert next(stream) == "partial "
    with pytest.raises(UpstreamError, match="ValueError"):
        next(stream)
    assert cache.store.count() == 0


def test_guarded_llm_keeps_the_upstream_errors_as_they_are() -> None:
    class Timeout(FakeLLM):
        def generate(self, request: ChatRequest) -> Any:
            from promptcache import UpstreamTimeout

            raise UpstreamTimeout("slow")

    from promptcache import UpstreamTimeout

    with pytest.raises(UpstreamTimeout, match="^slow$"):
        GuardedLLM(Timeout()).generate(req("x"))


# ---------------------------------------------------------------------- over HTTP, in process
@pytest.fixture
def http(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory")
    monkeypatch.setenv("PROMPTCACHE_RATE_LIMIT_PER_MINUTE", "100")  # counted: count_window
    runtime.reset()
    cache, backends, llm = faulty_cache()
    monkeypatch.setattr(runtime, "cache", lambda: cache)
    chat = importlib.reload(importlib.import_module("promptcache_handlers.chat"))
    yield {"chat": chat, "backends": backends, "llm": llm}
    monkeypatch.undo()
    runtime.reset()


def post(
    http: dict[str, Any], path: str, body: dict[str, Any]
) -> tuple[int, dict[str, str], bytes]:
    event = to_event("POST", path, {"Content-Type": "application/json"}, json.dumps(body).encode())
    status, headers, payload = from_result(http["chat"].lambda_handler(event, LocalContext("chat")))
    return status, {k.lower(): v for k, v in headers}, payload


HTTP_BROKEN = [
    ("store", "sync", "miss"),
    ("store", "get", "semantic"),
    ("store", "put", "miss"),
    ("store", "try_lock", "miss"),
    ("store", "count_window", "exact"),
    ("embedder", "embed", "semantic"),
    ("stats", "add", "exact"),
]


@pytest.mark.parametrize("route", ["/chat", "/v1/chat/completions", "stream"])
@pytest.mark.parametrize(("backend", "method", "scenario"), HTTP_BROKEN)
def test_over_http_any_backend_failure_is_a_200(
    http: dict[str, Any], backend: str, method: str, scenario: str, route: str
) -> None:
    http["backends"][backend].broken, http["backends"][backend].exc = method, RuntimeError("x")
    prompt = PROMPTS[scenario]
    messages = [{"role": "user", "content": prompt}]
    if route == "/chat":
        status, headers, payload = post(http, route, {"prompt": prompt, "model": "m"})
        assert json.loads(payload)["response"]
    else:
        body = {"model": "m", "messages": messages, "stream": route == "stream"}
        status, headers, payload = post(http, "/v1/chat/completions", body)
        if route == "stream":  # an event stream with the answer, no error event
            assert payload.startswith(b"data: ") and b'"error"' not in payload
        else:
            assert json.loads(payload)["choices"]
    bypassed = scenario in BYPASSES.get((backend, method), set())
    if route == "stream" and scenario in LATE.get((backend, method), set()):
        bypassed = False  # the headers went out before the store failed
    assert status == 200
    assert headers["x-promptcache-tier"] == ("bypass" if bypassed else TIERS[scenario].value)


class _Index:
    """A server-side index whose ping works or raises (the other calls are not reached)."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.pings = 0

    def add(self, namespace: str, entry_id: str, vector: Any, expires_at: float | None) -> None:
        raise AssertionError("not reached")

    def add_many(self, namespace: str, items: Any) -> None:
        raise AssertionError("not reached")

    def remove(self, namespace: str, entry_id: str) -> None:
        raise AssertionError("not reached")

    def search(self, namespace: str, vector: Any, **_: Any) -> list[tuple[str, float]]:
        raise AssertionError("not reached")

    def clear(self) -> None:
        raise AssertionError("not reached")

    def ping(self) -> None:
        self.pings += 1
        if self.fails:
            raise ConnectionError("index down")


def test_health_probes_a_server_side_index_and_does_not_require_it() -> None:
    def health(index: Any) -> tuple[bool, dict[str, Any]]:
        cache = PromptCache(
            store=MemoryStore(), embedder=FakeEmbedder(), stats=MemoryStats(), index=index
        )
        ok, checks = cache.health()
        return ok, {c.name: c for c in checks}

    ok, checks = health(None)  # the process's own index: nothing to probe
    assert ok and "index" not in checks
    working = _Index(fails=False)
    ok, checks = health(working)
    assert ok and checks["index"].ok and not checks["index"].required and working.pings == 1
    ok, checks = health(_Index(fails=True))
    assert ok  # the store answers: a broken index only bypasses the cache
    assert not checks["index"].ok and "index down" in checks["index"].detail
    assert [c for c in checks] == ["store", "index", "embedder", "stats", "llm"]
