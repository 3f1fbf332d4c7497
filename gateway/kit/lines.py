"""Bytes in, lines out: CRLF/LF, telnet negotiation, the line limit and UTF-8.

No I/O: a connection feeds whatever arrived and gets events back, so every edge case
(a line split across reads, an IAC sequence split across reads, a flood with no newline)
is tested by feeding bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BadEncoding", "FrameEvent", "Line", "LineFramer", "LineTooLong"]

IAC, SB, SE = 255, 250, 240
_OPTION_VERBS = frozenset((251, 252, 253, 254))  # WILL WONT DO DONT

# Telnet parser states.
_DATA, _IAC, _OPTION, _SUB, _SUB_IAC = range(5)

# One whole telnet sequence after its IAC; group 1 is an escaped 0xFF data byte.
# Subnegotiation bodies consume `IAC x` pairs exactly as the state machine does
# (IAC IAC SE stays inside).
_SEQUENCE_BODY = (
    rb"(?:(\xff)|[\xfb-\xfe][\s\S]|\xfa(?:[^\xff]++|\xff[^\xf0])*+\xff\xf0|[^\xfa-\xff])"
)
#: Everything up to the first telnet sequence that the data ends inside of (C speed).
_COMPLETE = re.compile(
    rb"(?:[^\xff]++|\xff" + _SEQUENCE_BODY.replace(rb"(\xff)", rb"\xff") + rb")*+"
)
#: Each whole sequence, replaced by its data byte (if any).
_SEQUENCE = re.compile(rb"\xff" + _SEQUENCE_BODY)
#: The same without the group, for data with no escaped 0xFF (about 6 times faster).
_SEQUENCE_NO_ESCAPE = re.compile(rb"\xff" + _SEQUENCE_BODY.replace(rb"(\xff)", rb"\xff"))
#: A subnegotiation body up to its IAC SE (or the end of the data).
_SUB_BODY = re.compile(rb"(?:[^\xff]++|\xff[^\xf0])*+")
#: A newline followed by empty lines: collapsed to one newline before lines are cut, so a
#: flood of empty lines costs one C-speed pass instead of a Python step per line.
_BLANK_RUN = re.compile(rb"\n(?:\r?\n)+")


@dataclass(frozen=True, slots=True)
class Line:
    text: str


@dataclass(frozen=True, slots=True)
class LineTooLong:
    limit: int


@dataclass(frozen=True, slots=True)
class BadEncoding:
    pass


FrameEvent = Line | LineTooLong | BadEncoding


class LineFramer:
    """Splits a byte stream into lines; empty lines are dropped here.

    Memory is bounded by `max_line`: a line longer than that is dropped as it arrives
    (never buffered whole) and reported once as `LineTooLong`. The limit counts the
    line's bytes without its terminator and after telnet sequences are removed.
    """

    __slots__ = ("_buf", "_discarding", "_telnet", "max_line")

    def __init__(self, max_line: int = 4096) -> None:
        self.max_line = max_line
        #: A partial line carried to the next read; None when there is none (most of the
        #: time: an idle connection holds no buffer).
        self._buf: bytearray | None = None
        self._discarding = False
        self._telnet = _DATA

    @property
    def idle(self) -> bool:
        """Nothing carried between reads: a fresh framer would do the same from here."""
        return self._buf is None and not self._discarding and self._telnet == _DATA

    def feed(self, data: bytes) -> list[FrameEvent]:
        if self._telnet != _DATA or IAC in data:
            data = self._strip_telnet(data)
        if b"\n\n" in data or b"\n\r\n" in data:
            data = _BLANK_RUN.sub(b"\n", data)
        events: list[FrameEvent] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._keep(data[start:], events)
                return events
            chunk = data[start:nl]
            start = nl + 1
            if self._discarding:
                self._discarding = False
                continue
            if self._buf:
                self._buf += chunk
                raw = bytes(self._buf)
                self._buf = None
            else:
                raw = chunk
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw:  # empty lines mean nothing in any phase: not even an event
                continue
            if len(raw) > self.max_line:
                events.append(LineTooLong(self.max_line))
                continue
            try:
                events.append(Line(raw.decode("utf-8")))
            except UnicodeDecodeError:
                events.append(BadEncoding())

    def _keep(self, rest: bytes, events: list[FrameEvent]) -> None:
        if self._discarding or not rest:
            return
        # One byte of slack: a trailing CR may be the first half of a CRLF.
        buf = self._buf
        if (len(buf) if buf else 0) + len(rest) > self.max_line + 1:
            self._buf = None
            self._discarding = True
            events.append(LineTooLong(self.max_line))
        elif buf is None:
            self._buf = bytearray(rest)
        else:
            buf += rest

    def _strip_telnet(self, data: bytes) -> bytes:
        """Remove telnet sequences. Whole sequences go in C (regexes); the state machine
        only carries a sequence split across reads, so the Python work per read is a few
        steps whatever the bytes are (a flood of IAC NOPs costs one regex pass)."""
        out = bytearray()
        state = self._telnet
        i, n = 0, len(data)
        while i < n:
            if state == _DATA:
                end = _COMPLETE.match(data, i).end()  # type: ignore[union-attr]  # always matches
                if end > i:
                    run = data[i:end]
                    if b"\xff\xff" in run:
                        out += _SEQUENCE.sub(rb"\1", run)
                    else:
                        out += _SEQUENCE_NO_ESCAPE.sub(b"", run)
                    i = end
                if i < n:  # an IAC whose sequence the data ends inside of
                    state = _IAC
                    i += 1
            elif state == _IAC:
                b = data[i]
                i += 1
                if b == IAC:  # an escaped 0xFF data byte
                    out.append(b)
                    state = _DATA
                elif b in _OPTION_VERBS:
                    state = _OPTION
                elif b == SB:
                    state = _SUB
                else:  # a two-byte command (NOP, AYT, ...)
                    state = _DATA
            elif state == _OPTION:
                i += 1
                state = _DATA
            elif state == _SUB:
                i = _SUB_BODY.match(data, i).end()  # type: ignore[union-attr]  # always matches
                if i < n:  # an IAC: SE ends the subnegotiation
                    i += 1
                    state = _SUB_IAC
            else:  # _SUB_IAC
                state = _DATA if data[i] == SE else _SUB
                i += 1
        self._telnet = state
        return bytes(out)
