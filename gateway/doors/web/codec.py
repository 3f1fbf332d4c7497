"""The page's JSON frames as a kit codec (inside the kit's WebSocket codec).

One JSON object per text message both ways (docs/WEBSOCKET.md; protocol.py parses and
encodes them). Binary messages get an error frame.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core import events as ev
from gateway.core.session import Phase
from gateway.doors.web.protocol import FrameError, encode, error_frame, messages_frame, parse_frame
from gateway.kit.codec import Codec, Step, Unit
from gateway.kit.render_once import RenderOnce

__all__ = ["JsonCodec"]

_BINARY = object()  # a binary message: refused
_ACROSS = error_frame("bad_input", "binary frames are not accepted; send JSON text").encode()


class JsonCodec(Codec):
    door = "web"

    __slots__ = ("max_line",)

    def __init__(self, cache: RenderOnce | None = None, max_line: int = 4096) -> None:
        # The WebSocket codec keeps the framed bytes (plain and compressed apart); this
        # cache, shared by every page, keeps the JSON both are framed from.
        super().__init__(cache)
        self.max_line = max_line

    def feed_message(self, payload: bytes, text: bool) -> list[Unit]:
        return [payload.decode() if text else _BINARY]

    def decode(self, unit: Unit, phase: Phase | None) -> Sequence[Step]:
        if unit is _BINARY:
            return (_ACROSS,)
        assert phase is not None
        try:
            return parse_frame(unit, phase, self.max_line)
        except FrameError as exc:
            return (error_frame(ev.ErrorCode.BAD_INPUT.value, str(exc)).encode(),)

    def encode(self, event: ev.Event) -> bytes:
        return encode(event).encode()  # b"" for the silent ones

    def show(self, messages: ev.Messages) -> bytes:
        return messages_frame(messages).encode()

    def refused(self, reason: str) -> bytes:
        return error_frame("busy", reason).encode()

    def timed_out(self, text: str) -> bytes:
        return error_frame("timeout", text).encode()

    def overflowed(self) -> bytes:
        return b""
