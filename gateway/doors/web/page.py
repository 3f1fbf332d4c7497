"""The web port before a WebSocket: the page's files, and the upgrade to `/ws` or `/irc`.

A kit codec for HTTP. The page is a handful of static files (read once at start, each
under 20 KB) served with a strict Content-Security-Policy, one response per connection;
an upgrade request is checked (method, version, key, `Origin`) and the connection becomes
a WebSocket around the codec its route names: the page's JSON (`/ws`) or IRC for web IRC
clients (`/irc`, or the `text.ircv3.net` / `binary.ircv3.net` subprotocols). The routes
come from the gateway's wiring, so this door does not import the IRC door.

Admission counts the connection from its accept, so one address cannot hold more than
`--max-per-ip` half-open requests, and a request must be complete within the door's
upgrade timeout.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from gateway.core import events as ev
from gateway.core.session import Phase
from gateway.kit.codec import CLOSE, Codec, Drop, Step, Unit, Upgrade
from gateway.kit.http import MAX_HEAD, BadRequest, Request, parse_head, response
from gateway.kit.render_once import RenderOnce
from gateway.kit.websocket import WebSocketCodec, accept_key, deflate_response

__all__ = ["CSP", "JSON_ROUTE", "PageCodec", "Route", "Site", "static_files"]

log = logging.getLogger("chat.web")

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
#: Bytes of JSON overhead allowed in a message beyond the longest line (`--max-line`).
FRAME_SLACK = 1024
#: How much longer a text can get as a JSON string: `"` and `\` double, a control
#: character becomes `\u001b`. A message of `--max-line` bytes of text must fit whatever
#: it holds (a text of quotes and backslashes was closed with 1009 and lost).
JSON_GROWTH = 6


def max_message(max_line: int) -> int:
    """The longest WebSocket message the web port takes for `--max-line`."""
    return JSON_GROWTH * max_line + FRAME_SLACK


#: Bytes a client may send after its upgrade request before the upgrade is answered
#: (a client that pipelines frames); more is a protocol error.
MAX_EARLY = 64 * 1024
#: The route of the page's own WebSocket (no subprotocol).
JSON_ROUTE = "json"


@dataclass(frozen=True, slots=True)
class Route:
    """A WebSocket the web port offers: the codec inside it, and how it is framed."""

    make: Callable[[], Codec]
    #: The inner codec speaks CRLF lines (IRC): one frame per line, both ways.
    lines: bool = False
    binary: bool = False
    #: The framed bytes of the last burst, shared by every reader of this route (only
    #: when every reader renders a burst alike: the page; not IRC, whose capabilities vary).
    cache: RenderOnce | None = None
    #: The same for readers that agreed permessage-deflate (the burst's bytes compressed
    #: once for all of them); None: this route offers no compression.
    deflate_cache: RenderOnce | None = None


@dataclass(slots=True)
class Site:
    """What every connection of the web port shares."""

    files: Mapping[str, tuple[bytes, str]]
    #: "json" (the page, `/ws`), and the IRC subprotocols when the IRC door is on.
    routes: Mapping[str, Route]
    max_message: int
    #: Origins allowed to open a WebSocket (`--web-origins`); empty: the page's own, when
    #: the Host it was loaded from is this machine (see `origin_ok`).
    origins: tuple[str, ...] = ()
    #: Host names that name this gateway without --web-origins: its --host, the machine's
    #: name, `localhost`, and any IP address.
    local_names: frozenset[str] = frozenset()


def static_files() -> dict[str, tuple[bytes, str]]:
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


def local_names(host: str) -> frozenset[str]:
    names = {"localhost", host.lower(), socket.gethostname().lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return frozenset(n for n in names if n)


def _plain(status: HTTPStatus, text: str, head_only: bool = False) -> bytes:
    headers = dict(_SECURITY_HEADERS)
    headers["Content-Type"] = "text/plain; charset=utf-8"
    return response(status, (text + "\n").encode(), headers, head_only=head_only)


class PageCodec(Codec):
    """One connection to the web port, until (unless) it becomes a WebSocket."""

    __slots__ = ("_buf", "_rest", "site")

    session_at_accept = False
    door = "web"

    def __init__(self, site: Site) -> None:
        super().__init__(None)
        self.site = site
        self._buf = b""  # the request head so far
        #: After a whole request: what followed it (kept for the WebSocket), or None while
        #: the head is still being read.
        self._rest: bytes | None = None

    def feed(self, data: bytes) -> list[Unit]:
        if self._rest is not None:  # a request is being answered: keep what follows
            self._rest += data
            if len(self._rest) > MAX_EARLY:
                raise Drop("http: data before the upgrade was answered")
            return []
        buf = self._buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise Drop(
                    "http: request head too large",
                    _plain(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"),
                )
            self._buf = buf
            return []
        self._buf = b""
        self._rest = buf[end + 4 :]
        if end > MAX_HEAD:
            raise Drop(
                "http: request head too large",
                _plain(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"),
            )
        try:
            return [parse_head(buf[:end])]
        except BadRequest as exc:
            raise Drop(f"http: {exc.text}", _plain(exc.status, exc.text)) from None

    def decode(self, unit: Unit, phase: Phase | None) -> Sequence[Step]:
        request: Request = unit
        head = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            return (_plain(HTTPStatus.METHOD_NOT_ALLOWED, "GET only"), CLOSE)
        if "websocket" in request.tokens("upgrade"):
            return self._upgrade(request)
        found = self.site.files.get(request.path)
        if found is None:
            return (_plain(HTTPStatus.NOT_FOUND, "not found", head), CLOSE)
        body, kind = found
        headers = dict(_SECURITY_HEADERS)
        headers["Content-Type"] = kind
        return (response(HTTPStatus.OK, body, headers, head_only=head), CLOSE)

    def _upgrade(self, request: Request) -> Sequence[Step]:
        site = self.site
        route_name = self._route(request)
        if route_name is None:
            return (_plain(HTTPStatus.NOT_FOUND, "no WebSocket here"), CLOSE)
        key = request.header("sec-websocket-key")
        if (
            request.method != "GET"
            or request.version != "HTTP/1.1"
            or "upgrade" not in request.tokens("connection")
            or request.header("sec-websocket-version") != "13"
            or not _valid_key(key)
        ):
            return (
                _plain(HTTPStatus.BAD_REQUEST, "bad WebSocket upgrade").replace(
                    b"Connection: close", b"Sec-WebSocket-Version: 13\r\nConnection: close"
                ),
                CLOSE,
            )
        origin = request.header("origin")
        if origin and not self.origin_ok(origin, request.header("host")):
            log.warning("event=refused reason=origin origin=%r", origin)
            return (_plain(HTTPStatus.FORBIDDEN, "origin not allowed"), CLOSE)
        route = site.routes[route_name]
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {accept_key(key)}",
        ]
        if route_name != JSON_ROUTE and route_name in request.tokens("sec-websocket-protocol"):
            lines.append(f"Sec-WebSocket-Protocol: {route_name}")
        agreed = None
        if route.deflate_cache is not None:
            agreed = deflate_response(request.header("sec-websocket-extensions"))
        if agreed:
            lines.append(f"Sec-WebSocket-Extensions: {agreed}")
        codec = WebSocketCodec(
            route.make(),
            site.max_message,
            lines=route.lines,
            binary=route.binary,
            cache=route.deflate_cache if agreed else route.cache,
            deflate=bool(agreed),
        )
        rest, self._rest = self._rest or b"", None
        return (Upgrade(codec, ("\r\n".join(lines) + "\r\n\r\n").encode(), rest),)

    def _route(self, request: Request) -> str | None:
        """Which WebSocket: an IRC subprotocol the client offers (if IRC is on), else by
        path (`/ws`: the page; `/irc`: IRC as text lines)."""
        routes = self.site.routes
        offered = request.tokens("sec-websocket-protocol")
        for name in offered:
            if name != JSON_ROUTE and name in routes:
                return name
        if request.path == "/ws":
            return JSON_ROUTE
        if request.path == "/irc" and "text.ircv3.net" in routes:
            return "text.ircv3.net"
        return None

    def origin_ok(self, origin: str, host: str) -> bool:
        """`--web-origins` when set; else the page's own origin, and only when the page
        was loaded by a name of this machine: a DNS-rebinding page (an attacker's name
        pointed at the gateway) carries its own name in both Origin and Host."""
        site = self.site
        if site.origins:
            return origin in site.origins
        if origin not in (f"http://{host}", f"https://{host}"):
            return False
        name = _hostname(host)
        if name in site.local_names:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            log.warning(
                "event=refused reason=origin_not_pinned host=%r hint=%r",
                host,
                f"set --web-origins http://{host} (or https://) to allow it",
            )
            return False
        return True

    # -- a plain HTTP connection has no session: nothing of the core reaches it ------------

    def encode(self, event: ev.Event) -> bytes:
        return b""

    def show(self, messages: ev.Messages) -> bytes:
        return b""

    def refused(self, reason: str) -> bytes:
        return _plain(HTTPStatus.SERVICE_UNAVAILABLE, reason)

    def timed_out(self, text: str) -> bytes:
        return _plain(HTTPStatus.REQUEST_TIMEOUT, text)

    def overflowed(self) -> bytes:
        return b""


def _hostname(host: str) -> str:
    """The name part of a Host header (`[::1]:8080` -> `::1`, `a.b:80` -> `a.b`)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False
