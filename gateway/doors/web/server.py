"""The web door: the chat page and its WebSocket, served by every gateway on `--web-port`.

`websockets` (its asyncio API, on the gateway's own loop) serves both: its request hook
answers plain GETs with the page's files (a handful, read once at start, each under
10 KB: the smallest static handler that does the job, with no second HTTP stack), and
`/ws` upgrades to a WebSocket. Each WebSocket is one core session: frames in ->
`protocol.parse_frame` -> `Session.handle`; events -> `protocol.encode` -> frames out.

Security: the `Origin` of an upgrade must be the page's own (or one of `--web-origins`);
a frame over the size limit closes the connection (1009); output is bounded like the line
door's; every response carries a Content-Security-Policy that forbids inline script and
other origins. Tokens travel only inside frames, never in a URL, and are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from gateway.admission import Admission, Ticket
from gateway.core import events as ev
from gateway.core.session import Core, Phase, Session
from gateway.doors.irc.connection import IrcDoor
from gateway.doors.irc.websocket import SUBPROTOCOLS, serve_irc_websocket
from gateway.doors.web.protocol import FrameError, encode, error_frame, messages_frame
from gateway.doors.web.protocol import parse_frame as parse
from gateway.metrics import METRICS

__all__ = ["WebConnection", "WebDoor"]

log = logging.getLogger("chat.web")
# websockets logs every request and close at INFO; the door logs its own connect lines.
logging.getLogger("websockets").setLevel(logging.WARNING)

STATIC = Path(__file__).with_name("static")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Sent with every response: no inline script, nothing from other origins, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: Bytes of JSON overhead allowed in a frame beyond the longest line (`--max-line`).
FRAME_SLACK = 1024
#: Close code and reason when a reader falls `--max-output` bytes behind.
OVERFLOW_CLOSE = (1008, "output queue exceeded (reading too slowly)")


@dataclass(slots=True, eq=False)
class WebDoor:
    core: Core
    admission: Admission
    max_line: int
    max_output: int
    origins: tuple[str, ...]  # empty: the page's own origin only
    connections: set[WebConnection]
    #: IRC over WebSocket (`text.ircv3.net`, docs/IRC.md) with this door; None: refused.
    irc: IrcDoor | None = None

    async def start(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> Server:
        """Listen (HTTPS and WSS with a TLS context); an OSError means the address could
        not be bound."""
        files = _static_files()

        def process_request(conn: ServerConnection, request: Request) -> Response | None:
            if request.path in ("/ws", "/irc"):
                origin = request.headers.get("Origin")
                if origin is not None and not self._origin_ok(origin, request.headers):
                    log.warning("event=refused reason=origin origin=%r", origin)
                    return _response(HTTPStatus.FORBIDDEN, b"origin not allowed\n", "text/plain")
                return None  # the WebSocket handshake goes on
            found = files.get(request.path.split("?", 1)[0])
            if found is None:
                return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            return _response(HTTPStatus.OK, *found)

        return await serve(
            self._handle,
            host,
            port,
            process_request=process_request,
            max_size=self.max_line + FRAME_SLACK,
            server_header=None,
            select_subprotocol=self._subprotocol,
            compression=None,  # per-message deflate costs CPU per reader; lines are small
            ssl=ssl_context,
        )

    def _origin_ok(self, origin: str, headers: Headers) -> bool:
        if self.origins:
            return origin in self.origins
        host = headers.get("Host", "")
        return origin in (f"http://{host}", f"https://{host}")

    def _subprotocol(
        self, conn: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        """An IRCv3 WebSocket subprotocol if the client offers one (and IRC is on); the
        page's JSON protocol asks for none."""
        if self.irc is None:
            return None
        return next((Subprotocol(p) for p in SUBPROTOCOLS if p in offered), None)

    async def _handle(self, ws: ServerConnection) -> None:
        irc = ws.subprotocol in SUBPROTOCOLS or (
            ws.request is not None and ws.request.path == "/irc"
        )
        if irc:
            if self.irc is None:
                await ws.close(1008, "IRC is off on this gateway")
                return
            await serve_irc_websocket(self.irc, ws)
            return
        await WebConnection(self, ws).run()


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files by URL path, read once (a missing file is a broken install)."""
    try:
        files = {
            "/" + p.name: (p.read_bytes(), _TYPES.get(p.suffix, "application/octet-stream"))
            for p in STATIC.iterdir()
            if p.is_file()
        }
        files["/"] = files["/index.html"]
        files["/favicon.ico"] = files["/favicon.svg"]
    except (OSError, KeyError) as exc:
        raise RuntimeError(f"the web page's files are missing from {STATIC}: {exc}") from None
    return files


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(_SECURITY_HEADERS)
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    return Response(status.value, status.phrase, headers, body)


class WebConnection:
    """One WebSocket: the core's `Sink`. Frames queued in a loop turn are sent by one
    writer task, in order; more than `max_output` bytes queued drops the reader."""

    __slots__ = (
        "__weakref__",
        "_closing",
        "_dead",
        "_queue",
        "_queued",
        "_ticket",
        "_wake",
        "address",
        "door",
        "session",
        "ws",
    )

    def __init__(self, door: WebDoor, ws: ServerConnection) -> None:
        self.door = door
        self.ws = ws
        peer = ws.remote_address
        self.address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self.session: Session | None = None
        self._ticket: Ticket | None = None
        self._queue: list[str] = []
        self._queued = 0
        self._wake = asyncio.Event()
        self._closing = False  # close once the queue is sent
        self._dead = False  # dropped: nothing more is queued or sent

    async def run(self) -> None:
        ticket = self.door.admission.admit(self.address, self._login_deadline, self._refused)
        if isinstance(ticket, str):
            self.door.admission.log_refused(ticket, self.address, "web")
            await self.ws.send(error_frame("busy", ticket))
            await self.ws.close(1013, ticket[:120])
            return
        self._ticket = ticket
        self.door.connections.add(self)
        session = self.session = self.door.core.session(self)
        log.info("event=connect door=web peer=%s session=%s", self.address, session.session_id)
        writer = asyncio.ensure_future(self._write())
        # The session learns of a close at once, even while a command (a login's hash,
        # a backlog) is still running: no work, and no attach, for a gone connection.
        watcher = asyncio.ensure_future(self._closed_when_gone(session))
        session.start()
        try:
            async for raw in self.ws:
                if self._closing:
                    break
                try:
                    commands = parse(raw, session.phase)
                except FrameError as exc:
                    self._send(error_frame(ev.ErrorCode.BAD_INPUT.value, str(exc)))
                    continue
                for command in commands:
                    await session.handle(command)
        except ConnectionClosed:
            pass
        finally:
            self._closing = True
            self.door.connections.discard(self)
            ticket.release()
            session.closed()
            self._wake.set()
            watcher.cancel()
            try:
                await asyncio.wait_for(writer, 2)
            except (TimeoutError, ConnectionClosed):
                writer.cancel()

    async def _closed_when_gone(self, session: Session) -> None:
        await self.ws.wait_closed()
        self._dead = self._closing = True
        session.closed()

    def _refused(self, reason: str) -> None:
        """Admission refused the connection after all (over the limit on all gateways)."""
        self._send(error_frame("busy", reason))
        self.close()

    def _login_deadline(self) -> None:
        if self.session is not None and self.session.phase in (
            Phase.NICK,
            Phase.PASSWORD,
            Phase.LOADING,
        ):
            timeout = self.door.admission.login_timeout
            self._send(error_frame("timeout", f"login timed out after {timeout:g} s"))
            self.close()

    # -- the core's sink -------------------------------------------------------------------

    def emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.Ready) and self._ticket is not None:
            self._ticket.logged_in()
        self._send(encode(event))

    def show(self, messages: ev.Messages) -> None:
        self._send(messages_frame(messages))

    async def drain(self) -> None:
        while self._queue and not self._closing and not self._dead:
            await asyncio.sleep(0.005)

    def close(self) -> None:
        """Send what is queued, then close."""
        self._closing = True
        self._wake.set()

    def overflow(self) -> None:
        if self._dead:
            return
        METRICS.slow_readers.inc()
        log.warning("event=sendq_exceeded door=web peer=%s", self.address)
        self._dead = self._closing = True
        self._queue.clear()
        self._queued = 0
        self._wake.set()
        # A reader that does not read would not complete a closing handshake either: say
        # why in a close frame if the buffer takes it, then drop the connection at once.
        try:
            self.ws.protocol.send_close(*OVERFLOW_CLOSE)
            for data in self.ws.protocol.data_to_send():
                self.ws.transport.write(data)
        except Exception:  # already closing: nothing more to say
            pass
        self.ws.transport.abort()

    # -- output ----------------------------------------------------------------------------

    def _send(self, frame: str) -> None:
        if self._dead:
            return
        self._queue.append(frame)
        self._queued += len(frame)
        if self._queued > self.door.max_output:
            self.overflow()
            return
        self._wake.set()

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue and not self._dead:
                    frames, self._queue = self._queue, []
                    self._queued = 0
                    for frame in frames:
                        await self.ws.send(frame)
                if self._closing:
                    await self.ws.close()
                    return
        except ConnectionClosed:
            return
        finally:
            self._dead = True  # nothing will send what is queued: stop waiting for it
