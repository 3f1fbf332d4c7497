"""The architecture, checked: no import cycles, and each layer imports only what it may
(docs/ARCHITECTURE.md). Imports under `if TYPE_CHECKING:` are not run, so they don't count."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ("gateway", "store")

#: module prefix -> prefixes it must never import
FORBIDDEN = {
    "store": ("gateway",),
    "gateway.core": (
        "gateway.doors",
        "gateway.fanout",
        "gateway.server",
        "store.redis_store",
        "store.pubsub",
        "store.resp",
        "store.batcher",
        "redis",
        "hiredis",
    ),
    "gateway.doors": (
        "store.redis_store",
        "store.pubsub",
        "store.resp",
        "store.batcher",
        "gateway.fanout",
        "gateway.server",
        "redis",
    ),
    "gateway.fanout": ("gateway.doors", "gateway.server", "store.redis_store"),
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                found.add(sub.module)
                found |= {f"{sub.module}.{a.name}" for a in sub.names}
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module(p): p for p in files}
    return {m: {i for i in _runtime_imports(p) if i in modules} for m, p in modules.items()}


def test_no_import_cycles() -> None:
    graph = _graph()
    assert "gateway.core.session" in graph["gateway.server"] or graph["gateway.server"]
    assert "store.contract" in graph["gateway.core.session"]  # the walk sees real edges
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_each_layer_imports_only_what_it_may() -> None:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    bad = []
    for path in files:
        module = _module(path)
        for layer, forbidden in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                for imported in _runtime_imports(path):
                    if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                        bad.append(f"{module} imports {imported}")
    assert not bad, bad
