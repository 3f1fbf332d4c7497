"""The IRC door's wire format, pure: a line in -> `IrcMessage`; messages -> lines.

No sockets and no asyncio: every rule here (tag escaping, the 512-byte limit, how a long
chat message is split, what a msgid is) is tested by calling functions. `docs/IRC.md`
documents the mapping for client authors and operators.

Splitting rule: a line is at most 512 bytes with its CRLF, not counting the tags (IRCv3).
A chat message too long for one PRIVMSG (texts from telnet or the web may be up to
`--max-line` bytes) is sent as several PRIVMSGs, each cut at the last space that keeps it
in the limit (or, with no space in the second half, at a character boundary); every piece
carries the same `time`, the first the message's `msgid` and the others `msgid` + `~2`,
`~3`... Nothing is truncated.

A msgid is opaque to clients: the message's position in its conversation and a short
digest of the conversation (`<ms>-<seq>-<digest>`), so equal positions in two
conversations never share one; the core checks the digest when a client names a message.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.history import conv_tag
from gateway.core.names import name_key
from store.contract import Kind, Message

__all__ = [
    "CAPS",
    "MAX_LINE",
    "MAX_TAGS_IN",
    "SERVER",
    "IrcMessage",
    "LocalIrcUser",
    "Wants",
    "client_tags",
    "escape_tag",
    "format_line",
    "iso_time",
    "message_blocks",
    "message_lines",
    "msgid",
    "parse",
    "parse_msgid",
    "parse_time",
    "source_of",
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
#: Bytes of client-only tags (`+name`) a client may send (IRCv3: 4094 with `@` and ` `).
MAX_CLIENT_TAGS = 4094
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
    "multi-prefix": "",  # chats have no prefixes: nothing to add
    "userhost-in-names": "",
}
#: Messages returned by one CHATHISTORY request at most (ISUPPORT CHATHISTORY=).
CHATHISTORY_MAX = 100

_TAG_ESCAPES = {";": r"\:", " ": r"\s", "\\": r"\\", "\r": r"\r", "\n": r"\n"}
_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_CLIENT_TAG = re.compile(r"\+(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+")
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z?")


@dataclass(slots=True)
class LocalIrcUser:
    """What WHO and WHOIS show of an IRC user connected to this gateway (of other users
    their nickname stands for their user and real name)."""

    username: str
    realname: str
    away: str = ""


@dataclass(frozen=True, slots=True)
class IrcMessage:
    command: str  # upper case
    params: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""
    #: Bytes of the tag section as sent (417 past MAX_TAGS_IN).
    tag_bytes: int = 0


def unescape_tag(value: str) -> str:
    if "\\" not in value:
        return value
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


def client_tags(tags: dict[str, str]) -> str:
    """A line's client-only tags (`+name`, `+vendor/name`) as one escaped tag section:
    what other clients get with the message (`Message.tags`). Other tags are the
    server's and not relayed; a tag with a malformed name or a control character in its
    value is dropped."""
    out = []
    for k, v in tags.items():
        if k.startswith("+") and _CLIENT_TAG.fullmatch(k) and v.isprintable():
            out.append(f"{k}={escape_tag(v)}" if v else k)
    return ";".join(out)


def parse(line: str) -> IrcMessage | None:
    """One client line (without CRLF); None for a line with no command."""
    tags: dict[str, str] = {}
    rest = line
    tag_bytes = 0
    if rest.startswith("@"):
        raw, _, rest = rest[1:].partition(" ")
        tag_bytes = len(raw.encode()) + 2
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
    return IrcMessage(words[0].upper(), tuple(params), tags, source, tag_bytes)


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
    return _iso_second(ms // 1000) + f".{ms % 1000:03d}Z"


@lru_cache(maxsize=256)
def _iso_second(sec: int) -> str:
    """The seconds part (a burst's messages share a few: strftime once each)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def parse_time(text: str) -> int | None:
    """An IRCv3 timestamp (UTC, whatever the gateway's time zone) as ms since the epoch;
    None if it is not one."""
    m = _TIME.fullmatch(text)
    if m is None:
        return None
    try:
        fields = tuple(int(g) for g in m.groups()[:6])
        sec = calendar.timegm((*fields, 0, 0, 0))
        time.gmtime(sec)  # in range
    except (ValueError, OverflowError):
        return None
    frac = m.group(7) or ""
    return sec * 1000 + int((frac + "000")[:3])


def msgid(m: Message, tag: str) -> str:
    """A message's IRC msgid: its position and its conversation's digest."""
    return f"{m.id}-{tag}"


def parse_msgid(text: str) -> cmd.MessageAt | None:
    """The message a msgid names (a split piece's `~n` suffix is ignored)."""
    ms, _, rest = text.split("~", 1)[0].partition("-")
    seq, _, tag = rest.partition("-")
    if not (ms.isdigit() and seq.isdigit() and ms.isascii() and seq.isascii()) or not tag:
        return None
    return cmd.MessageAt(int(ms), int(seq), tag)


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
    """One shared `Wants` per combination: each has its own render cache."""
    return Wants(time, tags, account)


_MESSAGE = Kind.MESSAGE


@lru_cache(maxsize=4096)
def source_of(nick: str) -> str:
    """A user's `nick!user@host` (user and host stand for nothing here)."""
    return f"{nick}!{nick}@{SERVER}"


def message_blocks(
    where: ev.Conversation,
    items: Iterable[Message],
    me: str,
    wants: Wants,
    extra: dict[str, str] | None = None,
) -> list[str]:
    """Per message, its PRIVMSG (or NOTICE) lines with their CRLFs, as user `me` sees
    them (several for a message split to fit; client tags, `Message.tags`, only with
    message-tags). The fan-out path: tags are built by hand, not through `format_line`,
    and a burst is rendered once per kind of reader (a reader that leaves its own
    messages out joins the blocks of the others)."""
    me_key = name_key(me)
    chat = isinstance(where, ev.ChatConv)
    tag = conv_tag(where, me_key) if wants.tags else ""
    lead = "".join(f"{k}={escape_tag(v)};" for k, v in extra.items()) if extra else ""
    out = []
    target = "#" + where.name if chat else ""
    plain = chat and not lead and not wants.any  # one line each, no tags: the usual case
    heads: dict[str, str] = {}
    for m in items:
        if plain and m.kind is _MESSAGE:
            text = m.text
            head = heads.get(m.sender)
            if head is None:
                head = heads[m.sender] = f":{source_of(m.sender)} PRIVMSG {target} "
            if len(text) * 4 + len(head) + 3 <= MAX_LINE:
                if not text or " " in text or text[0] == ":":
                    out.append(f"{head}:{text}\r\n")
                else:
                    out.append(f"{head}{text}\r\n")
                continue
        if not chat:  # mine to the other user (by the name stored with it), or to me
            target = (m.where or where.name) if name_key(m.sender) == me_key else me
        command = "NOTICE" if m.kind is Kind.NOTICE else "PRIVMSG"
        head = f":{source_of(m.sender)} {command} {target} "
        text = m.text
        if len(text) * 4 + len(head) + 3 <= MAX_LINE:  # fits, whatever the characters
            pieces = [text]
        else:
            pieces = split_text(text, MAX_LINE - 3 - len(head.encode())) if text else [""]
        tags = lead
        if wants.time:
            tags += f"time={iso_time(m.pos[0])};"
        if wants.tags:
            base = f"{m.pos[0]}-{m.pos[1]}-{tag}"
            client = m.tags + ";" if m.tags else ""
        if wants.account:
            account = f"account={escape_tag(m.sender)};"
        block = ""
        for i, piece in enumerate(pieces):
            if not piece or " " in piece or piece[0] == ":":
                piece = ":" + piece  # trailing only where it must be (as format_line)
            line_tags = tags
            if wants.tags:
                line_tags += f"msgid={base if i == 0 else f'{base}~{i + 1}'};{client}"
            if wants.account:
                line_tags += account
            if line_tags:
                block += f"@{line_tags[:-1]} {head}{piece}\r\n"
            else:
                block += f"{head}{piece}\r\n"
        out.append(block)
    return out


def message_lines(
    where: ev.Conversation,
    items: Iterable[Message],
    me: str,
    wants: Wants,
    extra: dict[str, str] | None = None,
) -> list[str]:
    """The lines of `message_blocks`, without CRLFs."""
    blocks = message_blocks(where, items, me, wants, extra)
    return [line for block in blocks for line in block[:-2].split("\r\n")]
