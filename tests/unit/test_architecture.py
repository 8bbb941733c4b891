"""The house, read from the source: the layer package holds what Lambda runs and reaches neither up
into the handlers nor out into the tools; no import circle; rooms of a livable size; the public
API is the one listed here."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import promptcache
from promptcache.routes import ROUTES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "promptcache": ROOT / "functions" / "promptcache",
    "promptcache_handlers": ROOT / "functions" / "handlers",
    "promptcache_tools": ROOT / "functions" / "tools",
}
LAYER_MAX_LINES = 500
TOOLS_MAX_LINES = 500


def _module_name(package: str, path: Path) -> str:
    rel = path.relative_to(PACKAGES[package]).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([package, *parts])


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            found[_module_name(package, path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every project module ``name`` imports, at the top or inside a function, plus modules named
    to ``importlib.import_module`` as string literals."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        for target in targets:
            if target in MODULES and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_layer_imports_neither_the_tools_nor_the_handlers() -> None:
    bad = {
        name: sorted(t for t in targets if not t.startswith("promptcache."))
        for name, targets in GRAPH.items()
        if name == "promptcache" or name.startswith("promptcache.")
    }
    assert {k: v for k, v in bad.items() if v} == {}
    for path in PACKAGES["promptcache"].rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "promptcache_handlers" not in text and "promptcache_tools" not in text, path


def test_the_import_graph_has_no_circle() -> None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if nxt.startswith(node + "."):
                continue  # a package's face handing on its own modules' names
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert circles == []


@pytest.mark.parametrize(
    "path", sorted(PACKAGES["promptcache"].rglob("*.py")), ids=lambda p: p.name
)
def test_no_room_of_the_layer_is_over_500_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= LAYER_MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


@pytest.mark.parametrize(
    "path",
    sorted(PACKAGES["promptcache_tools"].rglob("*.py")),
    ids=lambda p: str(p.relative_to(PACKAGES["promptcache_tools"])),
)
def test_no_tool_module_is_over_500_lines(path: Path) -> None:
    """The tools (eval, calibrate, the CLI, the local server) are split by job too."""
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= TOOLS_MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


def _powertools_importers() -> set[str]:
    found = set()
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] == "aws_lambda_powertools" for n in names):
                found.add(name)
    return found


def test_only_the_http_wing_and_the_composition_root_import_powertools() -> None:
    layer = {n for n in _powertools_importers() if n.startswith("promptcache.")}
    outside = {n for n in layer if not n.startswith("promptcache.http.")}
    assert outside == {"promptcache.runtime"}  # lazily, to read SSM parameters


def test_the_arrows_run_one_way_into_the_http_wing() -> None:
    """handlers -> http -> core -> adapters: no layer module but the composition root imports
    from the wing, and the wing reaches no adapter."""
    wing = {n for n in GRAPH if n == "promptcache.http" or n.startswith("promptcache.http.")}
    into = {
        name: sorted(GRAPH[name] & wing)
        for name in GRAPH
        if name.startswith("promptcache") and not name.startswith("promptcache_")
        and name not in wing and name != "promptcache.runtime"
    }  # fmt: skip
    assert {k: v for k, v in into.items() if v} == {}
    adapters = {
        name: sorted(t for t in GRAPH[name] if t.startswith("promptcache.adapters"))
        for name in wing
    }
    assert {k: v for k, v in adapters.items() if v} == {}


@pytest.mark.parametrize("module", ["promptcache.core", "promptcache.http", "promptcache.runtime"])
def test_the_core_and_the_wing_package_import_without_powertools(module: str) -> None:
    """Only the wing's modules that speak HTTP load Powertools: the policy, the wing's package
    and the composition root (which builds the rate limiter) import with it blocked."""
    code = (
        f"import sys\nsys.modules['aws_lambda_powertools'] = None\nimport {module}\nprint('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_route_table_and_the_handlers_routes_are_the_same_set() -> None:
    """``routes.ROUTES`` (read by the infrastructure and the local server) and the routes the
    handler modules register on their resolvers name the same (method, path, module)."""
    import importlib

    registered = set()
    for module in ("chat", "stats", "health"):
        app = importlib.import_module(f"promptcache_handlers.{module}").app
        for route in app._static_routes + app._dynamic_routes:
            path = re.sub(r"<\w+>", "{id}", route.path)
            registered |= {(method, path, module) for method in route.method.split("|")}
    assert registered == {(method, path, module) for (method, path), module in ROUTES.items()}


def test_the_core_is_policy_only() -> None:
    """core.py decides; index sync, accounting, health, admin, the claim step and the backend
    boundary are rooms of their own (the core's cap is every room's)."""
    lines = len((PACKAGES["promptcache"] / "core.py").read_text(encoding="utf-8").splitlines())
    assert lines <= LAYER_MAX_LINES


def test_routes_import_without_the_runtime_dependencies() -> None:
    """The infrastructure program reads ROUTES; it needs no numpy, httpx or Powertools."""
    code = (
        "import sys\n"
        "for m in ('numpy', 'httpx', 'aws_lambda_powertools'): sys.modules[m] = None\n"
        "from promptcache.routes import ROUTES\n"
        "print(len(ROUTES))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(__import__("promptcache.routes").routes.ROUTES)


PUBLIC = [
    "BackendError", "BadRequest", "Bounds", "CacheHit", "CacheMode", "ChatRequest", "ChatResult",
    "ChatStream", "Completion", "ConfigError", "Cursor", "Documents", "Embedder", "EmbedderError",
    "Entry",
    "Index", "LLM", "Locks", "LogRecord", "Message", "ModelCheck", "PromptCache",
    "PromptCacheError", "RateWindows", "RequestError", "Settings", "Stats", "StatsError", "Store",
    "StoreError", "StreamingLLM",
    "SyncResult", "Tier", "UpstreamBadRequest", "UpstreamError", "UpstreamNotConfigured",
    "UpstreamPayloadTooLarge", "UpstreamRateLimited", "UpstreamTimeout", "UnsupportedField",
    "UpstreamOverloaded",
    "Usage", "VectorIndex",
    "Verifier", "VerifierError",
]  # fmt: skip


def test_the_public_api_is_pinned_and_every_name_resolves() -> None:
    assert sorted(promptcache.__all__) == sorted(PUBLIC)
    for name in promptcache.__all__:
        assert getattr(promptcache, name).__name__ == name
    with pytest.raises(AttributeError):
        promptcache.NoSuchName  # noqa: B018
