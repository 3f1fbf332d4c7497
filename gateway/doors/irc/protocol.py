"""The IRC door's wire format, pure: a line in -> `IrcMessage`; messages and events -> lines.

No sockets and no asyncio: every rule here (tag escaping, the 512-byte limit, how a long
chat message is split, which numeric an error becomes) is tested by calling functions.
`docs/IRC.md` documents the mapping for client authors and operators.

Splitting rule: a line is at most 512 bytes with its CRLF, not counting the tags (IRCv3).
A chat message too long for one PRIVMSG (texts from telnet or the web may be up to
`--max-line` bytes) is sent as several PRIVMSGs, each cut at the last space that keeps it
in the limit (or, with no space in the second half, at a character boundary); every piece
carries the same `time`, the first the message's `msgid` and the others `msgid` + `~2`,
`~3`... Nothing is truncated.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

from gateway.core import events as ev
from gateway.core.names import name_key
from gateway.core.timefmt import ban_end
from store.contract import Conv, Message, Position

__all__ = [
    "CAPS",
    "MAX_LINE",
    "MAX_TAGS_IN",
    "SERVER",
    "IrcMessage",
    "Wants",
    "escape_tag",
    "format_line",
    "iso_time",
    "message_lines",
    "msgid",
    "parse",
    "parse_msgid",
    "parse_time",
    "split_text",
    "unescape_tag",
    "wants_for",
]

#: The server's name in prefixes and numerics.
SERVER = "chat.gateway"
#: Bytes of one line with its CRLF, tags not counted (RFC 1459 / IRCv3 message-tags).
MAX_LINE = 512
#: Bytes of tags a client may send (IRCv3: 4094 plus `@` and a space).
MAX_TAGS_IN = 4096
#: Capabilities offered by `CAP LS` (values after `=` with `CAP LS 302`).
CAPS: dict[str, str] = {
    "sasl": "PLAIN",
    "server-time": "",
    "message-tags": "",
    "echo-message": "",
    "batch": "",
    "labeled-response": "",
    "account-tag": "",
    "draft/chathistory": "",
    "draft/read-marker": "",
    "standard-replies": "",
}
#: Messages returned by one CHATHISTORY request at most (ISUPPORT CHATHISTORY=).
CHATHISTORY_MAX = 100

_TAG_ESCAPES = {";": r"\:", " ": r"\s", "\\": r"\\", "\r": r"\r", "\n": r"\n"}
_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


@dataclass(frozen=True, slots=True)
class IrcMessage:
    command: str  # upper case
    params: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""


def unescape_tag(value: str) -> str:
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append(_TAG_UNESCAPES.get(nxt, nxt))
            i += 2
            continue
        if ch != "\\":  # a lone trailing backslash is dropped
            out.append(ch)
        i += 1
    return "".join(out)


def escape_tag(value: str) -> str:
    return "".join(_TAG_ESCAPES.get(ch, ch) for ch in value)


def parse(line: str) -> IrcMessage | None:
    """One client line (without CRLF); None for a line with no command."""
    tags: dict[str, str] = {}
    rest = line
    if rest.startswith("@"):
        raw, _, rest = rest[1:].partition(" ")
        for item in raw.split(";"):
            if item:
                k, _, v = item.partition("=")
                tags[k] = unescape_tag(v)
    rest = rest.lstrip(" ")
    source = ""
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
    rest = rest.lstrip(" ")
    trailing = None
    if " :" in rest:
        rest, trailing = rest.split(" :", 1)
    elif rest.startswith(":"):
        rest, trailing = "", rest[1:]
    words = [w for w in rest.split(" ") if w]  # only spaces separate (not U+00A0 ...)
    if not words:
        return None
    params = words[1:]
    if trailing is not None:
        params.append(trailing)
    return IrcMessage(words[0].upper(), tuple(params), tags, source)


def format_line(
    command: str,
    *params: str,
    source: str = SERVER,
    tags: dict[str, str] | None = None,
) -> str:
    """One line without CRLF; the last parameter is sent as trailing when it must be."""
    parts = []
    if tags:
        parts.append("@" + ";".join(f"{k}={escape_tag(v)}" if v else k for k, v in tags.items()))
    if source:
        parts.append(":" + source)
    parts.append(command)
    if params:
        *middle, last = params
        parts += middle
        if not last or " " in last or last.startswith(":"):
            last = ":" + last
        parts.append(last)
    return " ".join(parts)


def iso_time(ms: int) -> str:
    """IRCv3 server-time: `2026-11-27T15:42:00.123Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def parse_time(text: str) -> int | None:
    """An IRCv3 timestamp as ms since the epoch; None if it is not one."""
    try:
        head, _, frac = text.rstrip("Z").partition(".")
        sec = time.mktime(time.strptime(head, "%Y-%m-%dT%H:%M:%S")) - time.timezone
        ms = int((frac + "000")[:3]) if frac else 0
    except (ValueError, OverflowError):
        return None
    return int(sec) * 1000 + ms


def msgid(conv: Conv, pos: Position) -> str:
    """A message's IRC msgid: its id and its conversation's, so unique everywhere."""
    return f"{pos}~{conv}"


def parse_msgid(text: str) -> tuple[Conv, Position] | None:
    """(conversation, position) of a msgid (a split piece's suffix is ignored)."""
    mid, _, rest = text.partition("~")
    conv = Conv.parse(rest.split("~", 1)[0]) if rest else None
    pos = Position.parse(mid)
    if conv is None or pos is None:
        return None
    return conv, pos


def split_text(text: str, budget: int) -> list[str]:
    """`text` cut into pieces of at most `budget` UTF-8 bytes (the rule in the module doc)."""
    data = text.encode()
    if len(data) <= budget:
        return [text]
    pieces = []
    while len(data) > budget:
        cut = budget
        while cut > 0 and (data[cut] & 0xC0) == 0x80:  # not inside a character
            cut -= 1
        space = data.rfind(b" ", budget // 2, cut + 1)
        if space > 0:
            pieces.append(data[:space].decode())
            data = data[space + 1 :]
        else:
            pieces.append(data[:cut].decode())
            data = data[cut:]
    if data:
        pieces.append(data.decode())
    return pieces


@dataclass(frozen=True, slots=True)
class Wants:
    """What one connection negotiated that changes how a message line looks."""

    time: bool = False
    tags: bool = False  # message-tags: msgid
    account: bool = False

    @property
    def any(self) -> bool:
        return self.time or self.tags or self.account


@cache
def wants_for(time: bool, tags: bool, account: bool) -> Wants:
    """One shared `Wants` per combination: the render cache compares them by identity."""
    return Wants(time, tags, account)


def source_of(nick: str) -> str:
    return f"{nick}!{nick}@{SERVER}"


def message_lines(
    where: ev.Conversation,
    items: Iterable[Message],
    me: str,
    wants: Wants,
    extra: dict[str, str] | None = None,
) -> list[str]:
    """The PRIVMSG lines of messages of one conversation, as user `me` sees them."""
    me_key = name_key(me)
    out = []
    for m in items:
        if isinstance(where, ev.ChatConv):
            target = "#" + where.name
        elif name_key(m.sender) == me_key:  # my own private message: to the peer
            target = where.name
        else:
            target = me
        src = source_of(m.sender)
        budget = MAX_LINE - 2 - len(f":{src} PRIVMSG {target} :".encode())
        pieces = split_text(m.text, budget) if m.text else [""]
        for i, piece in enumerate(pieces):
            tags: dict[str, str] = {}
            if extra:
                tags.update(extra)
            if wants.time:
                tags["time"] = iso_time(m.ms)
            if wants.tags:
                base = msgid(m.conv, m.pos)
                tags["msgid"] = base if i == 0 else f"{base}~{i + 1}"
            if wants.account:
                tags["account"] = m.sender
            out.append(format_line("PRIVMSG", target, piece, source=src, tags=tags))
    return out


def numeric(code: str, nick: str, *params: str) -> str:
    return format_line(code, nick or "*", *params)


def notice(nick: str, text: str) -> str:
    return format_line("NOTICE", nick or "*", text)


def error_numeric(err: ev.Error, nick: str, context: str, target: str) -> str:
    """The reply to an error of the core, by its code and the IRC command that caused it.

    `context` is the IRC command being handled, `target` its first parameter."""
    code = err.code
    text = err.text
    if code is ev.ErrorCode.BANNED:
        return numeric("404", nick, target or "*", text)  # ERR_CANNOTSENDTOCHAN
    if code is ev.ErrorCode.NO_SUCH_USER:
        return numeric("401", nick, target or "*", text)  # ERR_NOSUCHNICK
    if code is ev.ErrorCode.NOT_MEMBER:
        if context in ("PRIVMSG", "NOTICE"):
            return numeric("404", nick, target or "*", text)
        return numeric("442", nick, target or "*", text)  # ERR_NOTONCHANNEL
    if code is ev.ErrorCode.BAD_NAME:
        if target.startswith("#"):
            return numeric("403", nick, target, text)  # ERR_NOSUCHCHANNEL
        return numeric("401", nick, target or "*", text)
    if code is ev.ErrorCode.RATE_LIMITED:
        return format_line("FAIL", context or "*", "RATE_LIMITED", target or "*", text)
    return notice(nick, text)


def banned_text(e: ev.Banned) -> str:
    who = {True: " by a moderator", False: " after complaints from other users", None: ""}[
        e.by_moderator
    ]
    return f"you are banned until {ban_end(e.until_ms)}{who}: you can read but not send"
