"""The IRC door's questions about users and chats: NAMES, WHO (with WHOX), WHOIS,
ISON, USERHOST, AWAY, TOPIC and MODE (chats have no topics and fixed modes).

Who is online comes from the core (`Who`: at most 200 names a chat, counted beyond);
a nickname or a mask is looked for among who is online in #general, where every user
is. What WHO and WHOIS say of a user beyond the nickname (user name, real name, away)
is known for IRC users of this gateway only; others show their nickname there.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.core import commands as cmd
from gateway.core.names import name_key
from gateway.doors.irc import numerics as n
from gateway.doors.irc.protocol import SERVER, IrcMessage
from gateway.kit.codec import Step

if TYPE_CHECKING:
    from gateway.doors.irc.codec import IrcCodec

__all__ = [
    "away",
    "ison",
    "mask_matches",
    "mode",
    "names",
    "topic",
    "userhost",
    "who",
    "whois",
]

#: Targets one NAMES takes at most.
MAX_TARGETS = 10
#: Nicknames answered by one ISON or USERHOST.
ISON_MAX = 32


def names(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    if not msg.params:
        c.numeric(n.RPL_ENDOFNAMES, "*", "End of /NAMES list.")
        return
    for target in msg.params[0].split(",")[:MAX_TARGETS]:
        c.target = target
        if not target.startswith("#") or name_key(target[1:]) not in c.member_of():
            c.numeric(n.RPL_ENDOFNAMES, target, "End of /NAMES list.")
            continue
        c.names_mode = "names"
        yield cmd.Who(target[1:])


def who(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    mask = msg.params[0] if msg.params else "*"
    fields = msg.params[1] if len(msg.params) > 1 else ""
    c.whox = fields[1:] if fields.startswith("%") else ""
    c.who_mask = mask
    if mask.startswith("#"):
        if name_key(mask[1:]) in c.member_of():
            c.names_mode = "who"
            yield cmd.Who(mask[1:])
    else:  # a nickname or a mask: among who is online in #general (bounded)
        c.names_mode = "who_mask"
        yield cmd.Who("general")
    c.numeric(n.RPL_ENDOFWHO, mask, "End of WHO list.")
    c.whox = ""


def mask_matches(mask: str, nick: str) -> bool:
    return fnmatch.fnmatchcase(name_key(nick), name_key(mask)) if mask != "*" else True


def whois(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    target = msg.params[-1]
    info = c.shared.users.get(name_key(target))
    user, real = (info.username, info.realname) if info else (target, target)
    c.numeric(n.RPL_WHOISUSER, target, user, SERVER, "*", real)
    c.numeric(n.RPL_WHOISSERVER, target, SERVER, "chat gateway")
    if info is not None and info.away:
        c.numeric(n.RPL_AWAY, target, info.away)
    c.numeric(n.RPL_ENDOFWHOIS, target, "End of /WHOIS list.")
    yield from ()


def away(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    c.away = msg.params[0] if msg.params else ""
    info = c.shared.users.get(c.key)
    if info is not None:
        info.away = c.away
    if c.away:
        c.numeric(n.RPL_NOWAWAY, "You have been marked as being away")
    else:
        c.numeric(n.RPL_UNAWAY, "You are no longer marked as being away")
    yield from ()


def ison(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    asked = " ".join(msg.params).split()[:ISON_MAX]
    c.online = []
    c.names_mode = "ison"
    yield cmd.Who("general")
    online = {name_key(x) for x in c.online or ()}
    c.online = None
    c.numeric(n.RPL_ISON, " ".join(x for x in asked if name_key(x) in online))


def userhost(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    asked = " ".join(msg.params).split()[:5]
    c.numeric(n.RPL_USERHOST, " ".join(f"{x}=+{x}@{SERVER}" for x in asked))
    yield from ()


def topic(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    target = msg.params[0]
    if len(msg.params) > 1:
        c.numeric(n.ERR_CHANOPRIVSNEEDED, target, "Topics are read-only here")
    else:
        c.numeric(n.RPL_NOTOPIC, target, "No topic is set")
    yield from ()


def mode(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    target = msg.params[0]
    if target.startswith("#"):
        if len(msg.params) > 1:
            if msg.params[1].lstrip("+") in ("b", ""):
                c.numeric(n.RPL_BANLIST_END, target, "End of channel ban list")
            else:
                c.numeric(n.ERR_CHANOPRIVSNEEDED, target, "Channel modes are fixed here")
        else:
            c.numeric(n.RPL_CHANNELMODEIS, target, "+nt")
    elif name_key(target) != c.key:
        c.numeric(n.ERR_USERSDONTMATCH, "Cannot change mode for other users")
    elif len(msg.params) > 1:
        # Every user is +i already: irssi and HexChat set it on every connect, and a 501
        # for it was a "Unknown MODE flag" line in every irssi user's status window.
        # Nothing changes, so nothing is said (RFC 2812 answers changes only).
        if not (msg.params[1].startswith("+") and set(msg.params[1]) <= {"+", "i"}):
            c.numeric(n.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
    else:
        c.numeric(n.RPL_UMODEIS, "+i")
    yield from ()
