"""The request as the cache sees it: one frozen value, built once per request."""

from __future__ import annotations

from dataclasses import dataclass

from ._keys import namespace, normalize, text_key, turn_keys, turn_text
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
    - ``semantic``: whether the semantic tier applies: the last turn is a plain user turn
      whose ``folded`` the embedder reads whole (a longer prompt, a tool result, a turn with an
      image... use the exact tier only), and the request is not tool- or schema-bound unless
      ``request.semantic`` allows it (a wrong loose hit there replays a wrong action or record).
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
        keys = turn_keys(request.messages)
        ns = namespace(request, embedder_id, dim, keys)
        text = turn_text(keys[-1])
        last = request.messages[-1]
        folded = normalize(text if last.plain else request.prompt)
        semantic = (
            len(folded) <= semantic_max_chars
            and last.role == "user"
            and last.plain
            and (request.semantic or not request.bound)
        )
        return cls(request, ns, text_key(ns, text), text, folded, semantic)

    @property
    def mode(self) -> CacheMode:
        return self.request.cache

    @property
    def model(self) -> str:
        return self.request.model
