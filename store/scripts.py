"""The Redis Lua scripts, each composed once at import from shared pieces and its body.

Several scripts need the same few steps: read the server time, take a token from a
sender's bucket. Written into each script, they drifted
apart. So, as centrifuge composes its Redis engine's scripts, each step is written once as a
piece, `lua/<piece>_fn.lua`, defining `local function`s; a script body, `lua/<name>.lua`,
names the pieces it needs in a header line (`-- uses: time, bucket`), and the text
sent to Redis is those pieces followed by the body. `Script.sha` is the sha1 of that text,
the name EVALSHA and SCRIPT LOAD know it by.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["LUA_DIR", "NAMES", "SCRIPTS", "Script", "compose", "pieces", "uses"]

LUA_DIR: Final = Path(__file__).with_name("lua")
NAMES: Final = (
    "post_many",
    "post_private",
    "post_gate",
    "join",
    "leave",
    "register_claim",
    "register",
    "complain",
    "advance",
    "login_gate",
    "address_gate",
    "token_issue",
    "token_login",
    "enter",
    "give_back",
    "forget",
    "address_count",
    "mod_ban",
    "lift_holds",
    "announce",
)
_USES: Final = re.compile(r"^--\s*uses:(.*)$")
_NONE: Final = frozenset({"", "(none)"})
_PIECE_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Script:
    """One composed script: its name, the Lua Redis runs, and that Lua's sha1 (hex)."""

    name: str
    source: str
    sha: str

    @classmethod
    def from_source(cls, name: str, source: str) -> Script:
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


def uses(text: str) -> tuple[str, ...]:
    """The pieces a Lua file names in its header (the leading comment lines), in order."""
    found: list[tuple[str, ...]] = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        match = _USES.match(line)
        if match:
            value = match.group(1).strip()
            names = () if value in _NONE else tuple(p.strip() for p in value.split(","))
            found.append(names)
    if len(found) > 1:
        raise ValueError("more than one '-- uses:' line in the header")
    names = found[0] if found else ()
    for piece in names:
        if not _PIECE_NAME.match(piece):
            raise ValueError(f"bad piece name {piece!r} in '-- uses:'")
    return names


def pieces(text: str, lua_dir: Path = LUA_DIR) -> list[str]:
    """Every piece a Lua file needs, each once, any piece after the pieces it uses."""
    order: list[str] = []
    visiting: list[str] = []

    def visit(piece: str) -> None:
        if piece in order:
            return
        if piece in visiting:
            raise ValueError(f"Lua pieces use each other in a cycle: {[*visiting, piece]}")
        visiting.append(piece)
        for dep in uses(_read(lua_dir / f"{piece}_fn.lua")):
            visit(dep)
        visiting.pop()
        order.append(piece)

    for piece in uses(text):
        visit(piece)
    return order


def compose(name: str, lua_dir: Path = LUA_DIR) -> str:
    """The Lua for script `name`: the pieces it uses, then its body."""
    body = _read(lua_dir / f"{name}.lua")
    parts = [_read(lua_dir / f"{piece}_fn.lua") for piece in pieces(body, lua_dir)]
    return "\n".join([*parts, body])


def _read(path: Path) -> str:
    text = path.read_text()
    return text if text.endswith("\n") else text + "\n"


SCRIPTS: Final[dict[str, Script]] = {
    name: Script.from_source(name, compose(name)) for name in NAMES
}
