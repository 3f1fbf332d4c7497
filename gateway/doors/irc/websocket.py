"""IRC over WebSocket (IRCv3 `text.ircv3.net`), for web IRC clients, on the web port.

One IRC line per text frame, without CRLF, both ways. The same `IrcConnection` runs it:
a small transport stands in for the TCP one, turning its writes into frames (sent in
order by one writer task) and frames into its input. Bounds are the TCP door's: the
connection's own `max_output` check, and a frame at most the web door's size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway.doors.irc.connection import IrcConnection, IrcDoor

__all__ = ["SUBPROTOCOLS", "serve_irc_websocket"]

#: What a web IRC client asks for in Sec-WebSocket-Protocol (the binary form carries the
#: same UTF-8 lines in binary frames).
SUBPROTOCOLS = ("text.ircv3.net", "binary.ircv3.net")


class _FrameTransport:
    """What `IrcConnection` needs of a transport, on a WebSocket."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.binary = ws.subprotocol == "binary.ircv3.net"
        self.frames: list[str | bytes] = []
        self.queued = 0
        self.wake = asyncio.Event()
        self.reading = asyncio.Event()
        self.reading.set()
        self.closing = False

    def write(self, data: bytes) -> None:
        for line in data.split(b"\r\n"):
            if line:
                self.frames.append(line if self.binary else line.decode())
                self.queued += len(line)
        self.wake.set()

    def get_write_buffer_size(self) -> int:
        return self.queued

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.ws.remote_address
        return default

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def close(self) -> None:
        self.closing = True
        self.wake.set()

    def abort(self) -> None:
        self.closing = True
        self.frames.clear()
        self.wake.set()
        self.ws.transport.abort()


async def _writer(t: _FrameTransport) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await t.wake.wait()
            t.wake.clear()
            while t.frames:
                frames, t.frames = t.frames, []
                t.queued = 0
                for frame in frames:
                    await t.ws.send(frame)
            if t.closing:
                await t.ws.close()
                return


async def serve_irc_websocket(door: IrcDoor, ws: ServerConnection) -> None:
    """Run one IRC-over-WebSocket client until either side closes."""
    transport = _FrameTransport(ws)
    conn = IrcConnection(door)
    conn.connection_made(cast(asyncio.BaseTransport, transport))
    writer = asyncio.ensure_future(_writer(transport))
    try:
        async for frame in ws:
            data = frame if isinstance(frame, bytes) else frame.encode()
            conn.data_received(data.rstrip(b"\r\n") + b"\r\n")
            await transport.reading.wait()
            if conn.closing:
                break
    except ConnectionClosed:
        pass
    finally:
        conn.connection_lost(None)
        transport.close()
        try:
            await asyncio.wait_for(writer, 2)
        except (TimeoutError, ConnectionClosed):
            writer.cancel()
