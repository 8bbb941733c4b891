"""The fenced samples of README.md, QUICKSTART.md and docs/*.md, and the marks that say which of
them run (docs/development.md, "Samples run", documents the convention).

A ``sh`` or ``python`` block carries a mark on the nearest non-blank line before its opening
fence:

- ``<!-- sample: run -->``: run against a ``promptcache serve`` without API keys;
- ``<!-- sample: run, keys -->``: against one with API keys (``$TENANT_KEY``, ``$ADMIN_KEY``);
- ``<!-- sample: run, continues -->``: after the file's previous run block, in the same process
  (for a block that uses what the one before defined);
- ``<!-- sample: not run: REASON -->``: shown only (deployment, benchmarks, long commands).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE_LANGUAGES = ("sh", "python")
#: What the samples call the local server; the test substitutes its own server's address.
BASE_URL = "http://127.0.0.1:8080"

_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)")
_MARK = re.compile(r"^<!-- sample: (.*?) -->$")
_RUN_OPTIONS = {"keys", "continues"}


def doc_files() -> list[Path]:
    """The documents a user reads: README, QUICKSTART and every page of docs/."""
    return [REPO / "README.md", REPO / "QUICKSTART.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    """One fenced block: its file, the line of its opening fence, its language and text, and the
    mark before it (``None`` when there is none)."""

    path: Path
    line: int
    language: str
    code: str
    mark: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def options(self) -> set[str]:
        """The run options of a run mark (``keys``, ``continues``); empty otherwise."""
        if self.mark is None or not self.mark.startswith("run"):
            return set()
        return {o.strip() for o in self.mark.split(",")[1:]}

    @property
    def runs(self) -> bool:
        return self.mark is not None and (self.mark == "run" or self.mark.startswith("run,"))

    def mark_problem(self) -> str | None:
        """Why this block's mark is not one of the convention's, or None when it is."""
        if self.language not in SAMPLE_LANGUAGES:
            return None
        if self.mark is None:
            return "no <!-- sample: ... --> mark before it"
        if self.runs:
            unknown = self.options - _RUN_OPTIONS
            return f"unknown run options {sorted(unknown)}" if unknown else None
        if self.mark.startswith("not run: ") and self.mark[len("not run: ") :].strip():
            return None
        return f"mark {self.mark!r} is neither 'run[, keys][, continues]' nor 'not run: REASON'"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        ticks, language = fence.group(1), fence.group(2)
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].strip() == ticks),
            None,
        )
        if end is None:
            raise ValueError(f"{path}:{i + 1}: fenced block never closed")
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = _MARK.match(before.strip())
        found.append(
            Block(
                path=path,
                line=i + 1,
                language=language,
                code="\n".join(lines[i + 1 : end]) + "\n",
                mark=mark.group(1).strip() if mark else None,
            )
        )
        i = end + 1
    return found


def samples() -> list[Block]:
    """Every sh or python block of the documents."""
    return [b for f in doc_files() for b in blocks(f) if b.language in SAMPLE_LANGUAGES]


def runnable() -> list[tuple[Block, list[Block]]]:
    """Each run block with the blocks it continues (the file's earlier run blocks it chains to,
    oldest first)."""
    out: list[tuple[Block, list[Block]]] = []
    for f in doc_files():
        chain: list[Block] = []
        for block in blocks(f):
            if block.language not in SAMPLE_LANGUAGES or not block.runs:
                continue
            chain = [*chain, block] if "continues" in block.options else [block]
            out.append((block, chain[:-1]))
    return out
