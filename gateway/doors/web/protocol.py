"""The web door's wire format: one JSON object per WebSocket text frame, both ways.

Pure: a frame in -> core commands; a core event -> a frame out. `docs/WEBSOCKET.md`
documents every frame so that other clients can be written against it. Every frame
carries `"v": 1`. Message texts are data: the page inserts them as text, never as HTML.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.names import name_key, sanitize
from gateway.core.session import Phase
from gateway.core.slash import HELP_LINES, MAX_HISTORY, parse

__all__ = [
    "CLIENT_FRAMES",
    "SILENT",
    "VERSION",
    "FrameError",
    "encode",
    "messages_frame",
    "parse_frame",
]

VERSION = 1
#: No spaces after `,` and `:`: a `messages` item is about a tenth shorter, and every byte
#: of a burst is sent to every page reading it.
COMPACT = (",", ":")
#: Every frame type a client may send (docs/WEBSOCKET.md).
CLIENT_FRAMES = frozenset(
    (
        "login",
        "resume",
        "say",
        "send",
        "join",
        "leave",
        "chats",
        "who",
        "complain",
        "command",
        "token",
        "logout",
        "password",
        "history",
    )
)


class FrameError(ValueError):
    """A frame the door cannot take; its text is sent back as an error frame."""


def _unpaired(text: str) -> bool:
    """Whether JSON's escapes left a lone surrogate in `text`: it has no UTF-8 form, so no
    store, hash or other door could take it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _text(frame: dict[str, Any], field: str) -> str:
    value = frame.get(field)
    if not isinstance(value, str) or not value.strip():
        raise FrameError(f"{frame.get('type')!r} needs a non-empty string {field!r}")
    return value


def parse_frame(raw: str | bytes, phase: Phase, max_line: int = 4096) -> list[cmd.Command]:
    """The commands one frame asks for, in order (a login is a nickname then a password).
    A text longer than `max_line` bytes is refused, as the line protocol refuses a longer
    line (the frame itself may be longer: JSON escapes grow a text up to 6x)."""
    if isinstance(raw, bytes):
        raise FrameError("binary frames are not accepted; send JSON text")
    try:
        frame = json.loads(raw)
    except (ValueError, RecursionError):  # nested too deep is not a chat frame either
        raise FrameError("a frame must be one JSON object") from None
    if not isinstance(frame, dict):
        raise FrameError("a frame must be one JSON object")
    if any(isinstance(v, str) and _unpaired(v) for v in frame.values()):
        raise FrameError("text must be valid Unicode (a \\ud800-\\udfff escape must be a pair)")
    for name, v in frame.items():
        if isinstance(v, str) and len(v) * 4 > max_line and len(v.encode()) > max_line:
            raise FrameError(f"{name!r} is too long: at most {max_line} bytes; nothing was done")
    if frame.get("v", VERSION) != VERSION:
        raise FrameError(f"unsupported version {frame.get('v')!r}; this server speaks 1")
    kind = frame.get("type")
    if kind not in CLIENT_FRAMES:
        raise FrameError(f"unknown frame type {kind!r}")
    if kind == "login":
        if phase is not Phase.NICK:
            raise FrameError("already logging in or logged in")
        return [
            cmd.Nick(sanitize(_text(frame, "nick")).strip()),
            cmd.Password(_text(frame, "password")),
        ]
    if kind == "resume":  # a resume token instead of the password: no password hash
        if phase is not Phase.NICK:
            raise FrameError("already logging in or logged in")
        nick = sanitize(_text(frame, "nick")).strip()
        return [cmd.Nick(nick, token=_text(frame, "token"))]
    if phase is not Phase.READY:
        raise FrameError("log in first")
    if kind == "token":
        return [cmd.IssueToken()]
    if kind == "logout":
        return [cmd.Logout()]
    if kind == "password":
        return [cmd.ChangePassword(_text(frame, "old"), _text(frame, "new"))]
    if kind == "say":
        text = sanitize(_text(frame, "text")).strip()
        chat = frame.get("chat")
        if isinstance(chat, str) and chat:
            return [cmd.SendChat(chat.removeprefix("#"), text)]
        return [cmd.Say((text,))]
    if kind == "send":
        return [cmd.SendPrivate(_text(frame, "to"), sanitize(_text(frame, "text")).strip())]
    if kind == "join":
        return [cmd.Join(_text(frame, "chat").removeprefix("#"))]
    if kind == "leave":
        return [cmd.Leave(_text(frame, "chat").removeprefix("#"))]
    if kind == "chats":
        return [cmd.GetChats()]
    if kind == "who":
        chat = frame.get("chat")
        return [cmd.Who(chat.removeprefix("#") if isinstance(chat, str) and chat else None)]
    if kind == "complain":
        return [cmd.Ban(_text(frame, "nick"))]
    if kind == "history":
        return [_history(frame)]
    if kind == "command":  # a line typed in the composer: the line protocol's words
        command = parse(sanitize(_text(frame, "line")))
        return [command] if command is not None else []
    raise FrameError(f"unknown frame type {kind!r}")


def _history(frame: dict[str, Any]) -> cmd.History:
    """`conv` is `#chat` or `@nick`; `count` at most what `/history n` allows."""
    conv = _text(frame, "conv")
    count = frame.get("count")
    if count is not None and (
        not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_HISTORY
    ):
        raise FrameError(f"'history' count must be a whole number from 1 to {MAX_HISTORY}")
    if conv.startswith("#"):
        return cmd.History(count, chat=conv[1:])
    if conv.startswith("@"):
        return cmd.History(count, peer=conv[1:])
    raise FrameError("'history' needs conv '#chat' or '@nick'")


def _conv(where: ev.Conversation) -> dict[str, str]:
    if isinstance(where, ev.ChatConv):
        return {"kind": "chat", "id": "#" + where.key, "name": where.name}
    return {"kind": "private", "id": "@" + where.peer, "name": where.name}


def messages_frame(event: ev.Messages) -> str:
    """A burst's frame (the kit renders it once for every page reading it)."""
    return json.dumps(
        {
            "v": VERSION,
            "type": "messages",
            "conv": _conv(event.where),
            "items": [
                {"id": m.id, "ts": m.ms, "from": m.sender, "text": m.text} for m in event.items
            ],
        },
        ensure_ascii=False,
        separators=COMPACT,
    )


_FRAMES: dict[type, Callable[[Any], dict[str, Any]]] = {
    ev.AskNick: lambda e: {"type": "login_required", "retry": not e.first},
    ev.AskPassword: lambda e: {"type": "password_required", "nick": e.nick, "new": e.new},
    ev.Ready: lambda e: {
        "type": "ready",
        "nick": e.nick,
        "chat": "#" + e.chat,
        "chats": ["#" + c for c in e.chats],
        "privates": [_conv(p) for p in e.privates],
    },
    ev.Joined: lambda e: {"type": "joined", "chat": "#" + e.chat, "already": e.already},
    ev.Left: lambda e: {"type": "left", "chat": "#" + e.chat},
    ev.CurrentChat: lambda e: {"type": "current_chat", "chat": "#" + e.chat},
    ev.ChatList: lambda e: {
        "type": "chats",
        "chats": [
            {"name": "#" + c.name, "members": c.members, "online": c.online} for c in e.chats
        ],
    },
    ev.Online: lambda e: {
        "type": "online",
        "chat": "#" + e.chat,
        "names": list(e.names),
        "total": e.total,
    },
    ev.NoHistory: lambda e: (
        {"type": "no_history", "conv": _conv(e.private), "seconds": e.seconds}
        if e.private
        else {
            "type": "no_history",
            "chat": "#" + e.chat,
            "conv": {"kind": "chat", "id": "#" + name_key(e.chat), "name": e.chat},
            "seconds": e.seconds,
        }
    ),
    ev.Complained: lambda e: {
        "type": "complained",
        "nick": e.target,
        "count": e.count,
        "threshold": e.threshold,
        "banned_until": e.banned_until_ms,
    },
    ev.Banned: lambda e: {"type": "banned", "until": e.until_ms, "by_moderator": e.by_moderator},
    ev.BanPlaced: lambda e: {"type": "ban_placed", "nick": e.target, "until": e.until_ms},
    ev.Unbanned: lambda e: {"type": "unbanned", "nick": e.target, "was_banned": e.was_banned},
    ev.KickSent: lambda e: {"type": "kick_sent", "nick": e.target},
    ev.BanLifted: lambda e: {"type": "ban_lifted"},
    ev.Kicked: lambda e: {
        "type": "kicked",
        "text": "you were disconnected by a moderator",
    },
    ev.WhereNow: lambda e: {
        "type": "where",
        "chat": "#" + e.chat,
        "chats": ["#" + c for c in e.chats],
    },
    ev.HelpWanted: lambda e: {"type": "help", "lines": list(HELP_LINES)},
    ev.TokenIssued: lambda e: {"type": "token", "token": e.token, "seconds": e.seconds},
    ev.PasswordChanged: lambda e: {"type": "password_changed"},
    ev.StoreReset: lambda e: {"type": "store_reset"},
    ev.BacklogCut: lambda e: {"type": "backlog_cut", "conv": _conv(e.where), "shown": e.shown},
    ev.Bye: lambda e: {"type": "bye"},
    ev.ShuttingDown: lambda e: {"type": "shutting_down"},
    ev.Error: lambda e: {"type": "error", "code": e.code.value, "text": e.text},
}


#: Events the page never asks for (IRC's history by range and read markers, which another
#: device of the user may move) or does not show (other users' typing notices and
#: reactions, comings and goings: the page lists who is online when asked): no frame.
SILENT = frozenset(
    (
        ev.HistoryPage,
        ev.Targets,
        ev.ReadMarker,
        ev.Tagged,
        ev.MemberCame,
        ev.MemberParted,
        ev.MemberQuit,
    )
)


def encode(event: ev.Event) -> str:
    """The frame of any core event ("" for the `SILENT` ones)."""
    if type(event) in SILENT:
        return ""
    if isinstance(event, ev.Messages):
        return messages_frame(event)
    frame = _FRAMES[type(event)](event)
    frame["v"] = VERSION
    return json.dumps(frame, ensure_ascii=False, separators=COMPACT)


def error_frame(code: str, text: str) -> str:
    return json.dumps(
        {"v": VERSION, "type": "error", "code": code, "text": text}, separators=COMPACT
    )
