"""Every core event has a rendering in every door: adding an event without one fails
here, not in front of a user. A door that shows nothing for an event says so explicitly
(an entry that renders to b"", or the web's SILENT set), so a missing one is a KeyError,
never a silent drop."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

from gateway.core import events as ev
from gateway.doors.irc import render as irc_render
from gateway.doors.line import render
from gateway.doors.web import protocol

ROOT = Path(__file__).resolve().parent.parent


def test_every_event_is_rendered_by_every_door() -> None:
    kinds = set(typing.get_args(ev.Event))
    assert len(kinds) > 15
    line = set(render._RENDER)
    web = set(protocol._FRAMES) | {ev.Messages} | protocol.SILENT
    irc = set(irc_render.RENDER)
    assert kinds - line == set(), "line door lacks a rendering"
    assert kinds - web == set(), "web door lacks a frame"
    assert kinds - irc == set(), "IRC door lacks a rendering"


_SILENT_DROPS = """
import ast, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.match_case)
            and isinstance(node.pattern, ast.MatchAs)
            and node.pattern.pattern is None
            and all(isinstance(s, ast.Pass) for s in node.body)
        ):
            print(f"{path}: `case _: pass` drops what it matches")
"""


def test_no_door_drops_an_event_it_does_not_know() -> None:
    """A `case _: pass` in a renderer is how the IRC door used to drop events silently;
    the doors dispatch through their tables instead. (Parsed in a child process: after
    other tests, ast.parse here can hit CPython 3.11.7's recursion-depth bug, gh-106905.)"""
    out = subprocess.run(
        [sys.executable, "-c", _SILENT_DROPS, str(ROOT / "gateway" / "doors")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out == "", out
