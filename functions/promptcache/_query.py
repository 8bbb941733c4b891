"""The request as the cache sees it: one frozen value, built once per request."""

from __future__ import annotations

from dataclasses import dataclass

from ._keys import canonical, namespace, normalize, text_key
from ._types import CacheMode, ChatRequest


@dataclass(frozen=True, slots=True)
class Query:
    """A ChatRequest with everything the tiers derive from it, computed once (the prompt is
    normalized here and nowhere else on the request's path).

    - ``namespace``: where its entries live (tenant, model, embedder, parameters, context).
    - ``key``: its exact-tier key in that namespace.
    - ``text``: the canonical prompt (``_keys.canonical``): what the exact key hashes, what is
      stored and what the guards compare.
    - ``folded``: the prompt as the embedder reads it (``_keys.normalize``).
    - ``semantic``: whether the semantic tier applies (the embedder reads ``folded`` whole);
      a longer prompt is matched by the exact tier only.
    """

    request: ChatRequest
    namespace: str
    key: str
    text: str
    folded: str
    semantic: bool

    @classmethod
    def of(
        cls, request: ChatRequest, *, embedder_id: str, dim: int, semantic_max_chars: int
    ) -> Query:
        ns = namespace(request, embedder_id, dim)
        text = canonical(request.prompt)
        folded = normalize(text)
        semantic = len(folded) <= semantic_max_chars
        return cls(request, ns, text_key(ns, text), text, folded, semantic)

    @property
    def mode(self) -> CacheMode:
        return self.request.cache

    @property
    def model(self) -> str:
        return self.request.model
