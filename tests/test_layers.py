"""The architecture, checked: no import cycles, and each layer imports only what it may
(docs/ARCHITECTURE.md). Imports under `if TYPE_CHECKING:` are not run, so they don't count."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PACKAGES = ("gateway", "store")

#: What only the store may know: its Redis stack, its key and stream-id formats, its payloads.
STORE_INSIDE = (
    "store.redis_store",
    "store.pubsub",
    "store.resp",
    "store.batcher",
    "store.cluster",
    "store.keys",
    "store.payloads",
    "store.scripts",
    "redis",
    "hiredis",
)

#: module prefix -> prefixes it must never import
FORBIDDEN = {
    "store": ("gateway",),
    "gateway.core": ("gateway.doors", "gateway.fanout", "gateway.server", *STORE_INSIDE),
    "gateway.doors": ("gateway.fanout", "gateway.server", *STORE_INSIDE),
    "gateway.fanout": ("gateway.doors", "gateway.server", *STORE_INSIDE),
    "gateway.cursors": ("gateway.doors", "gateway.server", *STORE_INSIDE),
    "gateway.presence": ("gateway.doors", "gateway.server", *STORE_INSIDE),
    "gateway.epoch": ("gateway.doors", "gateway.server", *STORE_INSIDE),
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


def _walk() -> dict[str, list[str]]:
    """module -> every module it imports at run time."""
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return {_module(p): sorted(_runtime_imports(p)) for p in files}


def _imports() -> dict[str, list[str]]:
    # In a child process: after the in-process core tests, ast.parse here can hit CPython
    # 3.11.7's "AST constructor recursion depth mismatch" bug (gh-106905).
    out = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def _graph() -> dict[str, set[str]]:
    imports = _imports()
    return {m: {i for i in deps if i in imports} for m, deps in imports.items()}


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
    bad = []
    for module, imports in _imports().items():
        for layer, forbidden in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                for imported in imports:
                    if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                        bad.append(f"{module} imports {imported}")
    assert not bad, bad


if __name__ == "__main__":
    print(json.dumps(_walk()))
