"""WebSocket (RFC 6455, server side) as a kit codec around another codec.

Sans-I/O: `WebSocketCodec` cuts frames from bytes, answers pings and closes, and hands
each whole message to the codec inside (the page's JSON codec, or IRC for web IRC
clients); what that codec writes goes out as frames. It replaced the `websockets`
library's connection for three reasons the attacks of docs/ATTACKS.md showed: its frames
were parsed inside `data_received` with no bound per read (a flood of 6-byte pings
stalled every user), its pongs were written with no output bound (a ping flood from a
client that never reads held memory without limit), and its per-connection tasks and
buffers cost ~20 KiB per idle connection. Here frames cost a few microseconds each, a
budget bounds frames and control frames per second, pongs count against the kit's output
bound like any byte, and an idle WebSocket is a few small objects.

One extension: permessage-deflate (RFC 7692), only as `server_no_context_takeover;
client_no_context_takeover`, so that every message is compressed on its own. That is what
lets fan-out compress a burst once for every page reading it (the render-once cache holds
the compressed frame), and it keeps no compression state on a connection: an idle page
costs what it did. Compression pays on this door because a `messages` frame repeats its
keys for every item: a burst of 20 items is about 90 bytes an item as JSON and 20
deflated, against 37 for the line protocol's text. Frames under `DEFLATE_MIN` bytes go
uncompressed (RSV1 clear), which the extension allows message by message. A compressed
client message is inflated to at most `max_message` bytes (past that: 1009), so a
deflate bomb costs no more than a plain message of the limit. Any other reserved bit, or
RSV1 without the extension, is a protocol error. Text must be UTF-8.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from gateway.core import events as ev
from gateway.core.session import Phase
from gateway.kit.codec import CLOSE, Codec, Drop, Step, Unit
from gateway.kit.render_once import RenderOnce

_apply_mask: Callable[[bytes, bytes], bytes] | None
try:
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - websockets ships its C speedups on Linux
    _apply_mask = None

__all__ = [
    "CONTROL_BURST",
    "CONTROL_RATE",
    "DEFLATE_MIN",
    "FRAME_BURST",
    "FRAME_RATE",
    "WebSocketCodec",
    "accept_key",
    "close_frame",
    "deflate_response",
    "frame",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
#: Frames of any kind a client may send per second, and in one burst: a page sends one
#: frame per action, an IRC client a few dozen lines at connect. Past it the connection
#: is closed (1008): each frame costs the gateway work whatever it carries.
FRAME_RATE, FRAME_BURST = 100.0, 400.0
#: Pings (and unsolicited pongs) per second and per burst: each ping is answered, so a
#: flood of them is a flood of output; browsers send none, libraries one per 20-30 s.
CONTROL_RATE, CONTROL_BURST = 2.0, 20.0

#: Payloads shorter than this go out uncompressed: deflate saves little on them, and a
#: page's own small frames (acks, errors) are compressed per connection, not once.
DEFLATE_MIN = 128
#: The answer to an acceptable permessage-deflate offer (see `deflate_response`).
DEFLATE_AGREED = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
_SYNC_TAIL = b"\x00\x00\xff\xff"

_EMPTY_MASK = b"\x00\x00\x00\x00"
_OPEN, _CLOSING, _CLOSED = 0, 1, 2


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def deflate_response(offers: str) -> str | None:
    """The Sec-WebSocket-Extensions answer to a client's offers, or None to use none.

    The first valid permessage-deflate offer is taken unless it limits the server's window
    below 15 bits (a smaller window would need a compressed copy of each burst for it;
    browsers never ask). The answer always asks for no context takeover both ways, which
    RFC 7692 (7.1.1.1, 7.1.1.2) lets a server do whether or not the offer mentioned it;
    an offered `server_max_window_bits=15` is echoed, as 7.1.2.1 requires. An offer with a
    repeated or unknown parameter, or a value where none belongs, is declined (5)."""
    for offer in offers.split(","):
        name, *params = (p.strip() for p in offer.split(";"))
        if name.lower() != "permessage-deflate":
            continue
        seen: set[str] = set()
        for param in params:
            key, eq, value = param.partition("=")
            key, value = key.strip().lower(), value.strip()
            if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                value = value[1:-1]
            if key in seen or not _param_ok(key, bool(eq), value):
                break
            seen.add(key)
        else:
            if "server_max_window_bits" in seen:
                return DEFLATE_AGREED + "; server_max_window_bits=15"
            return DEFLATE_AGREED
    return None


def _param_ok(key: str, has_value: bool, value: str) -> bool:
    """One permessage-deflate offer parameter this server can accept (RFC 7692 7.1)."""
    if key in ("server_no_context_takeover", "client_no_context_takeover"):
        return not has_value
    if key == "client_max_window_bits":  # the client may use any window: we inflate with 15
        return not has_value or (value in {str(n) for n in range(8, 16)})
    if key == "server_max_window_bits":
        return has_value and value == "15"
    return False


def frame(opcode: int, payload: bytes, deflated: bool = False) -> bytes:
    """One unmasked, unfragmented server frame (`deflated`: RSV1, a compressed payload)."""
    n = len(payload)
    b0 = 0xC0 | opcode if deflated else 0x80 | opcode
    if n < 126:
        head = bytes((b0, n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


def _deflate(payload: bytes) -> bytes:
    """A message compressed on its own (no context carried to the next one)."""
    # level 1 and memLevel 5 (as the websockets library): 4-8 us for a burst of 1-20
    # items, about 20 us for 200; a frame's size is within a few % of the best levels'
    c = zlib.compressobj(1, zlib.DEFLATED, -15, 5)
    data = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_SYNC_TAIL) else data


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:123])


def _unmask(data: bytes, mask: bytes) -> bytes:
    if mask == _EMPTY_MASK or not data:
        return data
    if _apply_mask is not None:
        return bytes(_apply_mask(data, mask))
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


@dataclass(frozen=True, slots=True)
class _Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Closed:
    code: int
    reason: str


def _violation(code: int, reason: str) -> Drop:
    return Drop(f"websocket: {reason}", close_frame(code, reason))


class _Budget:
    """A token bucket over the connection's frames (per second, with a burst)."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens = rate, burst, burst
        self.at = time.monotonic()

    def room(self) -> float:
        """What may be taken now."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return self.tokens

    def take(self, n: int) -> None:
        self.tokens -= n


class WebSocketCodec(Codec):
    """Frames around `inner`: whole messages in, each write of `inner` out as frames.

    `lines`: `inner` writes CRLF-terminated lines (IRC), sent one frame per line, and each
    message it receives is one line. `binary`: frames out are binary (IRC's
    binary.ircv3.net), else text. `cache` (optional) keeps the framed bytes of the last
    burst for every reader of this kind (the page's readers); without it the inner
    codec's own cache is used and each reader frames the bytes itself. `deflate`:
    permessage-deflate was agreed (see the module's docstring); `cache` must then be one
    shared only by readers that agreed it too."""

    __slots__ = (
        "_buf",
        "_closed",
        "_controls",
        "_frag_deflated",
        "_frag_op",
        "_fragments",
        "_frames",
        "binary",
        "deflate",
        "inner",
        "lines",
        "max_message",
    )

    door = "web"

    def __init__(
        self,
        inner: Codec,
        max_message: int,
        *,
        lines: bool = False,
        binary: bool = False,
        cache: RenderOnce | None = None,
        deflate: bool = False,
    ) -> None:
        super().__init__(cache)
        self.deflate = deflate
        self._frag_deflated = False
        self.inner = inner
        self.max_message = max_message
        self.lines = lines
        self.binary = binary
        self._buf: bytes | None = None  # an incomplete frame carried to the next read
        self._fragments: bytearray | None = None  # a fragmented message so far
        self._frag_op = 0
        #: The closing handshake: _OPEN, _CLOSING (our close frame sent, the peer's answer
        #: awaited: nothing but it is read) or _CLOSED (both sent).
        self._closed = _OPEN
        self._frames: _Budget | None = None  # made at the first frame: idle is cheap
        self._controls: _Budget | None = None

    @property
    def ready_is_login(self) -> bool:  # type: ignore[override]
        return self.inner.ready_is_login

    # -- input -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Unit]:
        if self._buf is not None:
            data = self._buf + data
            self._buf = None
        units: list[Unit] = []
        i, n = 0, len(data)
        frames = controls = 0
        # The budget is checked as frames are cut, so one read costs at most a burst's
        # worth of frames whatever it holds (8 KiB could be 1,365 empty pings).
        frame_room = self._room(False)
        control_room = self._room(True)
        while n - i >= 2:
            b0, b1 = data[i], data[i + 1]
            if b0 & 0x70 and (b0 & 0x70 != 0x40 or not self.deflate):
                raise _violation(1002, "reserved bits set that no extension agreed")
            if not b1 & 0x80:
                raise _violation(1002, "client frames must be masked")
            op = b0 & 0x0F
            length = b1 & 0x7F
            j = i + 2
            if length == 126:
                if n - j < 2:
                    break
                length = int.from_bytes(data[j : j + 2], "big")
                j += 2
            elif length == 127:
                if n - j < 8:
                    break
                length = int.from_bytes(data[j : j + 8], "big")
                j += 8
            if op >= 8:
                if not b0 & 0x80 or length > 125 or b0 & 0x40:
                    raise _violation(1002, "control frames must be whole and short")
            elif length > self.max_message:
                raise _violation(1009, f"message over {self.max_message} bytes")
            if n - j < 4 + length:
                break
            payload = _unmask(data[j + 4 : j + 4 + length], data[j : j + 4])
            i = j + 4 + length
            frames += 1
            if frames > frame_room:
                raise _violation(1008, "too many frames")
            if op >= 8:
                controls += 1
                if controls > control_room:
                    raise _violation(1008, "too many control frames")
                unit = self._control(op, payload)
                if unit is not None:
                    units.append(unit)
                continue
            message = self._data(op, bool(b0 & 0x80), bool(b0 & 0x40), payload)
            if message is not None and self._closed == _OPEN:
                units += self._message(message)
        if i < n:
            if n - i > self.max_message + 14:  # cannot happen: lengths were checked
                raise _violation(1009, "frame too large")
            self._buf = data[i:]
        self._spend(frames, controls)
        return units

    def _room(self, control: bool) -> float:
        """Frames (or control frames) the budget allows now."""
        budget = self._controls if control else self._frames
        if budget is None:
            return CONTROL_BURST if control else FRAME_BURST
        return budget.room()

    def _spend(self, frames: int, controls: int) -> None:
        if frames:
            budget = self._frames or _Budget(FRAME_RATE, FRAME_BURST)
            self._frames = budget
            budget.take(frames)
        if controls:
            budget = self._controls or _Budget(CONTROL_RATE, CONTROL_BURST)
            self._controls = budget
            budget.take(controls)

    def _control(self, op: int, payload: bytes) -> Unit | None:
        if op == OP_PING:
            return None if self._closed else _Ping(payload)
        if op == OP_PONG:
            return None
        if op == OP_CLOSE:
            if self._closed:  # the answer to our close: the closing handshake is done
                self._closed = _CLOSED
                raise Drop("websocket: closed")
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise _violation(1007, "close reason is not UTF-8") from None
            return _Closed(code, reason)
        raise _violation(1002, f"unknown control opcode {op}")

    def _data(self, op: int, fin: bool, deflated: bool, payload: bytes) -> tuple[int, bytes] | None:
        """A whole message (opcode, payload, inflated) once its last fragment arrived."""
        if op == OP_CONT:
            fragments = self._fragments
            if fragments is None:
                raise _violation(1002, "continuation without a message")
            if deflated:
                raise _violation(1002, "RSV1 on a continuation frame")
            fragments += payload
            if len(fragments) > self.max_message:
                raise _violation(1009, f"message over {self.max_message} bytes")
            if not fin:
                return None
            self._fragments = None
            whole = bytes(fragments)
            return self._frag_op, self._inflate(whole) if self._frag_deflated else whole
        if op not in (OP_TEXT, OP_BINARY):
            raise _violation(1002, f"unknown opcode {op}")
        if self._fragments is not None:
            raise _violation(1002, "a new message inside a fragmented one")
        if not fin:
            self._fragments = bytearray(payload)
            self._frag_op = op
            self._frag_deflated = deflated
            return None
        return op, self._inflate(payload) if deflated else payload

    def _inflate(self, payload: bytes) -> bytes:
        """A compressed message, at most `max_message` bytes once inflated."""
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(payload + _SYNC_TAIL, self.max_message + 1)
        except zlib.error:
            raise _violation(1007, "a compressed message that does not inflate") from None
        if len(data) > self.max_message or inflater.unconsumed_tail:
            raise _violation(1009, f"message over {self.max_message} bytes")
        return data

    def _message(self, message: tuple[int, bytes]) -> list[Unit]:
        op, payload = message
        if op == OP_TEXT:
            try:
                payload.decode()
            except UnicodeDecodeError:
                raise _violation(1007, "text frames must be UTF-8") from None
        return self.inner.feed_message(payload, op == OP_TEXT)

    def decode(self, unit: Unit, phase: Phase | None) -> Sequence[Step]:
        if type(unit) is _Ping:
            return (frame(OP_PONG, unit.payload),)
        if type(unit) is _Closed:
            code = unit.code if 1000 <= unit.code < 5000 and unit.code not in (1005, 1006) else 1000
            self._closed = _CLOSED  # answered here: no goodbye of ours follows
            return (close_frame(code), CLOSE)
        # lazily: the inner codec may make each step after the one before has run
        return _Wrapped(self, self.inner.decode(unit, phase))

    def take_post(self, unit: Unit, phase: Phase | None, chat: str | None) -> str | None:
        if type(unit) is _Ping or type(unit) is _Closed:
            return None
        return self.inner.take_post(unit, phase, chat)

    def follow_ups(self) -> Sequence[Step]:
        return [self._wrap(s) if type(s) is bytes else s for s in self.inner.follow_ups()]

    def end_unit(self) -> bytes:
        return self._wrap(self.inner.end_unit())

    # -- output ----------------------------------------------------------------------------

    def _wrap(self, data: bytes) -> bytes:
        if not data:
            return b""
        op = OP_BINARY if self.binary else OP_TEXT
        if not self.lines:
            if self.deflate and len(data) >= DEFLATE_MIN:
                return frame(op, _deflate(data), True)
            return frame(op, data)
        return b"".join(frame(op, line) for line in data.split(b"\r\n") if line)

    def encode(self, event: ev.Event) -> bytes:
        return self._wrap(self.inner.encode(event))

    def show(self, messages: ev.Messages) -> bytes:
        inner = self.inner
        cache = inner.cache
        if cache is not None and cache.event is messages:
            return self._wrap(cache.data)
        data = inner.show(messages)
        if cache is not None:
            cache.keep(messages, data)
        return self._wrap(data)

    def refused(self, reason: str) -> bytes:
        return self._wrap(self.inner.refused(reason)) + close_frame(1013, reason[:100])

    def timed_out(self, text: str) -> bytes:
        return self._wrap(self.inner.timed_out(text)) + close_frame(1008, text[:100])

    def overflowed(self) -> bytes:
        return close_frame(1008, "output queue exceeded (reading too slowly)")

    def goodbye(self) -> bytes:
        if self._closed:
            return b""
        self._closed = _CLOSING
        return close_frame(1000)

    @property
    def awaits_peer_close(self) -> bool:
        return self._closed == _CLOSING


class _Wrapped(Sequence[Step]):
    """The inner codec's steps, bytes framed, made as the kit asks for each (IRC's
    handlers make a step after the command before it has run)."""

    __slots__ = ("_codec", "_steps")

    def __init__(self, codec: WebSocketCodec, steps: Sequence[Step]) -> None:
        self._codec, self._steps = codec, steps

    def __iter__(self) -> Iterator[Step]:
        wrap = self._codec._wrap
        for s in self._steps:
            yield wrap(s) if type(s) is bytes else s

    def __len__(self) -> int:
        return len(self._steps)

    def __getitem__(self, i: int) -> Step:  # type: ignore[override]
        s = self._steps[i]
        return self._codec._wrap(s) if type(s) is bytes else s
