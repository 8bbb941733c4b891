"""Reading JSON-lines files (plain or gzip) with errors that name the file and line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from promptcache._errors import PromptCacheError


def json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a malformed line raises PromptCacheError."""
    try:
        with (
            gzip.open(path, "rt", encoding="utf-8")
            if path.name.endswith(".gz")
            else path.open(encoding="utf-8") as fh
        ):
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise PromptCacheError(f"{path}:{lineno}: not valid JSON: {exc}") from None
                if not isinstance(obj, dict):
                    raise PromptCacheError(f"{path}:{lineno}: each line must be a JSON object")
                yield lineno, obj
    except (gzip.BadGzipFile, EOFError, UnicodeDecodeError) as exc:
        raise PromptCacheError(f"{path}: cannot read: {exc}") from None


def require_text(
    path: Path, lineno: int, obj: dict[str, Any], name: str, default: Any = None
) -> str:
    """``obj[name]`` as a non-empty string, else an error naming the file, line and field."""
    value = obj.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise PromptCacheError(f"{path}:{lineno}: '{name}' must be a non-empty string")
    return value
