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
from collections.abc import Mapping, Sequence
from typing import Any

from ._types import ChatRequest, Message

#: Request fields that only identify the caller or bill the request: forwarded to the model,
#: never part of the key (two users asking the same thing share an answer). Every other field
#: that is set is keyed (``ChatRequest.options``).
UNKEYED = ("user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier")
#: Of those, the ones naming the end user: keyed after all where the operator asks
#: (PROMPTCACHE_KEY_USER, ``ChatRequest.end_user``), whatever face they came through.
END_USER = ("user", "safety_identifier")

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


def _arguments(text: str) -> Any:
    """A tool call's arguments as keyed: the JSON value when they parse (layout and key order do
    not matter), else the text."""
    try:  # re-encoded here: a value nested too deeply for json is keyed as its text
        value = json.loads(text)
        return ["json", json.dumps(value, separators=(",", ":"), sort_keys=True)]
    except (ValueError, RecursionError):
        return ["text", text]


def _part(part: Mapping[str, Any]) -> list[str]:
    """A content part as keyed: a text part by its canonical text, any other (image, audio,
    file) by a hash of the whole part (its bytes or its URL and options)."""
    if part.get("type") == "text" and isinstance(part.get("text"), str):
        return ["text", canonical(part["text"])]
    return [str(part.get("type")), _digest(part)]


def turn_keys(messages: Sequence[Message]) -> list[Any]:
    """Each turn as the key sees it. A plain text turn is ``[role, canonical text]`` (as before
    tools existed, so stored entries keep their keys); any other is an object holding its tool
    calls by position, the call a tool result answers as ``[turn, index]`` of that call (ids are
    opaque: a replayed answer has fresh ones), and its parts (``_part``)."""
    calls: dict[str, list[int]] = {}
    keys: list[Any] = []
    for turn, m in enumerate(messages):
        if m.plain:
            keys.append([m.role, canonical(m.content)])
            continue
        form: dict[str, Any] = {"role": m.role, "content": canonical(m.content)}
        if m.parts:
            form["parts"] = [_part(p) for p in m.parts]
        if m.tool_calls:
            form["calls"] = [[c.type, c.name, _arguments(c.arguments)] for c in m.tool_calls]
            for index, call in enumerate(m.tool_calls):
                if call.id:
                    calls[call.id] = [turn, index]
        if m.tool_call_id is not None:
            form["answers"] = calls.get(m.tool_call_id, ["id", m.tool_call_id])
        if m.name:
            form["name"] = m.name
        keys.append(form)
    return keys


def turn_text(key: Any) -> str:
    """The exact tier's text of the last turn: its canonical text for a plain user turn (as
    before tools existed), else its whole key form with its role (a tool result, an assistant
    prefill, parts, a name), which no plain user prompt can spell."""
    if isinstance(key, list) and key[0] == "user":
        return str(key[1])
    return "\x00turn " + json.dumps(key, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def namespace(
    request: ChatRequest, embedder_id: str, dim: int, keys: list[Any] | None = None
) -> str:
    """Entries only ever match within one namespace.

    It holds the tenant, the model, the embedder and its dimension, the generation parameters
    that change answers (temperature, max_tokens, and ``options``: tools, response format, stop,
    seed... when any is set), the end user where the operator keys on it (``end_user``, when
    set), the conversation context (system prompt and earlier turns, ``turn_keys``) and
    ``KEY_VERSION``: a follow-up question never matches one asked in another context.
    ``keys``: the request's ``turn_keys``, if already computed.
    """
    context = (turn_keys(request.messages) if keys is None else keys)[:-1]
    params: dict[str, Any] = {
        "temperature": None if request.temperature is None else round(request.temperature, 2),
        "max_tokens": request.max_tokens,
    }
    if request.options:  # only when set: requests without any keep the keys they always had
        params["options"] = dict(request.options)
    payload = {"model": request.model, "params": params, "context": context, "v": KEY_VERSION}
    if request.end_user:  # only when set: without it a request keeps the key it always had
        payload["user"] = dict(request.end_user)
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
