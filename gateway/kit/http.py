"""The little HTTP/1.1 a gateway's web port needs: request heads in, responses out.

Sans-I/O. The web port serves a handful of static files and the WebSocket upgrade, so
this reads only a request's head (no bodies: a request that announces one is refused)
and every plain response closes the connection. Limits: the head is at most `MAX_HEAD`
bytes and `MAX_HEADERS` lines (431 beyond); anything malformed is a 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

__all__ = ["MAX_HEAD", "MAX_HEADERS", "BadRequest", "Request", "parse_head", "response"]

MAX_HEAD = 8 * 1024
MAX_HEADERS = 64
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class BadRequest(Exception):
    """A request the server will not read further; `status` says why."""

    def __init__(self, status: HTTPStatus, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str
    #: Header names lower-cased; a repeated header's values joined with ", " (RFC 9110).
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    def tokens(self, name: str) -> list[str]:
        """A comma-separated header's items, lower-cased (Connection, Upgrade)."""
        return [t.strip().lower() for t in self.header(name).split(",") if t.strip()]


def parse_head(head: bytes) -> Request:
    """A request head (without its final blank line)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "request head must be ASCII") from None
    lines = text.split("\r\n")
    if len(lines) > MAX_HEADERS + 1:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header lines")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1].startswith("/"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "HTTP/1.1 only")
    if not set(method.encode()) <= _TOKEN:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad method")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or not set(name.encode()) <= _TOKEN:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad header line")
        if any(c < " " and c != "\t" for c in value):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "control character in a header")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise BadRequest(HTTPStatus.BAD_REQUEST, "request bodies are not accepted here")
    return Request(method, target, version, headers)


def response(
    status: HTTPStatus,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    head_only: bool = False,
) -> bytes:
    """A whole response; `Connection: close` unless the headers say otherwise."""
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    fields = {"Content-Length": str(len(body)), "Connection": "close"}
    fields.update(headers or {})
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)
