"""What a door supplies to the connection kit: a codec, bytes <-> core commands and events.

A codec has no socket, no loop and no timer: the kit's `Connection` (shell.py) owns
admission, deadlines, input queueing, bounded coalesced output and batching; it hands the
codec the bytes that arrived and the events the core emits, and writes what the codec
returns. So a codec is tested by feeding it bytes and events, and a new door is a codec
of a few hundred lines (docs/ARCHITECTURE.md, "Adding a door").

The flow for input: `feed(bytes)` cuts units (lines, WebSocket messages, HTTP requests);
the kit queues them and, one at a time, asks `decode(unit, phase)` for *steps*: bytes to
write, core commands to run (awaited in order), or a kit instruction (`Upgrade`, `CLOSE`,
`LOGGED_IN`). While a step runs, the core's events come back through `encode` and `show`;
after each command the kit runs the codec's `follow_ups` (a door that answers one input
with several core commands, like IRC's NAMES after JOIN).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.session import Phase
from gateway.kit.render_once import RenderOnce

__all__ = ["CLOSE", "LOGGED_IN", "Codec", "Drop", "Step", "Unit", "Upgrade"]

#: What `feed` cuts from the byte stream; the codec's own types (opaque to the kit).
Unit = Any


class Instruction(enum.Enum):
    #: Send what is queued, then close (the codec said goodbye in its own words first).
    CLOSE = "close"
    #: The door's login is complete: stop counting the connection as a pending login and
    #: cancel its login deadline (line and web: the kit does it at `Ready`).
    LOGGED_IN = "logged_in"


CLOSE = Instruction.CLOSE
LOGGED_IN = Instruction.LOGGED_IN


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Switch the connection to `codec` (a WebSocket after the HTTP upgrade): the kit
    writes `response`, starts a core session if it has none, and feeds `rest` (bytes that
    arrived after the request) to the new codec."""

    codec: Codec
    response: bytes
    rest: bytes = b""


Step = bytes | cmd.Command | Instruction | Upgrade


class Drop(Exception):
    """The peer broke the protocol or a limit in a way that ends the connection:
    `farewell` is written (a close frame, an ERROR line) and the connection closed."""

    def __init__(self, reason: str, farewell: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.farewell = farewell


_NONE: tuple[Step, ...] = ()


class Codec:
    """One connection's protocol. Subclasses implement `feed`, `decode`, `encode`, `show`
    and the three short texts; the rest have defaults that fit most doors."""

    __slots__ = ("cache",)

    #: Whether the core session starts when the connection is accepted (line, IRC), or
    #: only at an `Upgrade` (the web port: a plain HTTP request never gets one).
    session_at_accept = True
    #: Whether the core's `Ready` completes the door's login (see `LOGGED_IN`).
    ready_is_login = True
    #: The door's name in logs and metrics.
    door = "?"

    def __init__(self, cache: RenderOnce | None = None) -> None:
        #: Where the kit finds the bytes of the last `Messages` rendered for this codec's
        #: readers (one object shared by every connection that renders alike), or None
        #: when this connection must render each burst itself (see render_once.py).
        self.cache = cache

    # -- input -------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Unit]:
        """Units cut from the bytes that arrived (bounded by the codec's own limits);
        raises `Drop` to end the connection."""
        raise NotImplementedError

    def feed_message(self, payload: bytes, text: bool) -> list[Unit]:
        """Units of one whole message from a message-framed transport (a WebSocket's text
        or binary message); a line codec takes it as one line."""
        return self.feed(payload + b"\r\n")

    def decode(self, unit: Unit, phase: Phase | None) -> Sequence[Step]:
        """What one unit asks for, in order. `phase` is the session's (None before an
        `Upgrade` started one)."""
        raise NotImplementedError

    def take_post(self, unit: Unit, phase: Phase | None, chat: str | None) -> str | None:
        """If `unit` is a plain message to `chat` (None: the session's current chat), its
        text, and the unit counts as taken; else None and nothing changes. The kit posts
        consecutive messages together (one store call)."""
        return None

    def follow_ups(self) -> Sequence[Step]:
        """Steps the events just encoded asked for (run after the current command)."""
        return _NONE

    def end_unit(self) -> bytes:
        """Bytes that close the unit just handled (IRC's labeled-response batch)."""
        return b""

    # -- output ------------------------------------------------------------------------

    def encode(self, event: ev.Event) -> bytes:
        """The bytes of a core event (b"" when this door shows nothing for it: a
        deliberate choice each door lists; tests/test_doors_cover_events.py checks)."""
        raise NotImplementedError

    def show(self, messages: ev.Messages) -> bytes:
        """The bytes of a burst of messages (fan-out's hot path: called once per burst per
        `cache`, the other readers reuse the bytes)."""
        raise NotImplementedError

    def refused(self, reason: str) -> bytes:
        """Admission refused the connection (full, too many from the address)."""
        raise NotImplementedError

    def timed_out(self, text: str) -> bytes:
        """The login deadline passed."""
        raise NotImplementedError

    def overflowed(self) -> bytes:
        """Said (if the socket takes it) before a reader too far behind is reset."""
        raise NotImplementedError

    def goodbye(self) -> bytes:
        """Written before a close the gateway asks for (a WebSocket close frame)."""
        return b""

    @property
    def awaits_peer_close(self) -> bool:
        """After `goodbye`, keep reading until the peer answers it (WebSocket's closing
        handshake) rather than closing at once; the kit's close grace still bounds it."""
        return False
