"""The IRC commands this door takes: a table (`COMMANDS`) of handler, minimum parameters
and whether a command is usable before registration, and the handlers.

A handler is a generator: it writes lines through the codec and yields the core commands
(or kit instructions) it needs, one at a time; the kit runs each before asking for the
next, so a handler reads what the command did (an error counted, a join that happened).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.core import commands as cmd
from gateway.core.names import name_error, name_key, sanitize
from gateway.core.session import Phase
from gateway.core.timefmt import parse_duration
from gateway.doors.irc import history, queries
from gateway.doors.irc import numerics as n
from gateway.doors.irc.protocol import (
    CAPS,
    CHATHISTORY_MAX,
    MAX_LINE,
    SERVER,
    IrcMessage,
    LocalIrcUser,
    client_tags,
    format_line,
    source_of,
)
from gateway.doors.irc.registration import Input, Stage, login, try_register
from gateway.kit.codec import CLOSE, Step
from store.contract import Kind

if TYPE_CHECKING:
    from gateway.doors.irc.codec import IrcCodec

__all__ = ["COMMANDS", "Entry", "chat_text", "plain_post", "welcome"]

Handler = Callable[["IrcCodec", IrcMessage], Iterator[Step]]
#: Targets one PRIVMSG, JOIN, PART or NAMES takes at most.
MAX_TARGETS = 10
#: Characters of a PART or QUIT message told to others at most.
MAX_REASON = 300
MOTD = (
    "Welcome to the chat gateway's IRC door.",
    "Chats are channels; #general is joined for you. /quote COMPLAIN <nick> complains",
    "about a user (as /ban on telnet). /quote TOKEN gives a resume token for SASL/PASS.",
    "Messages are kept for a limited time; unread ones are replayed when you connect.",
)
ISUPPORT = (
    "CASEMAPPING=rfc8265",
    "CHANTYPES=#",
    "PREFIX=",
    "NETWORK=chat",
    "NICKLEN=32",
    "CHANNELLEN=33",
    "UTF8ONLY",
    "WHOX",
    f"CHATHISTORY={CHATHISTORY_MAX}",
    "MSGREFTYPES=msgid,timestamp",
)


@dataclass(frozen=True, slots=True)
class Entry:
    handler: Handler
    min_params: int = 0
    before_registration: bool = False


def chat_text(text: str) -> str:
    """A PRIVMSG's text as a chat message: CTCP ACTION as `* text`, other CTCP dropped."""
    if text.startswith("\x01"):
        body = text.strip("\x01")
        if not body.upper().startswith("ACTION "):
            return ""  # other CTCP requests have no meaning here
        text = "* " + body[7:]
    return sanitize(text).strip()


def plain_post(msg: IrcMessage, chat: str) -> bool:
    """Whether `msg` is a plain PRIVMSG to `chat` alone, postable with the one before."""
    return (
        msg.command == "PRIVMSG"
        and not msg.tags
        and len(msg.params) == 2
        and msg.params[0].startswith("#")
        and name_key(msg.params[0][1:]) == name_key(chat)
    )


# -- registration ---------------------------------------------------------------------


def _cap(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    sub = msg.params[0].upper()
    nick = c.nick or c.reg.nick or "*"
    if sub in ("LS", "REQ") and c.reg.allows(Input.CAP):
        c.reg.on(Input.CAP)
    if sub == "LS":
        v302 = len(msg.params) > 1 and msg.params[1].isdigit() and int(msg.params[1]) >= 302
        caps = " ".join(f"{k}={v}" if v and v302 else k for k, v in CAPS.items())
        c.line(format_line("CAP", nick, "LS", caps))
    elif sub == "LIST":
        c.line(format_line("CAP", nick, "LIST", " ".join(sorted(c.caps))))
    elif sub == "REQ":
        asked = msg.params[1].split() if len(msg.params) > 1 else []
        if asked and all(a.removeprefix("-") in CAPS for a in asked):
            now = set(c.caps)
            for a in asked:
                if a.startswith("-"):
                    now.discard(a[1:])
                else:
                    now.add(a)
            c.set_caps(now)
            c.line(format_line("CAP", nick, "ACK", " ".join(asked)))
        else:
            c.line(format_line("CAP", nick, "NAK", " ".join(asked)))
    elif sub == "END":
        if c.reg.allows(Input.CAP_END):
            c.reg.on(Input.CAP_END)
            yield from try_register(c)
    else:
        c.numeric(n.ERR_INVALIDCAPCMD, sub, "Invalid CAP command")


def _pass(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    if c.reg.registered:
        c.numeric(n.ERR_ALREADYREGISTRED, "You may not reregister")
    else:
        c.reg.password = msg.params[0]
    yield from ()


def _nick(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    wanted = msg.params[0] if msg.params else ""
    if not wanted:
        c.numeric(n.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    if c.reg.registered:
        if name_key(wanted) != c.key:
            c.numeric(n.ERR_ERRONEUSNICKNAME, wanted, "nickname changes are not supported here")
        return
    c.reg.nick = wanted
    yield from try_register(c)


def _user(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    if c.reg.registered:
        c.numeric(n.ERR_ALREADYREGISTRED, "You may not reregister")
        return
    if not msg.params[0] or not msg.params[3]:
        c.numeric(n.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
        return
    c.reg.username = sanitize(msg.params[0])[:16] or "user"
    c.reg.realname = sanitize(msg.params[3])[:64]
    c.reg.user_given = True
    yield from try_register(c)


def _authenticate(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    arg = msg.params[0]
    reg = c.reg
    if reg.registered or c.at(Phase.READY):
        c.numeric(n.ERR_SASLALREADY, "You have already authenticated using SASL")
        return
    if reg.stage is not Stage.SASL:
        if arg.upper() != "PLAIN" or not reg.allows(Input.SASL_START):
            c.numeric(n.RPL_SASLMECHS, "PLAIN", "are available SASL mechanisms")
            c.numeric(n.ERR_SASLFAIL, "SASL authentication failed")
            return
        reg.on(Input.SASL_START)
        c.line(format_line("AUTHENTICATE", "+", source=""))
        return
    reg.on(Input.SASL_DONE)
    if arg == "*":
        c.numeric(n.ERR_SASLABORTED, "SASL authentication aborted")
        return
    try:
        _, authcid, password = base64.b64decode(arg, validate=True).decode().split("\0")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        c.numeric(n.ERR_SASLFAIL, "SASL authentication failed")
        return
    yield from login(c, authcid, password)
    if c.at(Phase.READY):
        c.numeric(n.RPL_LOGGEDIN, source_of(c.nick), c.nick, f"You are now logged in as {c.nick}")
        c.numeric(n.RPL_SASLSUCCESS, "SASL authentication successful")
    elif not c.at(Phase.CLOSED):
        c.numeric(n.ERR_SASLFAIL, reg.failure())


def welcome(c: IrcCodec) -> Iterator[Step]:
    """001 to 005, the MOTD, a JOIN and NAMES per chat, then the backlog and whatever
    came meanwhile, in order; then live."""
    nick = c.nick
    c.shared.users[c.key] = _who_info(c)
    c.numeric(n.RPL_WELCOME, f"Welcome to the chat, {source_of(nick)}")
    c.numeric(n.RPL_YOURHOST, f"Your host is {SERVER}, a chat gateway")
    c.numeric(n.RPL_CREATED, f"This server keeps its state in {c.shared.store}")
    c.numeric(n.RPL_MYINFO, SERVER, "chat-gateway", "i", "nt")
    c.numeric(n.RPL_ISUPPORT, *ISUPPORT, "are supported by this server")
    _motd(c)
    for name in c.chats:
        c.line(format_line("JOIN", "#" + name, source=source_of(nick)))
    for name in c.chats:
        c.names_mode = "names"
        yield cmd.Who(name)
    c.release()
    if "draft/read-marker" in c.caps:
        for name in c.chats:
            yield cmd.MarkRead("#" + name)


def _who_info(c: IrcCodec) -> LocalIrcUser:
    return LocalIrcUser(c.reg.username or c.nick, c.reg.realname or c.nick, c.away)


def _motd(c: IrcCodec) -> None:
    c.numeric(n.RPL_MOTDSTART, f"- {SERVER} Message of the day -")
    for text in MOTD:
        c.numeric(n.RPL_MOTD, "- " + text)
    c.numeric(n.RPL_ENDOFMOTD, "End of /MOTD command.")


# -- after registration ---------------------------------------------------------------


def _ping(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    if not msg.params or not msg.params[0]:
        c.numeric(n.ERR_NEEDMOREPARAMS, "PING", "Not enough parameters")
        return
    pong = format_line("PONG", SERVER, msg.params[0])
    if c.awaiting() and c.reg.registered and ("echo-message" in c.caps or _awaits_note_to_self(c)):
        c.deferred = pong  # after the echo of what was just sent, or its delivery
    else:
        c.line(pong)
    yield from ()


def _awaits_note_to_self(c: IrcCodec) -> bool:
    """Whether a note to oneself is on its way back: it is delivered to this connection
    even without echo-message, and an IRC server delivers it before it reads the next
    line, so a client that syncs with PING sees it before the PONG."""
    return any(target == c.key for target, _ in c.pending)


def _nothing(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    yield from ()


def _quit(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    c.reg.on(Input.QUIT)
    said = sanitize(msg.params[0])[:MAX_REASON] if msg.params else ""
    c.line(format_line("ERROR", f"Closing link: {said or 'Client quit'}", source=""))
    c.quitting = True
    yield cmd.Quit("Quit: " + said if said else "Client quit")
    yield CLOSE


def _privmsg(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    if not msg.params or not msg.params[0]:
        c.numeric(n.ERR_NORECIPIENT, f"No recipient given ({msg.command})")
        return
    if len(msg.params) < 2 or not msg.params[1]:
        c.numeric(n.ERR_NOTEXTTOSEND, "No text to send")
        return
    text = chat_text(msg.params[1])
    if not text:
        if not msg.params[1].startswith("\x01"):
            c.numeric(n.ERR_NOTEXTTOSEND, "No text to send")
        return
    kind = Kind.NOTICE if msg.command == "NOTICE" else Kind.MESSAGE
    tags = client_tags(msg.tags)
    for target in msg.params[0].split(",")[:MAX_TARGETS]:
        c.target = target
        chat = target.startswith("#")
        relayed = f":{source_of(c.nick)} {msg.command} {target} :{text}\r\n"
        if len(relayed.encode()) > MAX_LINE:  # it would reach others cut in two
            c.numeric(n.ERR_INPUTTOOLONG, "Input line was too long")
            continue
        key = "#" + name_key(target[1:]) if chat else name_key(target)
        c.batched = [text]
        c.expect_echo(key, text)
        errors = c.errors
        if chat:
            yield cmd.SendChat(target[1:], text, kind, tags)
        else:
            yield cmd.SendPrivate(target, text, kind, tags, to_self=True)
        refused = c.errors - errors
        if refused:  # refused ones (the last, as a rate limit does): no echo
            for t in c.batched[len(c.batched) - refused :]:
                if (key, t) in c.pending:
                    c.pending.remove((key, t))
            c.recache()
    c.batched = []


def _tagmsg(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    """Client tags without a message (typing, reactions): to those who asked for
    message-tags, never stored; with echo-message the sender gets its copy."""
    if not msg.params or not msg.params[0]:
        c.numeric(n.ERR_NORECIPIENT, "No recipient given (TAGMSG)")
        return
    tags = client_tags(msg.tags)
    for target in msg.params[0].split(",")[:MAX_TARGETS]:
        c.target = target
        chat = target.startswith("#")
        if not tags:
            continue  # nothing for anyone
        key = "#" + name_key(target[1:]) if chat else name_key(target)
        c.expect_tags(key, tags)
        errors = c.errors
        yield cmd.SendTags(target[1:] if chat else target, tags, private=not chat)
        if c.errors != errors:
            c.drop_tags(key, tags)


def _join(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    """JOIN: the JOIN, NAMES, then the history (held until after NAMES). A channel this
    connection has shown already (at the welcome, by an earlier JOIN, or joined on
    another device) is ignored, as IRC servers do: irssi rejoins its channels after the
    welcome has joined them, and a replayed history would be new lines to it. Whether
    this connection has shown it counts, not the user's membership: another device that
    has not shown a chat yet still gets its JOIN, NAMES and history."""
    if msg.params[0] == "0":
        return
    for target in msg.params[0].split(",")[:MAX_TARGETS]:
        c.target = target
        if not target.startswith("#") or len(target) < 2:
            c.numeric(n.ERR_NOSUCHCHANNEL, target, "No such channel")
            continue
        if name_key(target[1:]) in c.member_of():
            continue  # shown here already: nothing (no JOIN, NAMES nor history again)
        errors = c.errors
        c.hold()
        yield cmd.Join(target[1:])
        if c.errors != errors:
            c.release()
            continue
        if "draft/read-marker" in c.caps:
            yield cmd.MarkRead(target)
        c.names_mode = "names"
        yield cmd.Who(target[1:])
        c.release()


def _part(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    c.part_reason = sanitize(msg.params[1])[:MAX_REASON] if len(msg.params) > 1 else ""
    for target in msg.params[0].split(",")[:MAX_TARGETS]:
        c.target = target
        if not target.startswith("#"):
            c.numeric(n.ERR_NOSUCHCHANNEL, target, "No such channel")
            continue
        yield cmd.Leave(target[1:], c.part_reason)
    c.part_reason = ""


def _list(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    yield cmd.GetChats()


def _motd_cmd(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    _motd(c)
    yield from ()


def _complain(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    duration = None
    if len(msg.params) > 1:  # a moderator's ban for a set time: COMPLAIN nick 2h
        duration = parse_duration(msg.params[1])
        if duration is None:
            c.notice("COMPLAIN nick [duration: 90s, 30m, 2h, 7d]")
            return
    yield cmd.Ban(msg.params[0], duration)


def _unban(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    yield cmd.Unban(msg.params[0])


def _kick(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    """KICK #chan nick[,nick] [:reason]: the chat's moderator kick, which disconnects every
    session of the user on every gateway (not only from that channel: chats have no
    operators of their own). Errors are a server's: 403 for a name that cannot be a
    channel, 442 for one this connection is not on, 401 for an unknown nickname and 482
    for a user who is not a moderator. The reason is not passed on."""
    channel = msg.params[0]
    nicks = [x for x in msg.params[1].split(",") if x][:MAX_TARGETS]
    if not nicks:
        c.numeric(n.ERR_NEEDMOREPARAMS, "KICK", "Not enough parameters")
        return
    if not channel.startswith("#") or name_error(channel[1:]) is not None:
        c.numeric(n.ERR_NOSUCHCHANNEL, channel, "No such channel")
        return
    if name_key(channel[1:]) not in c.member_of():
        c.numeric(n.ERR_NOTONCHANNEL, channel, "You're not on that channel")
        return
    for nick in nicks:
        c.target = nick  # what a 401 names
        if name_key(nick) == c.key:
            c.notice("you cannot kick yourself (/quit)")
            continue
        c.kick_channel = channel  # what a 482 names
        yield cmd.Kick(nick)
    c.kick_channel = ""


def _help(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    yield cmd.Help()


def _token(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    yield cmd.IssueToken()


E = Entry
COMMANDS: dict[str, Entry] = {
    "CAP": E(_cap, 1, True),
    "PASS": E(_pass, 1, True),
    "NICK": E(_nick, 0, True),
    "USER": E(_user, 4, True),
    "AUTHENTICATE": E(_authenticate, 1, True),
    "PING": E(_ping, 0, True),
    "PONG": E(_nothing, 0, True),
    "QUIT": E(_quit, 0, True),
    "PRIVMSG": E(_privmsg),
    "NOTICE": E(_privmsg),
    "TAGMSG": E(_tagmsg),
    "JOIN": E(_join, 1),
    "PART": E(_part, 1),
    "LIST": E(_list),
    "NAMES": E(queries.names),
    "WHO": E(queries.who),
    "WHOIS": E(queries.whois, 1),
    "MOTD": E(_motd_cmd),
    "AWAY": E(queries.away),
    "ISON": E(queries.ison, 1),
    "USERHOST": E(queries.userhost, 1),
    "TOPIC": E(queries.topic, 1),
    "MODE": E(queries.mode, 1),
    "COMPLAIN": E(_complain, 1),
    "UNBAN": E(_unban, 1),
    "KICK": E(_kick, 2),
    "HELP": E(_help),
    "TOKEN": E(_token),
    "CHATHISTORY": E(history.chathistory, 1),
    "MARKREAD": E(history.markread),
}
