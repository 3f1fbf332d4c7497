"""One line-protocol socket: bytes -> framing -> commands -> core, events -> bytes.

A connection is an `asyncio.Protocol`, not a task with a StreamReader: an idle connection
costs a few objects, not a coroutine stack. Input is handled strictly in order by a task
that exists only while there is input; consecutive plain messages go to the core as one
`Say`, so a client that pastes 100 lines costs one Redis round trip. Writes made during one
event-loop turn are joined and sent with one `transport.write`. Output is bounded: a
reader that lets `max_output` bytes pile up is disconnected ("SendQ exceeded").
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import sys
from collections import deque
from dataclasses import dataclass, field

from gateway.admission import Admission, Ticket
from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.session import Core, Phase, Session
from gateway.doors.line import render
from gateway.doors.line.framing import BadEncoding, FrameEvent, Line, LineFramer, LineTooLong
from gateway.doors.line.parse import parse_line, plain_text
from gateway.metrics import METRICS

__all__ = ["LineConnection", "LineDoor", "WriteCoalescer", "set_keepalive", "spread_keepalive"]

log = logging.getLogger("chat.conn")

#: Kernel-side write buffer watermarks: above HIGH the transport says "pause", and a
#: backlog being sent waits until it is below LOW again.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
#: Input events queued before the socket stops being read (resumed at a quarter of it):
#: bounds a flooding client's memory to this many lines.
MAX_QUEUED_LINES = 256
#: Seconds a closing connection may take to send what is queued before it is reset.
CLOSE_GRACE = 5.0
#: Plain messages posted together at most: bounds one Say (and one post_many group).
MAX_SAY_BATCH = 256
#: Input lines handled without awaiting anything before the pump yields to other tasks,
#: so a flood of empty lines cannot stall the event loop.
YIELD_EVERY = 64
#: Bytes taken from one socket per read, and (for a connection that keeps its socket full)
#: per event-loop turn: a flooding client costs everyone else at most one small read's
#: framing per turn instead of libuv's up to 32 reads of 256 KiB.
READ_CHUNK = 8 * 1024
#: One read buffer for every connection: a read is framed before the next one happens.
_READ_BUFFER = bytearray(READ_CHUNK)
_READ_VIEW = memoryview(_READ_BUFFER)


class WriteCoalescer:
    """Collects the connections written to in this loop turn and flushes them once."""

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[LineConnection] = []
        self._scheduled = False

    def mark(self, conn: LineConnection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        self.flush_now()

    def flush_now(self) -> None:
        """Send everything queued so far (fan-out calls this after each pub/sub batch, so
        delivery does not wait for the next loop turn)."""
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()


@dataclass(slots=True)
class LineDoor:
    """What every line connection of a listener shares."""

    core: Core
    admission: Admission
    coalescer: WriteCoalescer
    max_line: int
    max_output: int
    #: TCP keepalive (idle s, interval s, probes); idle 0: off. Set on the listening
    #: sockets by the server (accepted ones inherit it); each accepted connection then
    #: gets its own idle time, up to half again as long (`spread_keepalive`).
    keepalive: tuple[int, int, int] = (0, 0, 0)
    #: The open connections (for the shutdown notice): each adds itself when made and
    #: leaves when lost.
    connections: set[LineConnection] = field(default_factory=set)


def spread_keepalive(transport: asyncio.BaseTransport, idle: int) -> None:
    """Give one connection a random keepalive idle time in [idle, 1.5 idle]. Every member
    of a big chat goes idle at the same moment (its last message), so with one idle time
    a gateway sent all its keepalive probes at once, and again after each interval:
    16,667 probes at a time met loopback's 1,000-packet input queue in the 50,000-user
    bench, and connections whose probes were all dropped were closed (ETIMEDOUT)."""
    jitter = random.randint(0, idle // 2)
    sock = (
        transport.get_extra_info("socket") if jitter and hasattr(socket, "TCP_KEEPIDLE") else None
    )
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle + jitter)
        except OSError:
            pass  # the inherited idle time still holds


def set_keepalive(sock: socket.socket, idle: int, interval: int, count: int) -> None:
    """Have the kernel probe an idle peer, so one that vanished (power cut, NAT dropped
    the mapping) is found and its connection closed, while an idle one that answers stays."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system's defaults apply
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)


class LineConnection(asyncio.BufferedProtocol):
    __slots__ = (
        "_drain",
        "_lost",
        "_out",
        "_pump",
        "_queue",
        "_queued",
        "_read_paused",
        "_ticket",
        "_write_paused",
        "address",
        "closing",
        "door",
        "framer",
        "session",
        "transport",
    )

    def __init__(self, door: LineDoor) -> None:
        self.door = door
        self.transport: asyncio.Transport | None = None
        self.address = "?"
        #: Only while a read left something to carry (a partial line, a telnet sequence):
        #: an idle connection holds no framer.
        self.framer: LineFramer | None = None
        self.session: Session | None = None
        self._ticket: Ticket | None = None
        self._queue: deque[FrameEvent] | None = None  # created on first input: idle is cheap
        self._pump: asyncio.Task[None] | None = None
        self._read_paused = False
        #: Output of this loop turn: None, one bytes object, or a list once there are more
        #: (an idle connection holds no list; a single write is sent without a join).
        self._out: bytes | list[bytes] | None = None
        self._queued = 0
        self.closing = False
        self._lost = False
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's: no subclass
        self.transport = tcp
        tcp.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        self.door.connections.add(self)
        peer = transport.get_extra_info("peername")
        # interned: connections from one address share one string
        self.address = sys.intern(peer[0] if isinstance(peer, tuple) else str(peer))
        ticket = self.door.admission.admit(self.address, self._login_deadline, self._refused)
        if isinstance(ticket, str):
            self.door.admission.log_refused(ticket, self.address)
            self.write(render.error(ticket))
            self.close()
            return
        self._ticket = ticket
        if self.door.keepalive[0]:
            spread_keepalive(tcp, self.door.keepalive[0])
        self.session = self.door.core.session(self)
        log.info("event=connect peer=%s session=%s", self.address, self.session.session_id)
        self.session.start()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        if nbytes == READ_CHUNK and self.transport is not None and not self._read_paused:
            # The socket likely holds more: take the rest on a later loop turn, after
            # everyone else's reads (libuv would otherwise read on, 32 times in a row).
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._resume_after_turn)
        self.data_received(bytes(_READ_VIEW[:nbytes]))

    def _resume_after_turn(self) -> None:
        if self.transport is not None and not self.closing and not self._read_paused:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.session is None or self.closing:
            return
        framer = self.framer or LineFramer(self.door.max_line)
        events = framer.feed(data)
        self.framer = None if framer.idle else framer
        if not events:
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.extend(events)
        if len(self._queue) > MAX_QUEUED_LINES and not self._read_paused and self.transport:
            self._read_paused = True
            self.transport.pause_reading()
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run())

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        # Who ended it, for the disconnect line: this side (a close it asked for), the
        # peer (end of stream), or an error (a reset, a timeout).
        how = "gateway" if self.closing else ("peer" if exc is None else f"error:{exc!r}")
        self.closing = True
        self._lost = True
        self._out = None
        self._queue = None
        self.door.connections.discard(self)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self._ticket is not None:
            self._ticket.release()
        if self.session is not None:
            self.session.closed(how)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- input -----------------------------------------------------------------------------

    async def _run(self) -> None:
        session = self.session
        assert session is not None
        idle = 0
        try:
            while self._queue and not self.closing:
                command = self._next_command(session.phase)
                if command is not None:
                    idle = 0
                    await session.handle(command)
                else:
                    idle += 1
                    if idle % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                if self._read_paused and len(self._queue or ()) < MAX_QUEUED_LINES // 4:
                    self._read_paused = False
                    if self.transport and not self.closing:
                        self.transport.resume_reading()
        finally:
            self._pump = None
            if not self._queue:
                self._queue = None

    def _next_command(self, phase: Phase) -> cmd.Command | None:
        """The next input event as a command in `phase`; consecutive plain messages are
        taken together as one `Say`."""
        queue = self._queue
        assert queue
        event = queue.popleft()
        if isinstance(event, LineTooLong):
            return cmd.Rejected(f"line too long (over {event.limit} bytes), discarded")
        if isinstance(event, BadEncoding):
            return cmd.Rejected("line is not valid UTF-8, discarded")
        text = plain_text(event.text) if phase is Phase.READY else None
        if text is None:
            return parse_line(event.text, phase)
        texts = [text]
        while queue and len(texts) < MAX_SAY_BATCH:
            nxt = queue[0]
            if not isinstance(nxt, Line):
                break
            more = plain_text(nxt.text)
            if more is None:
                break
            queue.popleft()
            texts.append(more)
        return cmd.Say(tuple(texts))

    def _refused(self, reason: str) -> None:
        """Admission refused the connection after all (over the limit on all gateways)."""
        self.write(render.error(reason))
        self.close()

    def _login_deadline(self) -> None:
        session = self.session
        if session is not None and session.phase in (Phase.NICK, Phase.PASSWORD, Phase.LOADING):
            timeout = self.door.admission.login_timeout
            self.write(render.error(f"login timed out after {timeout:g} s"))
            self.close()

    # -- the core's sink -------------------------------------------------------------------

    def emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.Ready) and self._ticket is not None:
            self._ticket.logged_in()
        self.write(render.render(event))

    def show(self, messages: ev.Messages) -> None:
        """The fan-out hot path (once per reader per burst): `write` inlined."""
        if self.closing:
            return
        data = render.messages(messages)
        out = self._out
        if out is None:
            self._out = data
            self.door.coalescer.mark(self)
        elif type(out) is list:
            out.append(data)
        else:
            self._out = [out, data]  # type: ignore[list-item]
        self._queued += len(data)
        if self._queued > self.door.max_output:
            self.overflow()

    # -- output ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        self._queue_out(data)

    def _queue_out(self, data: bytes) -> None:
        out = self._out
        if out is None:
            self._out = data
            self.door.coalescer.mark(self)
        elif type(out) is list:
            out.append(data)
        else:
            self._out = [out, data]  # type: ignore[list-item]
        self._queued += len(data)
        if self._queued > self.door.max_output:
            self.overflow()

    def flush(self) -> None:
        out = self._out
        if self.closing or out is None or self.transport is None:
            return
        self._out = None
        self._queued = 0
        self.transport.write(b"".join(out) if type(out) is list else out)  # type: ignore[arg-type]
        if self.transport.get_write_buffer_size() > self.door.max_output:
            self.overflow()

    async def drain(self) -> None:
        """Wait until the socket has taken most of what was written (used for backlogs)."""
        self.flush()
        if self._write_paused and not self.closing:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def overflow(self) -> None:
        """The reader fell `max_output` bytes behind: drop it, not everyone's memory. The
        socket is reset (SO_LINGER 0), so the kernel frees its buffer at once instead of
        trickling the queued bytes to a peer that does not read."""
        if self.closing or self.transport is None:
            return
        METRICS.slow_readers.inc()
        log.warning(
            "event=sendq_exceeded peer=%s session=%s",
            self.address,
            self.session.describe() if self.session else "-",
        )
        self._out = None
        self.closing = True
        self.transport.write(
            render.error("disconnected: output queue exceeded (you are reading too slowly)")
        )
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()

    def close(self) -> None:
        """Send what is queued, then close; a peer that does not take it within
        CLOSE_GRACE seconds is reset (a closing socket stuck behind a zero window would
        otherwise hold its session and its admission slot for good)."""
        if self.closing or self.transport is None:
            return
        self.flush()
        self.closing = True
        self.transport.close()
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.abort()
