"""A session's phases and every move between them, written down as data (like h11's
state table): what may happen next is read here, not gathered from the session's code.

    NICK --nick_taken--> PASSWORD --logged_in--> LOADING --loaded--> READY
      ^                     |
      +-----nick_again------+        (a resume token: NICK --logged_in--> LOADING)

and from every phase `closed` leads to CLOSED, which has no way out. `ACCEPTS` says which
commands each phase takes before READY (READY takes every command); anything else is
answered "log in first". A door's parser reads the phase too (a line is a nickname in
NICK, a password in PASSWORD).
"""

from __future__ import annotations

import enum

from gateway.core import commands as cmd

__all__ = ["ACCEPTS", "TRANSITIONS", "Move", "Phase", "PhaseError", "accepts", "next_phase"]


class Phase(enum.Enum):
    """Where a session is; a door reads it to know what an input line means."""

    NICK = "nick"
    PASSWORD = "password"
    LOADING = "loading"
    READY = "ready"
    CLOSED = "closed"


class Move(enum.Enum):
    """What moves a session from one phase to the next."""

    NICK_TAKEN = "nick_taken"  # a valid nickname: its password (or a new one) is asked
    NICK_AGAIN = "nick_again"  # its registration was refused (look-alike, address limit)
    LOGGED_IN = "logged_in"  # a password or token accepted, or an account registered
    LOADED = "loaded"  # the backlog or first history was shown: live from now on
    CLOSED = "closed"  # the door's connection is gone


TRANSITIONS: dict[tuple[Phase, Move], Phase] = {
    (Phase.NICK, Move.NICK_TAKEN): Phase.PASSWORD,
    (Phase.NICK, Move.LOGGED_IN): Phase.LOADING,  # a resume token
    (Phase.PASSWORD, Move.LOGGED_IN): Phase.LOADING,
    (Phase.PASSWORD, Move.NICK_AGAIN): Phase.NICK,
    (Phase.LOADING, Move.LOADED): Phase.READY,
    **{(p, Move.CLOSED): Phase.CLOSED for p in Phase if p is not Phase.CLOSED},
}

#: The commands each phase takes before READY (READY takes them all, CLOSED none).
#: `Rejected` (a line the door could not parse) is answered in every phase.
ACCEPTS: dict[Phase, tuple[type, ...]] = {
    Phase.NICK: (cmd.Nick, cmd.Quit),
    Phase.PASSWORD: (cmd.Password, cmd.Quit),
    Phase.LOADING: (cmd.Quit,),
    Phase.CLOSED: (),
}


class PhaseError(Exception):
    """A move the table does not allow from the session's phase: a bug in the session,
    never the peer's doing."""


def next_phase(phase: Phase, move: Move) -> Phase:
    try:
        return TRANSITIONS[(phase, move)]
    except KeyError:
        raise PhaseError(f"no move {move.value} from {phase.value}") from None


def accepts(phase: Phase, command: cmd.Command) -> bool:
    """Whether a session in `phase` takes `command`."""
    return phase is Phase.READY or isinstance(command, ACCEPTS[phase])
