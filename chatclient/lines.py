"""What the client understands of server lines. Pure: no sockets, no terminal.

The client speaks only the contract: it classifies each server line, follows the session's
current chat, remembers nicknames and chats for completion, and drops message lines that a
reconnect replays although they were already shown.
"""

from __future__ import annotations

import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = [
    "COMMANDS",
    "LOCAL_HELP",
    "ChatState",
    "Error",
    "Message",
    "Notice",
    "ReplayFilter",
    "ServerLine",
    "classify",
    "nick_colour",
    "parse_servers",
]

MESSAGE_RE = re.compile(r"^\[([^\]]+)\] ([#@]\S+) <([^>]+)> (.*)$")
COMMANDS = (
    "/send",
    "/chats",
    "/where",
    "/get_chats",
    "/ban",
    "/leave",
    "/who",
    "/history",
    "/help",
    "/token",
    "/password",
    "/logout",
    "/unban",
    "/kick",
    "/quit",
)
LOCAL_HELP = (
    "<text>                 send to the current chat (shown in the prompt)",
    "/send <nick> <text>    private message",
    "/send #<chat> <text>   message to a chat you are in",
    "/chats <name>          join or create a chat and make it current",
    "/where                 which chat is current, and the chats you are in",
    "/get_chats             list active chats",
    "/leave <#chat>         leave a chat",
    "/who [#chat]           who is online",
    "/history [n]           last n messages of the current chat",
    "/ban <nick>            complain about a user (enough complaints ban them)",
    "/token                 a resume token for this device (the client keeps its own)",
    "/password <old> <new>  change your password (other devices must log in again)",
    "/logout                forget this device's login token and leave",
    "/quit, Ctrl+D, Ctrl+C  leave",
    "moderators also:",
    "/ban <nick> [time]     ban at once, for time like 30m, 2h, 1d (default: the ban duration)",
    "/unban <nick>          lift a ban",
    "/kick <nick>           disconnect every session of nick",
    "Tab completes commands, nicknames and chats; Up/Down walk your input history.",
)


@dataclass(frozen=True, slots=True)
class Message:
    raw: str
    time: str
    where: str
    nick: str
    text: str

    @property
    def private(self) -> bool:
        return self.where.startswith("@")


@dataclass(frozen=True, slots=True)
class Notice:
    raw: str
    text: str


@dataclass(frozen=True, slots=True)
class Error:
    raw: str
    text: str


ServerLine = Message | Notice | Error


def classify(raw: str) -> ServerLine:
    m = MESSAGE_RE.match(raw)
    if m:
        return Message(raw, *m.groups())
    if raw.startswith("! "):
        return Error(raw, raw[2:])
    return Notice(raw, raw[2:] if raw.startswith("* ") else raw)


_PALETTE = (
    "ansicyan",
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansibrightcyan",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansibrightmagenta",
)


def nick_colour(nick: str) -> str:
    """The same nickname always gets the same colour, on every run."""
    return _PALETTE[zlib.crc32(nick.casefold().encode()) % len(_PALETTE)]


def parse_servers(values: list[str] | None, env: str | None) -> list[tuple[str, int]]:
    """`--server a:1 --server b:2`, `--server a:1,b:2` or CHAT_SERVERS, default 127.0.0.1:8000."""
    items: list[str] = []
    for v in values or ([env] if env else []):
        items += [p.strip() for p in v.split(",") if p.strip()]
    out = []
    for item in items or ["127.0.0.1:8000"]:
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad server {item!r}: expected HOST:PORT")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"bad server {item!r}: the port must be 1-65535")
        out.append((host.strip("[]"), int(port)))
    return out


@dataclass
class ChatState:
    """The session as the client sees it."""

    nick: str = ""
    current: str = "general"
    nicks: set[str] = field(default_factory=set)
    chats: set[str] = field(default_factory=lambda: {"general"})
    _asked: str | None = None

    def typed(self, line: str) -> None:
        """Note what the user sent: `/chats x` makes x current once the server agrees."""
        word, _, rest = line.strip().partition(" ")
        if word.lower() == "/chats" and rest.strip():
            self._asked = rest.strip().lstrip("#").casefold()

    def seen(self, line: ServerLine) -> None:
        if isinstance(line, Message):
            self.nicks.add(line.nick)
            if line.where.startswith("#"):
                self.chats.add(line.where[1:])
            else:
                self.nicks.add(line.where[1:])
            return
        if not isinstance(line, Notice):
            return
        text = line.text
        if text.startswith("ready: logged in as "):
            self.nick = text[len("ready: logged in as ") :].split(",")[0]
            m = re.search(r"current chat #(\S+)", text)
            self.current = m.group(1) if m else "general"
        for prefix in ("joined #", "you are in #"):
            if text.startswith(prefix):
                chat = text[len(prefix) :]
                self.chats.add(chat)
                if self._asked == chat.casefold():
                    self.current = chat
                    self._asked = None
        if text.startswith("current chat is now #"):
            self.current = text[len("current chat is now #") :]
        if text.startswith("left #"):
            self.chats.discard(text[len("left #") :])
        if text.startswith("online in #"):
            names = text.partition(": ")[2].split(" and ")[0]
            self.nicks.update(n.strip() for n in names.split(",") if n.strip())
        if text.startswith("chats: "):
            self.chats.update(re.findall(r"#(\S+) \(", text))


class ReplayFilter:
    """Remembers the last message lines shown so a reconnect's replay shows none twice."""

    def __init__(self, size: int = 5000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.replaying = False

    def show(self, line: ServerLine) -> bool:
        if not isinstance(line, Message):
            return True
        if self.replaying and line.raw in self._seen:
            return False
        self._seen[line.raw] = None
        self._seen.move_to_end(line.raw)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True
