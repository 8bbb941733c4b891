"""Several upstreams behind one LLM: each request goes to the upstream its model belongs to.

The rule (one, documented in docs/backends.md): a request whose model starts with one of a
routed upstream's prefixes (``claude-`` -> Claude, ``@cf/`` -> Workers AI, ...) goes to that
upstream; every other request goes to the default (PROMPTCACHE_LLM). The first matching route
wins. The router is itself an LLM: ``generate``, ``stream``, ``takes_n`` and ``ping`` delegate.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import cast

from .._protocols import LLM, ChoicesLLM, ProbedLLM, StreamingLLM
from .._types import ChatRequest, Completion


class Route:
    """Requests whose model starts with one of ``prefixes`` go to ``llm``."""

    __slots__ = ("llm", "prefixes")

    def __init__(self, prefixes: Sequence[str], llm: LLM) -> None:
        self.prefixes = tuple(prefixes)
        self.llm = llm

    def takes(self, model: str) -> bool:
        return model.startswith(self.prefixes)


class RoutedLLM:
    """An LLM over a default upstream and routes to others (``RoutingLLM``)."""

    def __init__(self, default: LLM, routes: Sequence[Route]) -> None:
        self.default = default
        self.routes = tuple(routes)

    @property
    def name(self) -> str:
        routed = ", ".join(
            f"{'|'.join(p + '*' for p in r.prefixes)} -> {r.llm.name}" for r in self.routes
        )
        return f"{self.default.name}; {routed}" if routed else self.default.name

    def pick(self, model: str) -> LLM:
        return next((r.llm for r in self.routes if r.takes(model)), self.default)

    @property
    def takes_n(self) -> bool:
        """The default upstream's (a face asks ``_protocols.takes_n`` of the request's model)."""
        return isinstance(self.default, ChoicesLLM) and bool(self.default.takes_n)

    def generate(self, request: ChatRequest) -> Completion:
        return self.pick(request.model).generate(request)

    def stream(self, request: ChatRequest) -> Generator[str, None, object]:
        """The chosen upstream's stream (its answer in one delta when it cannot stream). Closing
        this stream closes the upstream's (``yield from`` passes the close on)."""
        llm = self.pick(request.model)
        if isinstance(llm, StreamingLLM):
            # the protocol's iterator returns the upstream's Completion (``StreamingLLM``)
            deltas = cast(Generator[str, None, object], llm.stream(request))
            return (yield from deltas)
        completion = llm.generate(request)
        yield completion.text
        return completion

    def ping(self) -> None:
        """Probe every upstream that has a free probe (the others are not called)."""
        for llm in (self.default, *(r.llm for r in self.routes)):
            if isinstance(llm, ProbedLLM):
                llm.ping()
