"""Core events -> IRC lines, one renderer per event type (`RENDER`).

Every event of the core has an entry: one that shows nothing on IRC says so with
`_nothing` (tests/test_doors_cover_events.py fails for a missing one). A renderer writes
through the codec (`IrcCodec.line`), which puts the lines of a labeled command into its
`labeled-response` batch; how an error reads depends on the IRC command that caused it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gateway.core import events as ev
from gateway.core.names import name_key
from gateway.core.session import Phase
from gateway.core.timefmt import ban_end
from gateway.doors.irc import numerics as n
from gateway.doors.irc import protocol as irc
from gateway.doors.irc.protocol import SERVER, format_line, source_of
from gateway.doors.irc.queries import mask_matches
from store.contract import Message

if TYPE_CHECKING:
    from gateway.doors.irc.codec import IrcCodec

__all__ = ["HELP", "RENDER", "history_batch", "labeled"]

#: What HELP answers (as NOTICEs): the commands that are this server's own.
HELP = (
    "Chats are channels: /join #name, /part #name, /list; /msg nick text is private.",
    "/quote COMPLAIN nick: complain about a user (moderators: COMPLAIN nick 2h bans).",
    "/quote UNBAN nick: a moderator lifts a ban.",
    "/kick #chan nick: a moderator disconnects nick everywhere (every session, every chat).",
    "/quote TOKEN: a resume token, usable as the server or SASL password.",
    "History: CHATHISTORY (IRCv3); unread messages are replayed when you connect.",
)
#: Names per 353 line.
NAMES_PER_LINE = 20
_batch_ids = itertools.count(1)
#: Events kept in order with the backlog while a connection registers.
_HELD = (ev.BacklogCut, ev.Banned, ev.StoreReset, ev.Joined, ev.Left)


def _target_name(where: ev.Conversation) -> str:
    return "#" + where.name if isinstance(where, ev.ChatConv) else where.name


def history_batch(c: IrcCodec, where: ev.Conversation, items: Iterable[Message]) -> None:
    """Messages in a `chathistory` batch (with `batch`), else plain lines."""
    batch = "batch" in c.caps
    ref = f"H{next(_batch_ids)}"
    target = _target_name(where)
    if isinstance(where, ev.PrivateConv) and c.history_target:
        target = c.history_target
    if batch:
        c.line(format_line("BATCH", "+" + ref, "chathistory", target))
    extra = {"batch": ref} if batch else None
    for text in irc.message_lines(where, items, c.nick, c.wants, extra):
        c.line(text)
    if batch:
        c.line(format_line("BATCH", "-" + ref))


def _with_tags(line: str, tags: dict[str, str]) -> str:
    add = ";".join(f"{k}={irc.escape_tag(v)}" for k, v in tags.items())
    if line.startswith("@"):
        return "@" + add + ";" + line[1:]
    return "@" + add + " " + line


def labeled(c: IrcCodec, label: str, lines: list[str]) -> None:
    """A labeled command's replies: an ACK (none), the label on the one line, or a
    `labeled-response` batch."""
    if not lines:
        c.line(format_line("ACK", tags={"label": label}))
    elif len(lines) == 1:
        c.line(_with_tags(lines[0], {"label": label}))
    else:
        ref = f"L{next(_batch_ids)}"
        c.line(format_line("BATCH", "+" + ref, "labeled-response", tags={"label": label}))
        for line in lines:  # lines inside a nested batch keep only their own tag
            nested = line.startswith("@") and "batch=" in line.split(" ", 1)[0]
            c.line(line if nested else _with_tags(line, {"batch": ref}))
        c.line(format_line("BATCH", "-" + ref))


# -- renderers --------------------------------------------------------------------------


def _nothing(c: IrcCodec, e: Any) -> None:
    """Nothing to show on IRC (the door's own numerics say it)."""


def _messages(c: IrcCodec, e: ev.Messages) -> None:
    if c.holding():
        c.keep(e)
    else:
        c.message_lines(e)


def _ask_nick(c: IrcCodec, e: ev.AskNick) -> None:
    c.phase = Phase.NICK


def _ask_password(c: IrcCodec, e: ev.AskPassword) -> None:
    c.phase = Phase.PASSWORD


def _ready(c: IrcCodec, e: ev.Ready) -> None:
    c.phase = Phase.READY
    c.nick = e.nick
    c.key = name_key(e.nick)
    c.chats = e.chats or (e.chat,)
    c.chat_keys = {name_key(x) for x in c.chats}


def _joined(c: IrcCodec, e: ev.Joined) -> None:
    """A JOIN unless this connection has shown the chat already (`e.already` is the
    user's membership, which another device may have made: this one still shows it)."""
    key = name_key(e.chat)
    if key in c.chat_keys:
        return
    c.chat_keys.add(key)
    c.line(format_line("JOIN", "#" + e.chat, source=source_of(c.nick)))


def _left(c: IrcCodec, e: ev.Left) -> None:
    c.chat_keys.discard(name_key(e.chat))
    reason = c.part_reason
    params = ("#" + e.chat, reason) if reason else ("#" + e.chat,)
    c.line(format_line("PART", *params, source=source_of(c.nick)))


def _chat_list(c: IrcCodec, e: ev.ChatList) -> None:
    c.numeric(n.RPL_LISTSTART, "Channel", "Users  Name")
    for chat in e.chats:
        c.numeric(n.RPL_LIST, "#" + chat.name, str(chat.members), f"{chat.online} online")
    c.numeric(n.RPL_LISTEND, "End of /LIST")


def _who_line(c: IrcCodec, channel: str, nick: str) -> None:
    info = c.shared.users.get(name_key(nick))
    user, real = (info.username, info.realname) if info else (nick, nick)
    flags = "G" if info is not None and info.away else "H"
    if not c.whox:
        c.numeric(n.RPL_WHOREPLY, channel, user, SERVER, SERVER, nick, flags, f"0 {real}")
        return
    fields, _, token = c.whox.partition(",")
    values = {
        "t": token,
        "c": channel,
        "u": user,
        "i": "255.255.255.255",
        "h": SERVER,
        "s": SERVER,
        "n": nick,
        "f": flags,
        "d": "0",
        "l": "0",
        "a": nick,
        "o": "n/a",
        "r": real,
    }
    out = [values[f] for f in "tcuihsnfdlaor" if f in fields]
    c.numeric(n.RPL_WHOSPCRPL, *out)


def _online(c: IrcCodec, e: ev.Online) -> None:
    mode = c.names_mode
    c.names_mode = "names"
    if mode == "ison":
        if c.online is not None:
            c.online += e.names
        return
    if mode == "who":
        for name in e.names:
            _who_line(c, "#" + e.chat, name)
        return
    if mode == "who_mask":
        for name in e.names:
            if mask_matches(c.who_mask, name):
                _who_line(c, "*", name)
        return
    names = list(e.names)
    if "userhost-in-names" in c.caps:
        names = [source_of(x) for x in names]
    for i in range(0, len(names), NAMES_PER_LINE):
        c.numeric(n.RPL_NAMREPLY, "=", "#" + e.chat, " ".join(names[i : i + NAMES_PER_LINE]))
    if e.total > len(names):
        c.notice(f"#{e.chat}: {e.total - len(names)} more online not listed")
    c.numeric(n.RPL_ENDOFNAMES, "#" + e.chat, "End of /NAMES list.")


def _error(c: IrcCodec, e: ev.Error) -> None:
    c.errors += 1
    if not c.reg.registered and c.reg.stage.value not in ("closed",):
        c.reg.errors.append(e)
        if e.code in (ev.ErrorCode.LOCKED_OUT, ev.ErrorCode.TIMEOUT):
            c.line(format_line("ERROR", e.text, source=""))
        return
    command, target = c.command, c.target
    code = e.code
    if command == "CHATHISTORY":
        sub = c.history_sub or "*"
        c.fail("CHATHISTORY", "INVALID_TARGET", sub, c.history_target, "no such conversation here")
    elif command == "MARKREAD":
        c.fail("MARKREAD", "INVALID_PARAMS", target, e.text)
    elif code is ev.ErrorCode.RATE_LIMITED and "standard-replies" not in c.caps:
        c.notice(e.text)
    elif code in (ev.ErrorCode.LOCKED_OUT, ev.ErrorCode.OVERFLOW, ev.ErrorCode.TIMEOUT):
        c.line(format_line("ERROR", e.text, source=""))
    elif command == "NOTICE":
        pass  # RFC 1459: no automatic reply to a NOTICE, errors included
    elif command == "KICK" and code is ev.ErrorCode.REFUSED:  # only moderators kick
        c.numeric(n.ERR_CHANOPRIVSNEEDED, c.kick_channel or "*", "You're not channel operator")
    elif code is ev.ErrorCode.BANNED:
        c.numeric(n.ERR_CANNOTSENDTOCHAN, target or "*", e.text)
    elif code is ev.ErrorCode.NO_SUCH_USER:
        c.numeric(n.ERR_NOSUCHNICK, target or "*", e.text)
    elif code is ev.ErrorCode.NOT_MEMBER:
        if command == "PRIVMSG":
            c.numeric(n.ERR_CANNOTSENDTOCHAN, target or "*", e.text)
        else:
            c.numeric(n.ERR_NOTONCHANNEL, target or "*", e.text)
    elif code is ev.ErrorCode.BAD_NAME:
        if target.startswith("#"):
            c.numeric(n.ERR_NOSUCHCHANNEL, target, e.text)
        else:
            c.numeric(n.ERR_NOSUCHNICK, target or "*", e.text)
    elif code is ev.ErrorCode.RATE_LIMITED:
        c.line(format_line("FAIL", command or "*", "RATE_LIMITED", target or "*", e.text))
    else:
        c.notice(e.text)


def _held_or(render: Callable[[IrcCodec, Any], None]) -> Callable[[IrcCodec, Any], None]:
    """`render`, or held with the backlog while the connection registers."""

    def held(c: IrcCodec, e: Any) -> None:
        if not c.reg.registered and c.holding():
            c.keep(e)
        else:
            render(c, e)

    return held


def _backlog_cut(c: IrcCodec, e: ev.BacklogCut) -> None:
    c.notice(
        f"older unread messages in {_target_name(e.where)} were not shown (a login shows "
        f"the newest {e.shown}); CHATHISTORY has them"
    )


def _complained(c: IrcCodec, e: ev.Complained) -> None:
    text = f"complaint about {e.target} recorded ({e.count}/{e.threshold})"
    if e.banned_until_ms is not None:
        text += f": {e.target} is banned until {ban_end(e.banned_until_ms)}"
    c.notice(text)


def _banned(c: IrcCodec, e: ev.Banned) -> None:
    who = {True: " by a moderator", False: " after complaints from other users", None: ""}
    c.notice(
        f"you are banned until {ban_end(e.until_ms)}{who[e.by_moderator]}: "
        "you can read but not send"
    )


def _history_page(c: IrcCodec, e: ev.HistoryPage) -> None:
    history_batch(c, e.where, e.items)


def _targets(c: IrcCodec, e: ev.Targets) -> None:
    batch = "batch" in c.caps
    ref = f"T{next(_batch_ids)}"
    if batch:
        c.line(format_line("BATCH", "+" + ref, "draft/chathistory-targets"))
    tags = {"batch": ref} if batch else None
    for where, ms in e.items:
        c.line(
            format_line("CHATHISTORY", "TARGETS", _target_name(where), irc.iso_time(ms), tags=tags)
        )
    if batch:
        c.line(format_line("BATCH", "-" + ref))


def _read_marker(c: IrcCodec, e: ev.ReadMarker) -> None:
    if e.moved and (not c.reg.registered or "draft/read-marker" not in c.caps):
        return
    target = c.target if c.command in ("MARKREAD", "JOIN") and not e.moved else ""
    stamp = "timestamp=" + irc.iso_time(e.ms) if e.ms is not None else "*"
    c.line(format_line("MARKREAD", target or _target_name(e.where), stamp))


def _tagged(c: IrcCodec, e: ev.Tagged) -> None:
    """A TAGMSG, only for clients that asked for message-tags (the specification); the
    sender's own copy only with echo-message, carrying its label when one waits."""
    if "message-tags" not in c.caps or not c.reg.registered:
        return
    where = e.where
    own = name_key(e.sender) == c.key
    if isinstance(where, ev.ChatConv):
        key, target = "#" + where.key, "#" + where.name
    else:
        key, target = where.peer, where.name if own else c.nick
    mine = own and c.own_tags(key, e.tags)
    if mine and key == c.key:  # to oneself: the echo (labeled), then the delivery
        line = _tagmsg_line(c, e, target)
        if "echo-message" in c.caps:
            c.line(line)
        c.echo_arrived()
        c.line(line, outside=True)  # never a labeled command's reply
        return
    if mine and "echo-message" not in c.caps:
        c.echo_arrived()
        return
    c.line(_tagmsg_line(c, e, target))
    if own:
        c.echo_arrived()


def _tagmsg_line(c: IrcCodec, e: ev.Tagged, target: str) -> str:
    tags = f"time={irc.iso_time(e.ms)};" if c.wants.time else ""
    tags += f"msgid={e.id};"
    if c.wants.account:
        tags += f"account={irc.escape_tag(e.sender)};"
    return f"@{tags}{e.tags} :{source_of(e.sender)} TAGMSG {target}"


def _came(c: IrcCodec, e: ev.MemberCame) -> None:
    if c.reg.registered and name_key(e.chat) in c.chat_keys:
        c.line(format_line("JOIN", "#" + e.chat, source=source_of(e.nick)))


def _parted(c: IrcCodec, e: ev.MemberParted) -> None:
    if c.reg.registered and name_key(e.chat) in c.chat_keys:
        params = ("#" + e.chat, e.reason) if e.reason else ("#" + e.chat,)
        c.line(format_line("PART", *params, source=source_of(e.nick)))


def _quit(c: IrcCodec, e: ev.MemberQuit) -> None:
    if c.reg.registered:
        c.line(format_line("QUIT", e.reason or "Quit", source=source_of(e.nick)))


def _bye(c: IrcCodec, e: ev.Bye) -> None:
    if not c.quitting:  # QUIT said its own ERROR
        c.line(format_line("ERROR", "Closing link: bye", source=""))


def _help(c: IrcCodec, e: ev.HelpWanted) -> None:
    for text in HELP:
        c.notice(text)


def _token(c: IrcCodec, e: ev.TokenIssued) -> None:
    c.notice(
        f"token: {e.token} (valid {e.seconds // 86400} days; use it as the SASL or server password)"
    )


RENDER: dict[type, Callable[[IrcCodec, Any], None]] = {
    ev.Messages: _messages,
    ev.Tagged: _tagged,
    ev.MemberCame: _came,
    ev.MemberParted: _parted,
    ev.MemberQuit: _quit,
    ev.AskNick: _ask_nick,
    ev.AskPassword: _ask_password,
    ev.Ready: _ready,
    ev.Joined: _held_or(_joined),
    ev.Left: _held_or(_left),
    ev.CurrentChat: _nothing,  # IRC has no current chat: every message names its target
    ev.ChatList: _chat_list,
    ev.Online: _online,
    ev.NoHistory: _nothing,  # an empty chathistory batch says it
    ev.BacklogCut: _held_or(_backlog_cut),
    ev.Complained: _complained,
    ev.Banned: _held_or(_banned),
    ev.BanPlaced: lambda c, e: c.notice(f"{e.target} is banned until {ban_end(e.until_ms)}"),
    ev.Unbanned: lambda c, e: c.notice(
        f"{e.target} is {'no longer' if e.was_banned else 'not'} banned"
    ),
    ev.KickSent: lambda c, e: c.notice(f"{e.target} was disconnected (every session)"),
    ev.Kicked: lambda c, e: c.line(
        format_line("ERROR", "you were disconnected by a moderator", source="")
    ),
    ev.BanLifted: lambda c, e: c.notice("your ban was lifted: you can send again"),
    ev.WhereNow: lambda c, e: c.notice("you are in " + ", ".join("#" + x for x in e.chats)),
    ev.HelpWanted: _help,
    ev.TokenIssued: _token,
    ev.PasswordChanged: lambda c, e: c.notice("password changed"),
    ev.Bye: lambda c, e: (
        None if c.quitting else c.line(format_line("ERROR", "Closing link: bye", source=""))
    ),
    ev.ShuttingDown: lambda c, e: c.notice("server shutting down"),
    ev.StoreReset: _held_or(
        lambda c, e: c.notice("the chat store was reset; recent history may be missing")
    ),
    ev.HistoryPage: _history_page,
    ev.Targets: _targets,
    ev.ReadMarker: _read_marker,
    ev.Error: _error,
}
