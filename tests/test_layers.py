"""The architecture, checked: no import cycles, and each layer imports only what its entry in
`ALLOWED` lists (docs/ARCHITECTURE.md, "Who may call whom"). An allow-list, not a list of
what is forbidden: a new edge between layers, a new layer, or a new third-party package in a
layer fails here until someone decides it belongs. Imports under `if TYPE_CHECKING:` are not
run, so they don't count."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PACKAGES = ("gateway", "store")

#: What the chat's layers share: its words (the contract), its clock, its counters.
CONTRACT = ("store.contract", "store.clock")
METRICS = ("gateway.metrics",)

#: The core's words a connection shell (the kit) speaks: commands in, events out, the
#: session it feeds (its phase, the per-gateway `Core`). Nothing else of the core.
CORE_FOR_KIT = (
    "gateway.core.commands",
    "gateway.core.events",
    "gateway.core.session.Phase",
    "gateway.core.session.Core",
    "gateway.core.session.Session",  # the shell makes one per connection and feeds it
)

#: layer (a module, or a package and everything under it) -> what it may import: module
#: prefixes of this project, and top-level names of third-party packages. The standard
#: library is always allowed. The longest matching layer applies. A door may import its own
#: package (`SELF`), never another door.
SELF = "<own package>"
ALLOWED: dict[str, tuple[str, ...]] = {
    "store": ("store", "redis", "hiredis", "fakeredis"),
    # the store on Redis: the contract, the client stack beside it, redis-py and hiredis
    "store.redis": ("store", "redis", "hiredis"),
    "gateway": (),  # the package's __init__
    "gateway.settings": (),
    "gateway.metrics": ("gateway.metrics", "prometheus_client"),
    "gateway.core": ("gateway.core", "gateway.settings", *CONTRACT, *METRICS),
    "gateway.kit": ("gateway.kit", *CORE_FOR_KIT, *METRICS, "websockets"),
    "gateway.doors": (),  # the package's __init__
    "gateway.doors.line": (SELF, "gateway.kit", "gateway.core", "store.contract", *METRICS),
    "gateway.doors.web": (SELF, "gateway.kit", "gateway.core", "store.contract", *METRICS),
    "gateway.doors.irc": (SELF, "gateway.kit", "gateway.core", "store.contract", *METRICS),
    # fan-out and what it drives: the core's events and users, the contract
    "gateway.fanout": (
        "gateway.fanout",
        "gateway.bigchat",
        "gateway.cursors",
        "gateway.presence",
        "gateway.epoch",
        "gateway.core",
        *CONTRACT,
        *METRICS,
    ),
    "gateway.bigchat": ("gateway.bigchat", "gateway.core", *CONTRACT, *METRICS),
    "gateway.cursors": ("gateway.cursors", "gateway.core", *CONTRACT, *METRICS),
    "gateway.presence": ("gateway.presence", "gateway.core", *CONTRACT, *METRICS),
    "gateway.epoch": ("gateway.epoch", "gateway.core", *CONTRACT, *METRICS),
    # the wiring: everything
    "gateway.server": ("gateway", "store", "redis", "hiredis", "fakeredis", "websockets"),
    "gateway.admin": ("gateway", "store", "redis", "hiredis", "fakeredis"),
    "gateway.policy": ("gateway.settings", "store.redis.policy"),
    "gateway.workers": ("gateway", "store"),  # --workers: the supervisor of server.py's
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
            elif isinstance(sub, ast.ImportFrom) and sub.level:
                found.add(f"<relative import, level {sub.level}>")
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


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


#: Entries in `ALLOWED` for a package's own `__init__` only, not what is under it: a new
#: module there must be given a layer, not inherit the package's.
PACKAGE_ONLY = {"gateway", "gateway.doors"}


def _layer(module: str) -> str | None:
    """The longest layer in `ALLOWED` that holds `module`."""
    found = [
        layer
        for layer in ALLOWED
        if module == layer or (layer not in PACKAGE_ONLY and _under(module, layer))
    ]
    return max(found, key=len) if found else None


def _own_package(module: str, layer: str) -> str:
    """A door's own package: gateway.doors.irc for gateway.doors.irc.codec."""
    depth = layer.count(".") + 1
    return ".".join(module.split(".")[:depth])


def _allowed(module: str, imported: str) -> bool:
    layer = _layer(module)
    if layer is None:
        return False
    top = imported.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return True
    for allowed in ALLOWED[layer]:
        prefix = _own_package(module, layer) if allowed == SELF else allowed
        if _under(imported, prefix):
            return True
        # `from gateway.core.session import Phase` names both the module and the name, and
        # `from gateway.core import events` the package: a module (or package) is allowed
        # when something allowed is in it; what is taken from it is checked on its own
        if allowed.startswith(imported + "."):
            return True
    return False


def _breaks(imports: dict[str, list[str]]) -> list[str]:
    bad = []
    for module, names in sorted(imports.items()):
        if _layer(module) is None:
            bad.append(f"{module} is in no layer: give it one in ALLOWED")
            continue
        for imported in names:
            if not _allowed(module, imported):
                bad.append(f"{module} imports {imported}")
    return bad


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
    imports = _imports()
    assert "gateway.kit.shell" in imports and "store.redis.link" in imports  # a real walk
    bad = _breaks(imports)
    assert not bad, "\n".join(bad)


def test_the_allow_list_catches_a_break() -> None:
    """The rule itself, on made-up edges: each of these is a break the architecture forbids
    and must fail, so a loosened rule shows here, not only in a review."""
    breaks = [
        ("gateway.core.user", "store.keys"),  # Redis words above the store
        ("gateway.core.session", "gateway.kit.shell"),  # the core reaching up
        ("gateway.doors.irc.codec", "gateway.doors.line.render"),  # a door into another
        ("gateway.doors.web.page", "gateway.fanout"),
        ("gateway.kit.shell", "gateway.doors.line.codec"),
        ("gateway.kit.codec", "gateway.core.login"),  # the kit past the session's face
        ("gateway.kit.codec", "gateway.core.session.Credentials"),
        ("gateway.fanout", "gateway.server"),
        ("gateway.presence", "redis"),
        ("gateway.core.names", "redis"),
        ("store.redis.store", "gateway.metrics"),
        ("store.redis.link", "fakeredis"),
        ("gateway.brand_new", "gateway.core"),  # a module in no layer
    ]
    for module, imported in breaks:
        assert _breaks({module: [imported]}), f"{module} -> {imported} passed"
    fine = [
        ("gateway.doors.irc.codec", "gateway.doors.irc.render"),
        ("gateway.kit.codec", "gateway.core"),
        ("gateway.kit.codec", "gateway.core.session.Phase"),
        ("gateway.kit.shell", "gateway.core.session"),
        ("gateway.core.session", "store.contract"),
        ("gateway.fanout", "gateway.cursors"),
        ("gateway.server", "store.redis"),
    ]
    for module, imported in fine:
        assert not _breaks({module: [imported]}), f"{module} -> {imported} failed"


if __name__ == "__main__":
    print(json.dumps(_walk()))
