"""The one connection shell under every door: a socket, a codec and a core session.

Everything that is the same for telnet, IRC and the web lives here, once:

- **Admission at accept**, before any protocol work: per-address, pending-login and
  gateway-wide limits (admission.py); a refused connection gets the codec's one line and
  is closed. The login deadline aborts: it says why, closes, and resets a peer that does
  not take the goodbye within `CLOSE_GRACE`.
- **A read budget**: at most `READ_CHUNK` bytes per connection per event-loop turn (a
  flooding socket is paused until the next turn), at most `MAX_QUEUED_UNITS` units queued
  (reading pauses; resumes at a quarter), and the pump yields every `YIELD_EVERY` units
  that did not wait for anything. One connection cannot stall the loop.
- **Bounded output in bytes in flight**: what is queued in this turn plus what the kernel
  has not taken; a reader past `max_output` is reset (SO_LINGER 0 frees the kernel
  buffer at once) after the codec's farewell. Writes of one turn go out in one `write`;
  fan-out flushes after each batch (`Coalescer.flush_now`).
- **Batching**: consecutive plain messages to one place become one core command, so a
  pasted block costs one store round trip.
- **Render once**: a burst delivered to many readers is rendered once per kind of reader
  (render_once.py).
- **drain** is a future resolved by the transport's flow control, never a poll.

An idle connection is this object, its codec and its session: the input queue, the pump
task and the output list exist only while there is something in them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.session import Core, Session
from gateway.kit.admission import Admission, Ticket
from gateway.kit.codec import CLOSE, LOGGED_IN, Codec, Drop, Instruction, Unit, Upgrade
from gateway.metrics import METRICS

__all__ = [
    "CLOSE_GRACE",
    "MAX_QUEUED_UNITS",
    "MAX_SAY_BATCH",
    "READ_CHUNK",
    "Coalescer",
    "Connection",
    "Door",
    "TlsConnection",
    "set_keepalive",
    "spread_keepalive",
]

log = logging.getLogger("chat.conn")

#: Kernel-side write buffer watermarks: above HIGH the transport says "pause", and a
#: backlog being sent waits until it is below LOW again.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
#: Units queued before the socket stops being read (resumed at a quarter of it): bounds a
#: flooding client's memory to this many lines or messages.
MAX_QUEUED_UNITS = 256
#: Seconds a closing connection may take to send what is queued (and, on a WebSocket,
#: to answer the close) before it is reset.
CLOSE_GRACE = 5.0
#: Seconds a reader may take no bytes at all while the core waits to show it more stored
#: messages (a backlog, a history) before it is dropped: what it asked for stays in memory
#: while it waits, so a reader that never reads must not hold it for good.
DRAIN_TIMEOUT = 60.0
#: Plain messages posted together at most: bounds one batch (and one post_many group).
MAX_SAY_BATCH = 256
#: Units handled without awaiting anything before the pump yields to other tasks, so a
#: flood of cheap units (empty frames, PINGs) cannot stall the event loop.
YIELD_EVERY = 64
#: Bytes taken from one socket per read, and (for a connection that keeps its socket full)
#: per event-loop turn: a flooding client costs everyone else at most one small read's
#: framing per turn instead of libuv's up to 32 reads of 256 KiB.
READ_CHUNK = 8 * 1024
#: One read buffer for every connection: a read is framed before the next one happens.
_READ_BUFFER = bytearray(READ_CHUNK)
_READ_VIEW = memoryview(_READ_BUFFER)


class _ErrorLog:
    """`event=protocol_error` lines, at most one a second with how many were not logged:
    a client that reconnects to break the protocol again must not buy a log line each
    time (writing one cost more than refusing it)."""

    __slots__ = ("_at", "_unlogged")

    def __init__(self) -> None:
        self._at = 0.0
        self._unlogged = 0

    def log(self, door: str, peer: str, reason: str) -> None:
        now = time.monotonic()
        if now < self._at:
            self._unlogged += 1
            return
        log.warning(
            "event=protocol_error door=%s peer=%s reason=%r suppressed=%d",
            door,
            peer,
            reason,
            self._unlogged,
        )
        self._unlogged = 0
        self._at = now + 1.0


_PROTOCOL_ERRORS = _ErrorLog()


class Coalescer:
    """The connections written to in this loop turn, flushed once after it (or at once
    when fan-out ends a batch: delivery does not wait for the next turn)."""

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
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()


@dataclass(slots=True, eq=False)
class Door:
    """What every connection of one listener shares; `codec` makes each one's codec."""

    name: str
    core: Core
    admission: Admission
    coalescer: Coalescer
    max_output: int
    codec: Callable[[], Codec]
    #: TCP keepalive idle seconds (0: off); each connection draws its own in [idle,
    #: 1.5 idle] (see `spread_keepalive`). The listener sets the rest (`set_keepalive`).
    keepalive_idle: int = 0
    #: Seconds a connection may take to start a session (the web port's HTTP request
    #: and WebSocket upgrade) before it is closed; 0: no such deadline.
    upgrade_timeout: float = 0.0
    #: The open connections (for the shutdown notice): each adds itself when made and
    #: leaves when lost (a plain set: a WeakSet costs ~230 bytes per entry).
    connections: set[Connection] = field(default_factory=set)


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


class Connection(asyncio.BufferedProtocol):
    """One accepted socket: the core's `Sink` for its session."""

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
        "codec",
        "door",
        "session",
        "transport",
    )

    def __init__(self, door: Door) -> None:
        self.door = door
        self.codec = door.codec()
        self.transport: asyncio.Transport | None = None
        self.address = "?"
        self.session: Session | None = None
        self._ticket: Ticket | None = None
        self._queue: deque[Unit] | None = None  # created on first input: idle is cheap
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
        door = self.door
        door.connections.add(self)
        peer = transport.get_extra_info("peername")
        # interned: connections from one address share one string
        self.address = sys.intern(peer[0] if isinstance(peer, tuple) else str(peer))
        ticket = door.admission.admit(self.address, self._login_deadline, self._refused)
        if isinstance(ticket, str):
            door.admission.log_refused(ticket, self.address, door.name)
            self.write(self.codec.refused(ticket))
            self.close()
            return
        self._ticket = ticket
        if door.keepalive_idle:
            spread_keepalive(tcp, door.keepalive_idle)
        if door.upgrade_timeout:
            asyncio.get_running_loop().call_later(door.upgrade_timeout, self._upgrade_deadline)
        self._admitted()

    def _admitted(self) -> None:
        """Admission let the connection in: start its session now if its codec wants one."""
        if self.codec.session_at_accept:
            self._start_session()

    def _start_session(self) -> None:
        session = self.session = self.door.core.session(self)
        log.info(
            "event=connect door=%s peer=%s session=%s",
            self.door.name,
            self.address,
            session.session_id,
        )
        session.start()

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
        if self.transport is not None and not self._lost and not self._read_paused:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._ticket is None or self._lost:
            return
        try:
            units = self.codec.feed(data)
        except Drop as drop:
            self._drop(drop)
            return
        if not units or self.closing:  # a closing connection only waits for the peer's close
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.extend(units)
        if len(self._queue) > MAX_QUEUED_UNITS and not self._read_paused and self.transport:
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
        idle = 0
        try:
            while self._queue and not self.closing:
                unit = self._queue.popleft()
                session = self.session
                phase = session.phase if session is not None else None
                waited = False
                for step in self.codec.decode(unit, phase):
                    if self.closing:
                        break
                    waited = await self._step(step) or waited
                end = self.codec.end_unit()
                if end:
                    self.write(end)
                if waited:
                    idle = 0
                else:
                    idle += 1
                    if idle % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                queue = self._queue
                if self._read_paused and len(queue or ()) < MAX_QUEUED_UNITS // 4:
                    self._read_paused = False
                    if self.transport and not self._lost:
                        self.transport.resume_reading()
        except Exception:
            log.exception("event=door_error door=%s peer=%s", self.door.name, self.address)
            self.close()
        finally:
            self._pump = None
            if not self._queue:
                self._queue = None

    async def _step(self, step: bytes | cmd.Command | Instruction | Upgrade) -> bool:
        """Carry out one step; True if it waited for the core."""
        if isinstance(step, bytes):
            self.write(step)
            return False
        if isinstance(step, Instruction):
            if step is CLOSE:
                self.close()
            elif step is LOGGED_IN and self._ticket is not None:
                self._ticket.logged_in()
            return False
        if isinstance(step, Upgrade):
            self._upgrade(step)
            return False
        session = self.session
        if session is None:  # a codec that sends commands before it has a session
            raise RuntimeError(f"{self.door.name}: a core command before a session")
        if type(step) is cmd.Say or (type(step) is cmd.SendChat and step.plain):
            step = self._batch(step)
        await session.handle(step)
        for more in self.codec.follow_ups():
            if self.closing:
                break
            await self._step(more)
        return True

    def _batch(self, first: cmd.Say | cmd.SendChat) -> cmd.Command:
        """`first` and the plain messages to the same place queued right after it, as one
        command (consecutive lines pasted at once cost one store call)."""
        queue = self._queue
        if not queue:
            return first
        chat = first.chat if isinstance(first, cmd.SendChat) else None
        texts = list(first.texts) if isinstance(first, cmd.Say) else [first.text]
        take = self.codec.take_post
        phase = self.session.phase if self.session is not None else None
        while queue and len(texts) < MAX_SAY_BATCH:
            text = take(queue[0], phase, chat)
            if text is None:
                break
            queue.popleft()
            texts.append(text)
        if len(texts) == 1:
            return first
        if chat is None:
            return cmd.Say(tuple(texts))
        return cmd.SendChatMany(chat, tuple(texts))

    def _upgrade(self, step: Upgrade) -> None:
        self.write(step.response)
        self.codec = step.codec
        if self.session is None:
            self._start_session()
        if step.rest:
            self.data_received(step.rest)

    def _refused(self, reason: str) -> None:
        """Admission refused the connection after all (over the limit on all gateways)."""
        self.write(self.codec.refused(reason))
        self.close()

    def _login_deadline(self) -> None:
        """The ticket's timer: cancelled when the login completes, so this is a timeout."""
        if self.closing:
            return
        timeout = self.door.admission.login_timeout
        self.write(self.codec.timed_out(f"login timed out after {timeout:g} s"))
        self.close()

    def _upgrade_deadline(self) -> None:
        if self.session is None and not self.closing:
            self.write(self.codec.timed_out("request timed out"))
            self.close()

    def _drop(self, drop: Drop) -> None:
        if self.closing:  # the peer answered our goodbye (or broke off): close now
            self.peer_closed()
            return
        _PROTOCOL_ERRORS.log(self.door.name, self.address, drop.reason)
        if drop.farewell:
            self.write(drop.farewell)
        self.close(say_goodbye=False)

    # -- the core's sink -------------------------------------------------------------------

    def emit(self, event: ev.Event) -> None:
        if type(event) is ev.Ready and self._ticket is not None and self.codec.ready_is_login:
            self._ticket.logged_in()
        data = self.codec.encode(event)
        if data:
            self.write(data)

    def show(self, messages: ev.Messages) -> None:
        """The fan-out hot path (once per reader per burst): `write` inlined."""
        if self.closing:
            return
        codec = self.codec
        cache = codec.cache
        if cache is not None and cache.event is messages:
            data = cache.data
        else:
            data = codec.show(messages)
            if cache is not None:
                cache.event, cache.data = messages, data
            if not data:
                return
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
        if self.closing or not data:
            return
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
        transport = self.transport
        if out is None or transport is None or self._lost:
            return
        self._out = None
        self._queued = 0
        transport.write(b"".join(out) if type(out) is list else out)  # type: ignore[arg-type]
        if transport.get_write_buffer_size() > self.door.max_output:
            self.overflow()

    async def drain(self) -> None:
        """Wait until the socket has taken most of what was written (used for backlogs);
        a reader that takes nothing for DRAIN_TIMEOUT seconds is dropped."""
        self.flush()
        if self._write_paused and not self.closing:
            loop = asyncio.get_running_loop()
            self._drain = loop.create_future()
            timer = loop.call_later(DRAIN_TIMEOUT, self.overflow)
            try:
                await self._drain
            finally:
                timer.cancel()

    def overflow(self) -> None:
        """The reader fell `max_output` bytes behind: drop it, not everyone's memory. The
        socket is reset (SO_LINGER 0), so the kernel frees its buffer at once instead of
        trickling the queued bytes to a peer that does not read."""
        transport = self.transport
        if self._lost or transport is None:
            return
        METRICS.slow_readers.inc()
        log.warning(
            "event=sendq_exceeded door=%s peer=%s session=%s",
            self.door.name,
            self.address,
            self.session.describe() if self.session else "-",
        )
        self._out = None
        self.closing = True
        self._lost = True  # nothing more is written or read
        transport.write(self.codec.overflowed())
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()

    def close(self, say_goodbye: bool = True) -> None:
        """Send what is queued (and the codec's goodbye), then close; a peer that does not
        take it within CLOSE_GRACE seconds is reset (a closing socket stuck behind a zero
        window would otherwise hold its session and its admission slot for good)."""
        if self.closing or self.transport is None:
            return
        if say_goodbye:
            goodbye = self.codec.goodbye()
            if goodbye:
                self.write(goodbye)
        self.flush()
        self.closing = True
        if not (say_goodbye and self.codec.awaits_peer_close):
            self._end()
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort_if_open)

    def _end(self) -> None:
        """Close the socket once what is queued is sent."""
        if self.transport is not None:
            self.transport.close()

    def _abort_if_open(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.abort()

    def peer_closed(self) -> None:
        """The peer answered our goodbye (or said its own): close the socket now."""
        if self.transport is not None and not self._lost:
            self.flush()
            self.closing = True
            self._end()


#: Seconds a TLS client has to finish its handshake (it counts against admission meanwhile).
TLS_HANDSHAKE_TIMEOUT = 10.0
#: Plaintext taken from the TLS layer per step (a TLS record is at most 16 KiB).
_TLS_READ = 16 * 1024


class TlsConnection(Connection):
    """A `Connection` that speaks TLS itself (ssl.SSLObject over memory BIOs), so the
    handshake happens after admission, like any other protocol work: a TLS port cannot be
    filled with half-made handshakes from one address (asyncio's own TLS made the
    connection only after its handshake, uncounted), and the handshake has a deadline."""

    __slots__ = ("_handshaking", "_in", "_out_bio", "_tls")

    def __init__(self, door: Door, context: ssl.SSLContext) -> None:
        super().__init__(door)
        self._in = ssl.MemoryBIO()
        self._out_bio = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out_bio, server_side=True)
        self._handshaking = True

    def _admitted(self) -> None:
        # The session (and its first prompt) waits for the handshake.
        asyncio.get_running_loop().call_later(TLS_HANDSHAKE_TIMEOUT, self._handshake_late)

    def _handshake_late(self) -> None:
        if self._handshaking and not self._lost and self.transport is not None:
            self.closing = True
            self.transport.abort()

    def buffer_updated(self, nbytes: int) -> None:
        if nbytes == READ_CHUNK and self.transport is not None and not self._read_paused:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._resume_after_turn)
        if self._lost:
            return
        self._in.write(_READ_VIEW[:nbytes])
        if self._handshaking and not self._handshake():
            return
        plain = bytearray()
        ended = False
        try:
            while True:
                chunk = self._tls.read(_TLS_READ)
                if not chunk:  # the peer's close_notify (SSLObject says so with b"")
                    ended = True
                    break
                plain += chunk
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # the peer's close_notify: answer it and close
            ended = True
        except ssl.SSLError as exc:
            self._tls_failed(exc)
            return
        if plain:
            self.data_received(bytes(plain))
        if ended and not self._lost:
            self.flush()
            self.closing = True
            self._end()

    def _handshake(self) -> bool:
        """Go on with the handshake; True once it is done (and the session started)."""
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._send_tls()
            return False
        except (ssl.SSLError, OSError) as exc:
            self._tls_failed(exc)
            return False
        self._handshaking = False
        self._send_tls()
        if self.codec.session_at_accept and self.session is None and not self.closing:
            self._start_session()
        return True

    def _tls_failed(self, exc: Exception) -> None:
        log.info("event=tls_failed door=%s peer=%s error=%s", self.door.name, self.address, exc)
        self.closing = True
        if self.transport is not None:
            self._send_tls()
            self.transport.abort()

    def _send_tls(self) -> None:
        data = self._out_bio.read()
        if data and self.transport is not None and not self._lost:
            self.transport.write(data)

    def flush(self) -> None:
        out = self._out
        transport = self.transport
        if out is None or transport is None or self._lost or self._handshaking:
            return
        self._out = None
        self._queued = 0
        try:
            self._tls.write(b"".join(out) if type(out) is list else out)  # type: ignore[arg-type]
        except ssl.SSLError as exc:
            self._tls_failed(exc)
            return
        self._send_tls()
        if transport.get_write_buffer_size() > self.door.max_output:
            self.overflow()

    def _end(self) -> None:
        if not self._handshaking and not self._lost:
            try:
                self._tls.unwrap()  # close_notify, best effort
            except ssl.SSLError:
                pass
            self._send_tls()
        super()._end()
