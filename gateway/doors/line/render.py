"""Core events -> the exact bytes of the contract: message, notice and error lines.

Pure. Fan-out hands the same `Messages` object to every reader of a chat; the kit keeps
the bytes of the last burst rendered (gateway/kit/render_once.py), so the readers after
the first get them for one identity check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway.core import events as ev
from gateway.core.slash import HELP_LINES
from gateway.core.timefmt import ban_end

__all__ = ["clock", "error", "message", "messages", "notice", "render"]

CRLF = b"\r\n"

_hms_cache: dict[int, str] = {}
#: Seconds rendered as HH:MM:SS kept at once (one entry per second of message time).
_HMS_CACHE_SIZE = 4096


def clock(ms: int) -> str:
    """`HH:MM:SS` in the gateway's local time zone (set TZ to change it)."""
    sec = ms // 1000
    hms = _hms_cache.get(sec)
    if hms is None:
        if len(_hms_cache) > _HMS_CACHE_SIZE:
            _hms_cache.clear()
        hms = _hms_cache[sec] = time.strftime("%H:%M:%S", time.localtime(sec))
    return hms


def message(ms: int, where: str, nick: str, text: str) -> bytes:
    return f"[{clock(ms)}] {where} <{nick}> {text}\r\n".encode()


def notice(text: str) -> bytes:
    return f"* {text}\r\n".encode()


def error(text: str) -> bytes:
    return f"! {text}\r\n".encode()


def messages(event: ev.Messages) -> bytes:
    where = event.where
    prefix = ("#" if isinstance(where, ev.ChatConv) else "@") + where.name
    # m.pos.ms, not the m.ms property: no Python call per message
    return b"".join(message(m.pos.ms, prefix, m.sender, m.text) for m in event.items)


def _chat_list(e: ev.ChatList) -> bytes:
    listing = ", ".join(
        f"#{c.name} ({c.members} member{'s' if c.members != 1 else ''}, "
        f"{c.online}{'+' if c.capped else ''} online)"
        for c in e.chats
    )
    more = f" and {e.total - len(e.chats)} more" if e.total > len(e.chats) else ""
    return notice(f"chats: {listing}{more}" if listing else "chats: none")


def _backlog_cut(e: ev.BacklogCut) -> bytes:
    if isinstance(e.where, ev.ChatConv):
        where, hint = f"#{e.where.name}", "; /history shows the latest"
    else:
        where, hint = f"@{e.where.name}", ""
    return notice(
        f"older unread messages in {where} were not shown (a login shows the newest "
        f"{e.shown}){hint}"
    )


def _online(e: ev.Online) -> bytes:
    if e.capped:  # counted up to the bound only
        total, more = f"{e.total}+", " and more"
    else:
        total = str(e.total)
        more = f" and {e.total - len(e.names)} more" if e.total > len(e.names) else ""
    return notice(f"online in #{e.chat} ({total}): {', '.join(e.names)}{more}")


def _period(seconds: int) -> str:
    """A token's lifetime in the largest whole unit: `30 days`, `2 hours`, `90 seconds`."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def _complained(e: ev.Complained) -> bytes:
    text = f"complaint about {e.target} recorded ({e.count}/{e.threshold})"
    if e.banned_until_ms is not None:
        text += f": {e.target} is banned until {ban_end(e.banned_until_ms)}"
    return notice(text)


_RENDER: dict[type, Callable[[Any], bytes]] = {
    ev.Messages: messages,
    ev.Error: lambda e: error(e.text),
    ev.AskNick: lambda e: notice(
        "Welcome to chat. Enter your nickname:" if e.first else "Enter your nickname:"
    ),
    ev.AskPassword: lambda e: notice(
        f"New nickname {e.nick}. Choose a password:" if e.new else f"Password for {e.nick}:"
    ),
    ev.Ready: lambda e: notice(
        f"ready: logged in as {e.nick}, current chat #{e.chat} (/help for commands)"
    ),
    ev.Joined: lambda e: notice(f"you are in #{e.chat}" if e.already else f"joined #{e.chat}"),
    ev.Left: lambda e: notice(f"left #{e.chat}"),
    ev.CurrentChat: lambda e: notice(f"current chat is now #{e.chat}"),
    ev.ChatList: _chat_list,
    ev.Online: _online,
    ev.BacklogCut: _backlog_cut,
    ev.NoHistory: lambda e: notice(
        f"no messages with {e.chat} in the last {e.seconds} s"
        if e.private
        else f"no messages in #{e.chat} in the last {e.seconds} s"
    ),
    ev.Complained: _complained,
    ev.Banned: lambda e: notice(
        f"you are banned until {ban_end(e.until_ms)}"
        + {True: " by a moderator", False: " after complaints from other users", None: ""}[
            e.by_moderator
        ]
        + ": you can read but not send"
    ),
    ev.BanPlaced: lambda e: notice(f"{e.target} is banned until {ban_end(e.until_ms)}"),
    ev.Unbanned: lambda e: notice(
        f"{e.target} is no longer banned" if e.was_banned else f"{e.target} is not banned"
    ),
    ev.KickSent: lambda e: notice(f"{e.target} was disconnected (every session)"),
    ev.Kicked: lambda e: error("you were disconnected by a moderator"),
    ev.BanLifted: lambda e: notice("your ban was lifted: you can send again"),
    ev.WhereNow: lambda e: notice(
        f"current chat is #{e.chat} (you are in {', '.join('#' + c for c in e.chats)})"
    ),
    ev.HelpWanted: lambda e: b"".join(notice(line) for line in HELP_LINES),
    ev.TokenIssued: lambda e: notice(
        f"token: {e.token} (valid for {_period(e.seconds)}; /logout revokes it)"
    ),
    ev.PasswordChanged: lambda e: notice("password changed"),
    ev.Bye: lambda e: notice("bye"),
    ev.ShuttingDown: lambda e: notice("server shutting down"),
    ev.StoreReset: lambda e: notice("the chat store was reset; recent history may be missing"),
    # Asked for by range only on IRC (CHATHISTORY, MARKREAD): nothing on this door, where
    # another device's read marker is not shown either.
    ev.HistoryPage: lambda e: b"",
    ev.Targets: lambda e: b"",
    ev.ReadMarker: lambda e: b"",
    # other users' typing notices and reactions, comings and goings: not shown on telnet
    # (/who says who is online; a line per join would drown a busy chat)
    ev.Tagged: lambda e: b"",
    ev.MemberCame: lambda e: b"",
    ev.MemberParted: lambda e: b"",
    ev.MemberQuit: lambda e: b"",
}


def render(event: ev.Event) -> bytes:
    """The bytes of any core event."""
    return _RENDER[type(event)](event)
