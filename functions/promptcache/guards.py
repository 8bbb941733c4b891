"""False-hit guards: checks that look beyond the embedding where it is blind.

A guard takes the query and a candidate's prompt, both canonical (``_keys.canonical``: case,
letters and code kept) and returns a reason to reject the candidate, or None. Most guards read
words in the folded form the embedder reads (``_keys.normalize``); ``literal_guard`` compares
what folding merges. Guards are pure
functions of the two strings and cost microseconds; the core applies them, best candidate first,
to every candidate at or above the threshold.

Each guard is measured on its own with ``promptcache eval`` (docs/quality.md); only
those that pay for themselves are in ``default_guards()``. ``ALL_GUARDS`` lists every guard.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from ._keys import literal_spans, normalize
from ._polarity import polarity_guard
from ._tally import Guard

_WORD = re.compile(r"\w+(?:['’]\w+)*")

_UNITS = {
    "%": "percent",
    "percent": "percent",
    "per": "per",
    "mm": "mm",
    "cm": "cm",
    "m": "m",
    "km": "km",
    "meter": "m",
    "meters": "m",
    "metre": "m",
    "metres": "m",
    "kilometer": "km",
    "kilometers": "km",
    "kilometre": "km",
    "kilometres": "km",
    "centimeter": "cm",
    "centimeters": "cm",
    "millimeter": "mm",
    "millimeters": "mm",
    "mile": "mile",
    "miles": "mile",
    "mi": "mile",
    "ft": "ft",
    "foot": "ft",
    "feet": "ft",
    "inch": "in",
    "inches": "in",
    "yard": "yd",
    "yards": "yd",
    "mg": "mg",
    "g": "g",
    "gram": "g",
    "grams": "g",
    "kg": "kg",
    "kilogram": "kg",
    "kilograms": "kg",
    "kilo": "kg",
    "kilos": "kg",
    "lb": "lb",
    "lbs": "lb",
    "pound": "lb",
    "pounds": "lb",
    "oz": "oz",
    "ounce": "oz",
    "ounces": "oz",
    "ton": "t",
    "tons": "t",
    "tonne": "t",
    "tonnes": "t",
    "ml": "ml",
    "l": "l",
    "liter": "l",
    "liters": "l",
    "litre": "l",
    "litres": "l",
    "gallon": "gal",
    "gallons": "gal",
    "cup": "cup",
    "cups": "cup",
    "tsp": "tsp",
    "teaspoon": "tsp",
    "teaspoons": "tsp",
    "tbsp": "tbsp",
    "tablespoon": "tbsp",
    "tablespoons": "tbsp",
    "ms": "ms",
    "s": "s",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "min": "min",
    "mins": "min",
    "minute": "min",
    "minutes": "min",
    "h": "h",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "day": "day",
    "days": "day",
    "week": "week",
    "weeks": "week",
    "month": "month",
    "months": "month",
    "year": "year",
    "years": "year",
    "yr": "year",
    "yrs": "year",
    "c": "°c",
    "°c": "°c",
    "celsius": "°c",
    "f": "°f",
    "°f": "°f",
    "fahrenheit": "°f",
    "k": "k",
    "kelvin": "kelvin",
    "kb": "kb",
    "mb": "mb",
    "gb": "gb",
    "tb": "tb",
    "kbps": "kbps",
    "mbps": "mbps",
    "gbps": "gbps",
    "hz": "hz",
    "khz": "khz",
    "mhz": "mhz",
    "ghz": "ghz",
    "w": "w",
    "kw": "kw",
    "watt": "w",
    "watts": "w",
    "v": "v",
    "volt": "v",
    "volts": "v",
    "mah": "mah",
    "$": "usd",
    "usd": "usd",
    "dollar": "usd",
    "dollars": "usd",
    "€": "eur",
    "eur": "eur",
    "euro": "eur",
    "euros": "eur",
    "£": "gbp",
    "gbp": "gbp",
    "¥": "jpy",
    "yen": "jpy",
    "rs": "inr",
    "inr": "inr",
    "rupee": "inr",
    "rupees": "inr",
    "lakh": "lakh",
    "lakhs": "lakh",
    "crore": "crore",
    "crores": "crore",
    "thousand": "e3",
    "k$": "e3",
    "million": "e6",
    "millions": "e6",
    "billion": "e9",
    "billions": "e9",
    "trillion": "e12",
}
_CARDINALS = {
    "zero": 0,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
    "dozen": 12,
}
_ORDINALS = {
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "twentieth": 20,
    "hundredth": 100,
}
# A number: digits with thousands separators or decimals, an optional ordinal suffix, an
# optional unit glued on ("5km", "10%", "$5" is handled by the currency prefix).
_NUMBER = re.compile(
    r"(?P<cur>[$€£¥])?(?P<num>\d+(?:[.,]\d+)*)(?P<ord>st|nd|rd|th)?(?P<unit>%|°[cf]|[a-z]+)?"
)


_PLURAL = re.compile(r"(\d)['’]s\b")


def _number_value(raw: str) -> str:
    digits = raw
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", digits):
        digits = digits.replace(",", "")
    elif re.fullmatch(r"\d+,\d+", digits):
        digits = digits.replace(",", ".")
    try:
        value = float(digits)
    except ValueError:
        return raw
    return f"{value:g}"


@lru_cache(maxsize=8192)
def quantities(text: str) -> Counter[str]:
    """The numbers of a text as canonical values with their unit, if any ("5 km" = "5km",
    "two" = "2", "6th" = "sixth"). "one"/"first" count only before a unit."""
    found: Counter[str] = Counter()
    words = _WORD.findall(text)
    for i, word in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        unit = _UNITS.get(nxt, "")
        if word in _CARDINALS:
            found[f"{_CARDINALS[word]}{unit}"] += 1
        elif word in _ORDINALS:
            found[f"#{_ORDINALS[word]}"] += 1
        elif word == "one" and unit and len(nxt) > 1:
            found[f"1{unit}"] += 1
    for match in _NUMBER.finditer(_PLURAL.sub(r"\1s", text)):
        value = _number_value(match["num"])
        if match["ord"]:
            found[f"#{value}"] += 1
            continue
        glued = match["unit"]
        if glued == "s":  # "1990s", "50's", "6s": a plural or a model name, not seconds
            found[f"{value}s"] += 1
            continue
        unit = _UNITS.get(glued, "") if glued else ""
        if not unit and not glued:
            rest = text[match.end() :].lstrip()
            nxt = _WORD.match(rest)
            unit = _UNITS.get(nxt.group(0), "") if nxt else ""
            if not unit and rest[:1] in ("%", "°"):
                unit = _UNITS.get(rest[:2] if rest[:1] == "°" else "%", "")
        if match["cur"]:
            unit = _UNITS[match["cur"]]
        found[f"{value}{unit}"] += 1
    return found


_fold = lru_cache(maxsize=8192)(normalize)


def numbers_guard(query: str, candidate: str) -> str | None:
    """Different numbers or quantities ask different questions ("2 eggs" vs "3 eggs", "5 km" vs
    "5 miles"); the same number written differently does not ("two" = "2", "6th" = "sixth")."""
    if quantities(_fold(query)) != quantities(_fold(candidate)):
        return "numbers differ"
    return None


_NEGATIONS = frozenset(
    {
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "nowhere",
        "neither",
        "nor",
        "without",
        "cannot",
        "unable",
        "lack",
        "lacks",
    }
)


def _negations(text: str) -> int:
    count = 0
    for word in _WORD.findall(text):
        if word in _NEGATIONS or word.endswith(("n't", "n’t")):
            count += 1
    return count


def negation_guard(query: str, candidate: str) -> str | None:
    """One prompt negated and the other not ("... with sugar" vs "... without sugar")."""
    if (_negations(_fold(query)) > 0) != (_negations(_fold(candidate)) > 0):
        return "negation differs"
    return None


#: Words that are never the content that changes who does what.
_STOP_WORDS = (
    "a an the and or nor but if then so of to in into on onto at by for from with "
    "without as about over under between than vs versus via per is are was were be "
    "been being am do does did has have had having it its it's this that these those "
    "there their they them he she his her him i me my we us our you your who whom "
    "whose which what when where why how can could should would will shall may might "
    "must also very more most much many some any all each other such only own same "
    "just not no s 's"
)
_STOP = frozenset(_STOP_WORDS.split())
#: Anchors around which an exchange keeps the meaning ("a and b" = "b and a").
_SYMMETRIC = frozenset({"and", "or", "nor", "vs", "versus", "plus", "with", "between", "&"})


def _indexed(words: list[str]) -> list[tuple[str, int]]:
    seen: Counter[str] = Counter()
    out = []
    for word in words:
        out.append((word, seen[word]))
        seen[word] += 1
    return out


def swap_guard(query: str, candidate: str) -> str | None:
    """Two content words (or phrases) exchanged around a part both prompts share: "convert
    celsius to fahrenheit" vs "convert fahrenheit to celsius", "a born b" vs "b born a". A phrase
    moved elsewhere, or an exchange around "and"/"or"/"vs", keeps the meaning and passes."""
    wq, wc = _WORD.findall(_fold(query)), _WORD.findall(_fold(candidate))
    iq, ic = _indexed(wq), _indexed(wc)
    pos_c = {tok: i for i, tok in enumerate(ic)}
    shared = [(tok, i, pos_c[tok]) for i, tok in enumerate(iq) if tok in pos_c]
    if len(shared) < 3:
        return None
    movers = [(tok, i, j) for tok, i, j in shared if tok[0] not in _STOP]
    if len(movers) < 2:
        return None
    count_q, count_c = Counter(wq), Counter(wc)
    for anchor, ai, aj in shared:
        # an anchor must be unambiguous (once in each prompt) and not a symmetric connective
        if anchor[0] in _SYMMETRIC or count_q[anchor[0]] > 1 or count_c[anchor[0]] > 1:
            continue
        forward = [(i - ai, j - aj) for tok, i, j in movers if i < ai and j > aj]
        if not forward:
            continue
        backward = [(i - ai, j - aj) for tok, i, j in movers if i > ai and j < aj]
        for xq, xc in forward:
            for yq, yc in backward:
                # x took y's slot and y took x's (relative to the anchor, within three words)
                if abs(xc - yq) <= 3 and abs(yc - xq) <= 3:
                    return "words exchanged"
    return None


#: Prepositions whose object is the target of the request ("into spanish", "from usd to eur").
_TARGET_PREPOSITIONS = frozenset({"into", "to", "in", "for", "from", "than", "vs", "versus"})


def _targets(words: list[str]) -> list[tuple[str, str]]:
    out = []
    for i, word in enumerate(words[:-1]):
        if word in _TARGET_PREPOSITIONS:
            for nxt in words[i + 1 : i + 4]:
                if nxt not in _STOP:
                    out.append((word, nxt))
                    break
    return out


def target_guard(query: str, candidate: str) -> str | None:
    """The same request aimed elsewhere: "translate ... into spanish" vs "... into german". A
    preposition's object differs and neither prompt mentions the other's object at all."""
    wq, wc = _WORD.findall(_fold(query)), _WORD.findall(_fold(candidate))
    sq, sc = set(wq), set(wc)
    tq, tc = _targets(wq), _targets(wc)
    objects_c: dict[str, set[str]] = {}
    for prep, obj in tc:
        objects_c.setdefault(prep, set()).add(obj)
    for prep, obj in tq:
        theirs = objects_c.get(prep)
        if not theirs or obj in theirs or obj in sc:
            continue
        if any(other not in sq for other in theirs):
            return f"target differs ({prep} {obj})"
    return None


def _letter_words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def literal_guard(query: str, candidate: str) -> str | None:
    """What the exact tier keeps apart and the embedder cannot see: quotations and code that
    differ letter for letter (``'ABC'`` vs ``'abc'``, code indented differently) when both
    prompts have some, and words that only NFKC or case folding makes equal (``10²`` vs
    ``102``, ``Maße`` vs ``Masse``)."""
    sq, sc = sorted(literal_spans(query)), sorted(literal_spans(candidate))
    if sq and sc and sq != sc:
        return "quoted text or code differs"
    wq, wc = _letter_words(query), _letter_words(candidate)
    theirs = {_fold(w) for w in wc - wq}
    if any(_fold(w) in theirs for w in wq - wc):
        return "letters differ"
    return None


ALL_GUARDS: dict[str, Guard] = {
    "numbers_guard": numbers_guard,
    "negation_guard": negation_guard,
    "swap_guard": swap_guard,
    "target_guard": target_guard,
    "literal_guard": literal_guard,
    "polarity_guard": polarity_guard,
}


def default_guards() -> tuple[Guard, ...]:
    """The guards that pay for themselves on held-out data (fewer false hits than raising the
    threshold to the same recall): numbers, exchanged roles, literal differences (what the exact
    tier keeps apart) and opposite polarity or direction. ``negation_guard`` and
    ``target_guard`` cost as much recall as a higher threshold would and stay opt-in."""
    return (numbers_guard, swap_guard, literal_guard, polarity_guard)


#: PROMPTCACHE_VERIFIER -> the extra checks it adds after the default guards.
STRICT: dict[str, tuple[Guard, ...]] = {
    "off": (),
    "on": (negation_guard, target_guard),
}


def strict_guards(kind: str) -> tuple[Guard, ...]:
    """The optional strict guards (``off`` by default). ``on`` adds the negation and
    changed-target checks: on held-out data they trade recall for precision at about the rate a
    higher threshold does, so they are opt-in, for traffic where these mistakes cost most."""
    return STRICT[kind]
