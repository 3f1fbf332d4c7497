"""One client socket: bytes to the framer, lines to the session, bounded coalesced output.

A connection is an `asyncio.Protocol`, not a task with a StreamReader: an idle connection
costs a few objects, not a coroutine stack. Writes made during one event-loop turn are
joined and sent with one `transport.write`, so a burst of 100 messages costs one syscall.
Output is bounded: a reader that lets `max_output` bytes pile up is disconnected
("SendQ exceeded") so it cannot make the gateway's memory grow.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gateway import render
from gateway.framing import LineFramer
from gateway.metrics import METRICS

if TYPE_CHECKING:
    from gateway.server import GatewayServer
    from gateway.session import Session

__all__ = ["Connection", "WriteCoalescer"]

log = logging.getLogger("chat.conn")

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class WriteCoalescer:
    """Collects the connections written to in this loop turn and flushes them once."""

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Connection] = []
        self._scheduled = False

    def mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        self.flush_now()

    def flush_now(self) -> None:
        """Send everything queued so far (the hub calls this after each pub/sub batch, so
        delivery does not wait for the next loop turn)."""
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()


class Connection(asyncio.Protocol):
    __slots__ = (
        "_coalescer",
        "_drain",
        "_max_output",
        "_out",
        "_paused",
        "_queued",
        "address",
        "closing",
        "framer",
        "server",
        "session",
        "transport",
    )

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.address = "?"
        self.framer = LineFramer(server.settings.max_line)
        self.session: Session | None = None
        self._out: list[bytes] = []
        self._queued = 0
        self.closing = False
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._coalescer = server.coalescer
        self._max_output = server.settings.max_output

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(_HIGH_WATER, _LOW_WATER)
        peer = transport.get_extra_info("peername")
        self.address = peer[0] if isinstance(peer, tuple) else str(peer)
        self.server.admit(self)

    def data_received(self, data: bytes) -> None:
        if self.session is not None and not self.closing:
            self.session.feed(self.framer.feed(data))

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._out.clear()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self.server.forget(self)
        if self.session is not None:
            self.session.closed()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- output ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        out = self._out
        if not out:
            self._coalescer.mark(self)
        out.append(data)
        self._queued += len(data)
        if self._queued > self._max_output:
            self.overflow()

    def flush(self) -> None:
        if self.closing or not self._out or self.transport is None:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self._queued = 0
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self._max_output:
            self.overflow()

    async def drain(self) -> None:
        """Wait until the socket has taken most of what was written (used for backlogs)."""
        self.flush()
        if self._paused and not self.closing:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def overflow(self) -> None:
        """The reader fell `max_output` bytes behind: drop it, not everyone's memory."""
        if self.closing or self.transport is None:
            return
        METRICS.slow_readers.inc()
        log.warning(
            "event=sendq_exceeded peer=%s session=%s",
            self.address,
            self.session.describe() if self.session else "-",
        )
        self._out.clear()
        self.closing = True
        self.transport.write(
            render.error("disconnected: output queue exceeded (you are reading too slowly)")
        )
        self.transport.abort()

    def close(self) -> None:
        """Send what is queued, then close."""
        if self.closing or self.transport is None:
            return
        self.flush()
        self.closing = True
        self.transport.close()
