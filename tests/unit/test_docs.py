"""README, QUICKSTART and the pages under docs/ stay true to the code: every setting, route and
command is documented."""

from __future__ import annotations

from pathlib import Path

from promptcache.routes import ROUTES
from promptcache.settings import SETTINGS
from promptcache_tools.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
#: README and every page under docs/: a settings table may live in either.
DOCS = "\n".join(
    [README, *(p.read_text(encoding="utf-8") for p in sorted((REPO / "docs").glob("*.md")))]
)


def test_every_setting_is_in_a_settings_table_with_its_default() -> None:
    for name, (default, _) in SETTINGS.items():
        row = next((line for line in DOCS.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} is missing from the settings tables (README, docs/)"
        if default:
            assert f"`{default}`" in row, f"{name}'s default is not {default} in the docs"


def test_every_route_and_command_is_documented() -> None:
    for method, path in ROUTES:
        assert f"{method} {path}" in README or f"`{method} {path}`" in README, (method, path)
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in commands:
        assert f"`promptcache {command}" in README, command


def test_the_two_commands() -> None:
    assert "make serve" in README and "make test" in README
    quickstart = (REPO / "QUICKSTART.md").read_text(encoding="utf-8")
    assert "make serve" in quickstart
