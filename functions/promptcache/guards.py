"""False-hit guards: checks that look beyond the embedding where it is blind.

A guard takes the normalized query and a candidate's normalized prompt and returns a reason to
reject the candidate, or None.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Guard = Callable[[str, str], "str | None"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers_guard(query: str, candidate: str) -> str | None:
    """Different numbers or quantities ask different questions ("2 eggs" vs "3 eggs")."""
    if sorted(_NUMBER.findall(query)) != sorted(_NUMBER.findall(candidate)):
        return "numbers differ"
    return None


def default_guards() -> tuple[Guard, ...]:
    return (numbers_guard,)
