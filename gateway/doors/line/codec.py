"""The line protocol as a kit codec: lines in (framing, parse), contract lines out (render).

The contract's door (telnet, `client.py`, scripts). Everything a connection needs beyond
this (admission, deadlines, bounded output, batching of pasted lines, rendering a burst
once for every reader) is the kit's (gateway/kit/shell.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.names import sanitize
from gateway.core.session import Phase
from gateway.doors.line import render
from gateway.doors.line.parse import parse_line
from gateway.kit.codec import Codec, Step, Unit
from gateway.kit.lines import BadEncoding, Line, LineFramer, LineTooLong
from gateway.kit.render_once import RenderOnce

__all__ = ["LineCodec"]

_OVERFLOW = render.error("disconnected: output queue exceeded (you are reading too slowly)")


class LineCodec(Codec):
    __slots__ = ("framer", "max_line")

    door = "line"

    def __init__(self, max_line: int, cache: RenderOnce) -> None:
        super().__init__(cache)
        self.max_line = max_line
        #: Only while a read left something to carry (a partial line, a telnet sequence):
        #: an idle connection holds no framer.
        self.framer: LineFramer | None = None

    def feed(self, data: bytes) -> list[Unit]:
        framer = self.framer or LineFramer(self.max_line)
        units = framer.feed(data)
        self.framer = None if framer.idle else framer
        return units

    def decode(self, unit: Unit, phase: Phase | None) -> Sequence[Step]:
        if isinstance(unit, LineTooLong):
            return (cmd.Rejected(f"line too long (over {unit.limit} bytes), discarded"),)
        if isinstance(unit, BadEncoding):
            return (cmd.Rejected("line is not valid UTF-8, discarded"),)
        assert phase is not None
        text = self.take_post(unit, phase, None)
        if text is not None:
            return (cmd.Say((text,)),)
        command = parse_line(unit.text, phase)
        return (command,) if command is not None else ()

    def take_post(self, unit: Unit, phase: Phase | None, chat: str | None) -> str | None:
        """A plain message (logged in: not a command, not blank), sanitised; None
        otherwise. Called for every line of a paste, so it calls nothing it need not."""
        if chat is not None or phase is not Phase.READY or type(unit) is not Line:
            return None
        text = sanitize(unit.text).strip()
        return text if text and text[0] != "/" else None

    def encode(self, event: ev.Event) -> bytes:
        return render.render(event)

    def show(self, messages: ev.Messages) -> bytes:
        return render.messages(messages)

    def refused(self, reason: str) -> bytes:
        return render.error(reason)

    def timed_out(self, text: str) -> bytes:
        return render.error(text)

    def overflowed(self) -> bytes:
        return _OVERFLOW
