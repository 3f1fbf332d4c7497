"""A load generator for many connections in one asyncio process.

Each connection is a bare `asyncio.Protocol` that counts what arrives with `bytes.count`
(no line parsing) so the generator is not the bottleneck. Two dialects: the chat contract
(login with nickname and password, plain lines) and IRC (NICK/USER/JOIN/PRIVMSG), so the
same scenarios drive the gateway and the reference IRC server.
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

__all__ = [
    "CHAT",
    "IRC",
    "IRC_PASS",
    "Dialect",
    "Peer",
    "Result",
    "WsPeer",
    "connect_many",
    "connect_ws_many",
    "fanout",
    "latency",
]


@dataclass(frozen=True)
class Dialect:
    name: str
    marker: bytes  # counted in incoming data: one per delivered message; one byte, so a
    # read can never split it (a longer marker split across two reads would go uncounted)
    echoes: bool  # does the sender receive its own message?

    @property
    def irc(self) -> bool:
        return self.name.startswith("irc")

    def login(self, nick: str, password: str, chat: str) -> bytes:
        if self.irc:
            lines = f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\nJOIN #{chat}\r\n"
            if self.name == "irc+pass":  # the gateway's IRC door: every nickname an account
                lines = f"PASS {password}\r\n" + lines
            return lines.encode()
        lines = f"{nick}\r\n{password}\r\n"
        if chat != "general":
            lines += f"/chats {chat}\r\n"
        return lines.encode()

    def ready_marker(self, chat: str) -> bytes:
        if self.name == "irc+pass":  # #general's NAMES (and its history) come first
            return f" #{chat} :End of /NAMES".encode()
        if self.irc:
            return b" 366 "  # end of NAMES: the JOIN is complete
        return b"* ready" if chat == "general" else f"* joined #{chat}".encode()

    def say(self, chat: str, text: str) -> bytes:
        if self.irc:
            return f"PRIVMSG #{chat} :{text}\r\n".encode()
        return f"{text}\r\n".encode()


CHAT = Dialect("chat", b"\n", echoes=True)
IRC = Dialect("irc", b"\n", echoes=False)  # after JOIN only PRIVMSG lines arrive
#: The gateway's IRC door: the same, logging in with PASS (no echo-message asked).
IRC_PASS = Dialect("irc+pass", b"\n", echoes=False)

_STAMP = re.compile(rb"t=(\d+)")


class Peer(asyncio.Protocol):
    def __init__(self, dialect: Dialect, ready: bytes, sample: bool = False) -> None:
        self.dialect = dialect
        self.ready_mark = ready
        self.ready = asyncio.get_running_loop().create_future()
        self.count = 0
        self.reads = 0  # reads and bytes after ready: what a delivery costs a reader
        self.bytes = 0
        self.sample = sample
        self.latencies: list[int] = []
        self.sent: list[int] = []  # each latency's send time (perf_counter_ns)
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._drained: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            self._head += data
            at = self._head.find(self.ready_mark)
            if at < 0:
                if b"PING" in self._head and self.dialect.irc:
                    self._pong(self._head)
                return
            end = self._head.find(b"\n", at)
            if end < 0:
                return
            self.ready.set_result(None)
            data, self._head = self._head[end + 1 :], b""
        self.count += data.count(self.dialect.marker)
        self.reads += 1
        self.bytes += len(data)
        if self.sample:
            now = time.perf_counter_ns()
            stamps = [int(m) for m in _STAMP.findall(data)]
            self.latencies.extend(now - t for t in stamps)
            self.sent.extend(stamps)
        # "N" first: a one-byte search is memchr, a tenth of the cost of looking for "PING"
        # (which was half of an IRC reader's CPU); PRIVMSG lines rarely hold an "N"
        if self.dialect.irc and b"N" in data and b"PING" in data:
            self._pong(data)

    def _pong(self, data: bytes) -> None:
        for line in data.split(b"\r\n"):
            if line.startswith(b"PING"):
                assert self.transport is not None
                self.transport.write(b"PONG" + line[4:] + b"\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))
        self.resume_writing()

    def pause_writing(self) -> None:
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if self._drained is not None and not self._drained.done():
            await self._drained


def _masked_text_frame(text: str) -> bytes:
    """A client-to-server WebSocket text frame (clients must mask; the key is fixed: the
    load generator is not a security boundary)."""
    payload = text.encode()
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0xFE]) + n.to_bytes(2))
    return head + key + masked


def _inflate(payload: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


class _FrameItems:
    """Frame payload -> message items in it, shared by all web readers of the process.

    The gateway sends one burst's frame, byte for byte, to every reader of the burst (it
    renders and compresses once), and without context takeover a compressed frame
    inflates the same for every reader. Counting the items in every reader's copy cost
    the load generator 1.2x (plain: a `"ts":` search, 0.6 ns a byte) to 3x (inflating in
    Python) the gateway's CPU per delivery, on the same two cores as the gateway; each
    browser does that work on its own machine. Looking the payload up (a hash, 0.26 ns a
    byte) counts the same: same bytes, same count, so a wrong or missing frame is still
    counted as what it is."""

    LIMIT = 32 << 20  # bytes of payloads kept; then it starts over

    def __init__(self, deflated: bool) -> None:
        self.deflated = deflated
        self.known: dict[bytes, int] = {}
        self.size = 0

    def items(self, payload: bytes) -> int:
        found = self.known.get(payload)
        if found is None:
            if self.size > self.LIMIT:
                self.known.clear()
                self.size = 0
            text = _inflate(payload) if self.deflated else payload
            found = self.known[payload] = text.count(WsPeer.MARKER)
            self.size += len(payload)
        return found


_PLAIN, _DEFLATED = _FrameItems(False), _FrameItems(True)


class WsPeer(asyncio.Protocol):
    """A web-door reader on a raw socket: a hand-written upgrade and login frame, then it
    counts one marker per message item in the server's frames.

    It offers permessage-deflate as every browser does (`deflate`); compressed or not,
    it cuts the frames and counts each frame's items once per process (`_FrameItems`)."""

    MARKER = b'"ts":'  # once per message item in a `messages` frame (with or without a space)
    READY = b'"ready"'

    def __init__(self, nick: str, password: str, port: int, deflate: bool = True) -> None:
        self.nick, self.password, self.port = nick, password, port
        self.offer_deflate = deflate
        self.deflated = False  # agreed by the server
        self.ready = asyncio.get_running_loop().create_future()
        self.count = 0
        self.reads = 0
        self.bytes = 0
        self.sample = False
        self.latencies: list[int] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._head = b""
        self._frames = b""  # an incomplete frame
        self._upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not one
        offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.offer_deflate else ""
        transport.write(
            (
                "GET /ws HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\n{offer}\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        if not self._upgraded:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self._head.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(self._head[:80].decode()))
                return
            self._upgraded = True
            self.deflated = b"permessage-deflate" in self._head[:end].lower()
            data, self._head = self._head[end + 4 :], b""
            login = f'{{"v": 1, "type": "login", "nick": "{self.nick}", '
            login += f'"password": "{self.password}"}}'
            assert self.transport is not None
            self.transport.write(_masked_text_frame(login))
        if self.ready.done():
            self.reads += 1
            self.bytes += len(data)
        self._read_frames(data)

    def _read_frames(self, data: bytes) -> None:
        buf = self._frames + data if self._frames else data
        i, n = 0, len(buf)
        while n - i >= 2:
            b0, length, j = buf[i], buf[i + 1] & 0x7F, i + 2
            if length == 126:
                if n - j < 2:
                    break
                length, j = int.from_bytes(buf[j : j + 2]), j + 2
            elif length == 127:
                if n - j < 8:
                    break
                length, j = int.from_bytes(buf[j : j + 8]), j + 8
            if n - j < length:
                break
            payload = buf[j : j + length]
            i = j + length
            if self.ready.done():
                self.count += (_DEFLATED if b0 & 0x40 else _PLAIN).items(payload)
            else:
                if b0 & 0x40:
                    payload = _inflate(payload)
                if self.READY in payload:
                    self.ready.set_result(None)
        self._frames = buf[i:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))


async def connect_ws_many(
    host: str,
    port: int,
    n: int,
    *,
    prefix: str,
    password: str = "bench-password",
    parallel: int = 200,
    timeout: float = 600,
    deflate: bool = True,
) -> list[WsPeer]:
    """Open n web-door readers on `port` (the gateway's web port), each logged in;
    `deflate`: offer compression, as browsers do."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> WsPeer:
        async with gate:
            _, peer = await loop.create_connection(
                lambda: WsPeer(f"{prefix}{i}", password, port, deflate), host, port
            )
            await asyncio.wait_for(peer.ready, timeout)
            return peer

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def connect_many(
    host: str,
    port: int,
    dialect: Dialect,
    n: int,
    *,
    prefix: str,
    chat: str,
    password: str = "bench-password",
    parallel: int = 200,
    samples: int = 0,
    timeout: float = 600,
) -> list[Peer]:
    """Open n connections, log each in (at most `parallel` at once), wait for all ready."""
    if dialect is IRC:
        # ngircd stalls or drops some of 200 registrations arriving at once (measured: 4-50
        # of 200 never got their NAMES), whatever its limits say; 20 at a time never failed.
        parallel = min(parallel, 20)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(parallel)
    ready_mark = dialect.ready_marker(chat)

    async def one(i: int) -> Peer:
        async with gate:
            _, peer = await loop.create_connection(
                lambda: Peer(dialect, ready_mark, sample=i < samples), host, port
            )
            await peer.write(dialect.login(f"{prefix}{i}", password, chat))
            await asyncio.wait_for(peer.ready, timeout)
            return peer

    return list(await asyncio.gather(*(one(i) for i in range(n))))


@dataclass
class Result:
    expected: int
    delivered: int
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.delivered)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0


async def _wait_counts(
    peers: Sequence[Peer | WsPeer], expected: int, idle: float
) -> tuple[int, float]:
    """Wait until the peers together got `expected`, or nothing arrived for `idle` s."""
    last, last_change = -1, time.perf_counter()
    while True:
        total = sum(p.count for p in peers)
        now = time.perf_counter()
        if total >= expected:
            return total, now
        if total != last:
            last, last_change = total, now
        elif now - last_change > idle:
            return total, last_change
        await asyncio.sleep(0.005)


async def fanout(
    senders: list[Peer],
    readers: Sequence[Peer | WsPeer],
    chat: str,
    messages: int,
    burst: int = 50,
    idle: float = 5.0,
) -> Result:
    """Every sender sends `messages` as fast as the server accepts them; `readers` are
    every member (senders included), so a message is due to each reader but, on servers
    that do not echo, its sender."""
    dialect = senders[0].dialect
    for p in readers:
        p.count = p.reads = p.bytes = 0
    senders_reading = sum(1 for p in senders if p in readers)
    expected = len(senders) * messages * len(readers)
    if not dialect.echoes:
        expected -= senders_reading * messages

    async def send(i: int, peer: Peer) -> None:
        for start in range(0, messages, burst):
            await peer.write(
                b"".join(
                    dialect.say(chat, f"s{i} m{k}")
                    for k in range(start, min(messages, start + burst))
                )
            )

    began = time.perf_counter()
    await asyncio.gather(*(send(i, p) for i, p in enumerate(senders)))
    delivered, ended = await _wait_counts(readers, expected, idle)
    n = max(1, delivered)
    reads = sum(p.reads for p in readers)
    return Result(
        expected,
        delivered,
        ended - began,
        {
            "bytes_per_delivery": sum(p.bytes for p in readers) / n,
            "deliveries_per_read": delivered / max(1, reads),
        },
    )


async def latency(
    sender: Peer, readers: list[Peer], chat: str, rate: int, seconds: float, idle: float = 3.0
) -> Result:
    """One sender at `rate` messages/s; sampled readers record each message's age."""
    dialect = sender.dialect
    for p in readers:
        p.count = 0
        p.latencies.clear()
    loop = asyncio.get_running_loop()
    tick = 0.002
    per_tick = max(1, round(rate * tick))
    total = int(rate * seconds)
    sent = 0
    began = time.perf_counter()
    next_at = loop.time()
    while sent < total:
        batch = b"".join(
            dialect.say(chat, f"t={time.perf_counter_ns()}")
            for _ in range(min(per_tick, total - sent))
        )
        sent += min(per_tick, total - sent)
        await sender.write(batch)
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    receivers = len(readers) - (0 if dialect.echoes or sender not in readers else 1)
    expected = total * receivers
    delivered, ended = await _wait_counts(readers, expected, idle)
    samples = sorted(x for p in readers if p.sample for x in p.latencies)

    def pct(q: float) -> float:
        return samples[min(len(samples) - 1, int(q * len(samples)))] / 1e6 if samples else 0.0

    return Result(
        expected,
        delivered,
        ended - began,
        {
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
            "samples": float(len(samples)),
        },
    )


def close_all(peers: Sequence[Peer | WsPeer]) -> None:
    for p in peers:
        if p.transport is not None:
            p.transport.abort()
