"""Normalization, namespaces and exact keys: pure functions.

Two forms of a prompt:

- ``canonical``: what the exact tier hashes, what is stored and what the guards compare. It
  changes only what cannot change an answer, so that two prompts sharing an exact key ask the
  same thing: canonical equivalence (NFC), line endings, the indentation every line shares,
  trailing whitespace, runs of blank lines, and runs of spaces *inside* a line of prose. It
  keeps everything else: case (``'ABC'`` is not ``'abc'``, "US" is not "us"), compatibility
  characters (``10²`` is not ``102``: no NFKC), letters (``Maße`` is not ``Masse``: no casefold),
  and every character of code (fenced blocks, inline backticks, indented lines) and of quotes.
- ``normalize``: what the embedder reads: NFKC, whitespace collapsed, case-folded. The semantic
  tier matches what the exact tier keeps apart (case, layout), behind the guards, which see the
  canonical forms.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
import unicodedata

from ._types import ChatRequest

#: Part of every namespace: a change of ``canonical`` or of the key layout bumps it, so that
#: entries keyed the old way are never reached again (a miss), rather than matched by a key that
#: now means something else. Version 1 (unversioned) case-folded and NFKC-normalized the key.
KEY_VERSION = 2

_WS = re.compile(r"\s+")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*(?:\n.*?(?:^[ \t]*\1[ \t]*$|\Z)|\Z)", re.M | re.S)
#: Spans of a line kept verbatim: inline code and quotations (an apostrophe inside a word,
#: "what's", opens no quote).
_SPAN = re.compile(
    r"(?<!`)`[^`\n]+`(?!`)|\"[^\"\n]*\"|“[^”\n]*”|‘[^’\n]*’|«[^»\n]*»|(?<!\w)'[^'\n]*'(?!\w)"
)
_RUN = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """What the embedder reads: Unicode NFKC, whitespace collapsed, trimmed, case-folded.

    The semantic tier matches prompts that differ only in case or layout; the stored answer and
    the canonical prompt are never altered.
    """
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def canonical(text: str) -> str:
    """The exact tier's form of a prompt (module docstring): only what cannot change an answer
    is normalized."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = textwrap.dedent(text)
    out: list[str] = []
    start = 0
    for fence in _FENCE.finditer(text):
        out.append(_prose(text[start : fence.start()]))
        out.append(fence.group(0))
        start = fence.end()
    out.append(_prose(text[start:]))
    return "".join(out).lstrip("\n").rstrip()


def _prose(text: str) -> str:
    """Text outside fenced code: trailing whitespace of each line dropped; an indented line
    (code, or a structure) kept as it is; in others, runs of spaces outside inline code and
    quotations made one space."""
    lines = []
    for line in text.split("\n"):
        line = line.rstrip()
        if line[:1] in (" ", "\t"):
            lines.append(line)
            continue
        parts, start = [], 0
        for span in _SPAN.finditer(line):
            parts.append(_RUN.sub(" ", line[start : span.start()]))
            parts.append(span.group(0))
            start = span.end()
        parts.append(_RUN.sub(" ", line[start:]))
        lines.append("".join(parts))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines))


def literal_spans(text: str) -> list[str]:
    """A canonical prompt's parts that must match letter for letter, in order of appearance:
    fenced blocks, inline code, quotations (without their quote marks; empty ones left out) and
    indented lines."""
    spans = []
    start = 0
    for fence in _FENCE.finditer(text):
        spans.extend(_line_spans(text[start : fence.start()]))
        spans.append(fence.group(0).strip())
        start = fence.end()
    spans.extend(_line_spans(text[start:]))
    return spans


def _line_spans(text: str) -> list[str]:
    spans = []
    for line in text.split("\n"):
        if line[:1] in (" ", "\t"):
            spans.append(line)
        else:
            quoted = (span.group(0)[1:-1].strip() for span in _SPAN.finditer(line))
            spans.extend(q for q in quoted if q)
    return spans


def _digest(payload: object) -> str:
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def namespace(request: ChatRequest, embedder_id: str, dim: int) -> str:
    """Entries only ever match within one namespace.

    It holds the tenant, the model, the embedder and its dimension, the generation parameters
    that change answers (temperature, max_tokens), the conversation context (system prompt and
    earlier turns, canonical) and ``KEY_VERSION``: a follow-up question never matches one asked
    in another context.
    """
    context = [[m.role, canonical(m.content)] for m in request.context]
    params = {
        "temperature": None if request.temperature is None else round(request.temperature, 2),
        "max_tokens": request.max_tokens,
    }
    payload = {"model": request.model, "params": params, "context": context, "v": KEY_VERSION}
    digest = _digest(payload)[:24]
    return f"{request.tenant}:{embedder_id}:{dim}:{digest}"


def tenant_of(namespace_: str) -> str:
    """The tenant a namespace belongs to (tenants may contain ':'; the other parts do not)."""
    return namespace_.rsplit(":", 3)[0]


def exact_key(namespace_: str, prompt: str) -> str:
    """The exact tier's key of a raw prompt in a namespace."""
    return text_key(namespace_, canonical(prompt))


def text_key(namespace_: str, text: str) -> str:
    """``exact_key`` of a prompt already canonical (``text == canonical(text)``)."""
    return _digest([namespace_, text])
