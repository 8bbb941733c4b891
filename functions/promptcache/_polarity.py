"""The polarity and direction guard: the same request asked the opposite way round.

"sort ascending" vs "sort descending", "is it safe" vs "is it unsafe", "increase" vs "decrease",
"before" vs "after", "encrypt" vs "decrypt": an embedding puts such pairs next to each other (they
share every other word), yet each wants the other's answer reversed. The guard rejects a
candidate when one prompt uses one side of an opposite pair and the other prompt the other side
only. Words are compared in the folded form (``_keys.normalize``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from ._keys import normalize

#: Opposite pairs; each side also matches its usual inflections (``_forms``).
_PAIRS = (
    ("asc", "desc"),
    ("ascend", "descend"),
    ("increase", "decrease"),
    ("increment", "decrement"),
    ("before", "after"),
    ("earlier", "later"),
    ("min", "max"),
    ("minimum", "maximum"),
    ("minimize", "maximize"),
    ("minimise", "maximise"),
    ("smallest", "largest"),
    ("lowest", "highest"),
    ("oldest", "newest"),
    ("encrypt", "decrypt"),
    ("encryption", "decryption"),
    ("encode", "decode"),
    ("compress", "decompress"),
    ("serialize", "deserialize"),
    ("enable", "disable"),
    ("import", "export"),
    ("upload", "download"),
    ("buy", "sell"),
    ("upper", "lower"),
    ("uppercase", "lowercase"),
    ("push", "pull"),
    ("above", "below"),
    ("inside", "outside"),
    ("advantage", "disadvantage"),
    ("pro", "con"),
    ("input", "output"),
    ("inbound", "outbound"),
    ("positive", "negative"),
    ("lock", "unlock"),
    ("install", "uninstall"),
    ("mount", "unmount"),
    ("attach", "detach"),
    ("left", "right"),
    ("north", "south"),
    ("east", "west"),
)
#: Negating prefixes: "unsafe" is the opposite of "safe" when the other prompt says "safe".
_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non")
_WORD = re.compile(r"[^\W\d_]+(?:['’]t)?")
#: A prompt saying any of these may say "not X" for the other's "unX": no flip to find.
_NEGATING = frozenset({"not", "no", "non", "never", "un", "in", "dis"})


def _forms(word: str) -> set[str]:
    stem = word[:-1] if word.endswith("e") else word
    return {word, f"{word}s", f"{word}es", f"{stem}ed", f"{stem}ing", f"{stem}ion", f"{word}d"}


_SIDE: dict[str, tuple[int, int]] = {
    form: (pair, side)
    for pair, words in enumerate(_PAIRS)
    for side, word in enumerate(words)
    for form in _forms(word)
}


@lru_cache(maxsize=8192)
def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(normalize(text)))


def _sides(words: frozenset[str]) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for word in words:
        where = _SIDE.get(word)
        if where is not None:
            found.setdefault(where[0], set()).add(where[1])
    return found


def _negated(mine: frozenset[str], theirs: frozenset[str]) -> str | None:
    """A word of ``mine`` that is a word of ``theirs`` with a negating prefix, when ``mine``
    lacks that word and ``theirs`` lacks the prefixed one ("safe" vs "unsafe"), unless ``mine``
    negates by itself ("not known" vs "unknown", "non virgin" vs "non-virgin")."""
    if mine & _NEGATING or any(w.endswith(("n't", "n’t")) for w in mine):
        return None
    for word in theirs - mine:
        for prefix in _PREFIXES:
            rest = word[len(prefix) :]
            if word.startswith(prefix) and len(rest) >= 4 and rest in mine and rest not in theirs:
                return f"{rest}/{word}"
    return None


def polarity_guard(query: str, candidate: str) -> str | None:
    """One prompt on one side of an opposite pair, the other on the other side only."""
    wq, wc = _words(query), _words(candidate)
    if wq == wc:
        return None
    sq, sc = _sides(wq), _sides(wc)
    for pair in sq.keys() & sc.keys():
        if len(sq[pair]) == 1 and len(sc[pair]) == 1 and sq[pair] != sc[pair]:
            return f"opposite direction ({'/'.join(_PAIRS[pair])})"
    flipped = _negated(wq, wc) or _negated(wc, wq)
    return f"opposite polarity ({flipped})" if flipped else None
