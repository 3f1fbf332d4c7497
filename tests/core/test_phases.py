"""The session's phases as one table (gateway/core/phases.py): the table itself is sound,
the session changes phase only through it, and real logins walk exactly its moves."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core import phases
from gateway.core.phases import ACCEPTS, TRANSITIONS, Move, Phase, PhaseError, accepts, next_phase
from tests.core.conftest import Chat

CORE = Path(phases.__file__).parent


def test_the_table_is_sound() -> None:
    # CLOSED is reached from every phase and left by none
    for phase in Phase:
        if phase is not Phase.CLOSED:
            assert TRANSITIONS[(phase, Move.CLOSED)] is Phase.CLOSED
    assert not [key for key in TRANSITIONS if key[0] is Phase.CLOSED]
    # READY is reached from NICK, by a password and by a token
    assert next_phase(next_phase(Phase.NICK, Move.LOGGED_IN), Move.LOADED) is Phase.READY
    password = next_phase(next_phase(Phase.NICK, Move.NICK_TAKEN), Move.LOGGED_IN)
    assert next_phase(password, Move.LOADED) is Phase.READY
    with pytest.raises(PhaseError):
        next_phase(Phase.READY, Move.NICK_TAKEN)
    with pytest.raises(PhaseError):
        next_phase(Phase.CLOSED, Move.LOADED)  # a closed session never comes back
    assert accepts(Phase.NICK, cmd.Nick("x")) and not accepts(Phase.NICK, cmd.Password("x"))
    assert accepts(Phase.READY, cmd.Help()) and not accepts(Phase.LOADING, cmd.Help())
    assert set(ACCEPTS) == set(Phase) - {Phase.READY}


_PHASE_WRITES = """
import ast, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for sub in ast.walk(node):
                targets = sub.targets if isinstance(sub, ast.Assign) else []
                for t in targets:
                    names = t.elts if isinstance(t, ast.Tuple) else [t]
                    if any(ast.unparse(n) == "self.phase" for n in names):
                        print(path.name, node.name)
"""


def test_only_the_table_changes_a_sessions_phase() -> None:
    """Every `self.phase = ...` in the session's modules is the one in `_move` (and the
    first phase in `__init__`). Parsed in a child process: after other tests, ast.parse
    here can hit CPython 3.11.7's recursion-depth bug (gh-106905)."""
    out = subprocess.run(
        [sys.executable, "-c", _PHASE_WRITES, str(CORE)], capture_output=True, text=True, check=True
    ).stdout
    found = sorted(tuple(line.split()) for line in out.splitlines())
    assert found == [("base.py", "__init__"), ("base.py", "_move")]


async def test_logins_walk_every_move_of_the_table(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real logins, refused registrations and closed connections walk every move in the
    table (it has no dead entry), and only those (`next_phase` refuses any other)."""
    walked: set[tuple[Phase, Move]] = set()
    real = phases.next_phase

    def recording(phase: Phase, move: Move) -> Phase:
        walked.add((phase, move))
        return real(phase, move)

    monkeypatch.setattr("gateway.core.base.next_phase", recording)
    ann, ann_sink = await chat.login("ann")  # registered: NICK, PASSWORD, LOADING, READY
    await ann.handle(cmd.Say(("hello",)))
    await ann.handle(cmd.IssueToken())
    issued = ann_sink.of(ev.TokenIssued)[-1]
    assert isinstance(issued, ev.TokenIssued)
    resumed, _ = await chat.connect()
    await resumed.handle(cmd.Nick("ann", issued.token))  # a token: NICK, LOADING, READY
    assert resumed.phase is Phase.READY
    asked, _ = await chat.connect()
    await asked.handle(cmd.Nick("ANN"))
    await asked.handle(cmd.Password("wrong-one"))  # stays in PASSWORD
    loading, _ = await chat.connect()
    await loading.handle(cmd.Nick("eve"))  # new: #general's history is shown at login
    task = asyncio.ensure_future(loading.handle(cmd.Password("secret123")))
    for _ in range(100_000):  # the hash runs in a thread; then the history is shown
        if loading.phase is Phase.LOADING or task.done():
            break
        await asyncio.sleep(0)
    assert loading.phase is Phase.LOADING
    loading.closed()
    await task
    chat.store.max_registrations = 1
    await chat.login("cid")
    dan, _ = await chat.connect()
    await dan.handle(cmd.Nick("dan"))
    await dan.handle(cmd.Password("secret123"))  # the address's limit: a nickname again
    assert dan.phase is Phase.NICK
    for s in (ann, resumed, asked, dan):
        s.closed()
    assert walked == set(TRANSITIONS)
