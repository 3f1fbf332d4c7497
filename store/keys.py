"""Every Redis key and channel name, in one place. See docs/REDIS.md for each one.

Names are case-folded keys from `gateway.core.names.name_key`; they contain only letters,
digits, `_-.`, so `:` and `|` are safe separators.
"""

from __future__ import annotations

from functools import lru_cache

from store.contract import GENERAL, Conv, Position

__all__ = [
    "CHAT_CHANNEL",
    "GENERAL",
    "PREFIX",
    "USER_CHANNEL",
    "address_connections",
    "address_fails",
    "audit",
    "ban",
    "bans",
    "channel_name",
    "chat",
    "chat_channel",
    "chat_conv",
    "chat_looks",
    "chat_sizes",
    "chats",
    "complaint_addresses",
    "complaints",
    "complaints_by",
    "conv_id",
    "conv_stream",
    "creations",
    "cursors",
    "dm_conv",
    "epoch",
    "gateway_alive",
    "gateway_online",
    "gateways",
    "held_addresses",
    "held_reasons",
    "known_addresses",
    "login_fails",
    "members",
    "moderators",
    "nick_fails",
    "own_keys",
    "position",
    "rate",
    "registrations",
    "seen",
    "skeleton",
    "stream",
    "stream_id",
    "tokens",
    "user",
    "user_addresses",
    "user_channel",
    "user_chats",
    "user_peers",
]

PREFIX = "chat:"

# Hash tags (the part in braces picks a Redis Cluster slot): everything of one user shares
# the slot of `{u:<user>}`, everything of one conversation the slot of its id (`{c:<chat>}`
# or `{p:<a>|<b>}`), and the few keys shared by all (chat list, last seen, bans, gateways)
# the slot of `{g}`. A script touches the keys of one slot only (see docs/REDIS.md).


def _user(u: str) -> str:
    return f"{PREFIX}{{u:{u}}}"


def _conv(conv: str) -> str:
    return f"{PREFIX}{{{conv}}}"


_GLOBAL = f"{PREFIX}{{g}}"


def user(u: str) -> str:
    return _user(u)


def user_chats(u: str) -> str:
    return f"{_user(u)}:chats"


def user_peers(u: str) -> str:
    return f"{_user(u)}:peers"


def cursors(u: str) -> str:
    return f"{_user(u)}:cursor"


def tokens(u: str) -> str:
    """The user's resume tokens: sha256 of each token -> when it expires (unix ms)."""
    return f"{_user(u)}:tokens"


def creations(u: str) -> str:
    """Chats the user created in the current hour."""
    return f"{_user(u)}:creations"


def complaints(u: str) -> str:
    return f"{_user(u)}:complaints"


def complaint_addresses(u: str) -> str:
    """Complaints about user u counted per complainer address, for one ban period."""
    return f"{_user(u)}:complaints:addr"


def complaints_by(u: str) -> str:
    """The complaints user u made in the last hour (target channel -> ms)."""
    return f"{_user(u)}:complained"


def user_addresses(u: str) -> str:
    """The addresses user u last logged in from (address -> ms), held back on a ban."""
    return f"{_user(u)}:addrs"


def known_addresses(u: str) -> str:
    """Addresses user u logged in from (address -> ms of the last login there)."""
    return f"{_user(u)}:known"


def login_fails(u: str, address: str) -> str:
    """Login attempts at user u from one address (IPv6: its /64) not yet forgiven."""
    return f"{_user(u)}:fails:{address}"


def nick_fails(u: str) -> str:
    """Login attempts at user u from addresses u never logged in from."""
    return f"{_user(u)}:fails"


def ban(u: str) -> str:
    return f"{_user(u)}:ban"


def rate(u: str) -> str:
    return f"{_user(u)}:rate"


#: Senders whose ban and rate key names stay cached (`sender_keys`); about 300 bytes
#: each, so at most about 20 MB.
KEY_CACHE_USERS = 65536


@lru_cache(maxsize=KEY_CACHE_USERS)
def sender_keys(u: str) -> tuple[str, str]:
    """User u's ban and rate keys, which every message u sends names: cached, unlike
    `ban` and `rate`, so that only senders hold an entry (a login also names the ban
    key, and caching it there cost every idle user about 200 bytes)."""
    return ban(u), rate(u)


def own_keys(u: str) -> list[str]:
    """Every key of user u's own (all in u's slot), the account hash and the user's chats
    first: what forgetting the account deletes. (Per-address login counters are left to
    expire: they are keyed by address too and cannot be listed without a scan.)"""
    return [
        user(u),
        user_chats(u),
        user_peers(u),
        cursors(u),
        ban(u),
        rate(u),
        complaints(u),
        complaint_addresses(u),
        complaints_by(u),
        tokens(u),
        user_addresses(u),
        known_addresses(u),
        creations(u),
        nick_fails(u),
    ]


def chat_conv(c: str) -> str:
    """The conversation id of a chat (`str(Conv.of_chat(c))`): a cursor field, the hash
    tag of its keys, the `conv` field of its payload records."""
    return f"c:{c}"


def dm_conv(a: str, b: str) -> str:
    """The conversation id of the private conversation between users a and b."""
    return f"p:{a}|{b}" if a <= b else f"p:{b}|{a}"


def conv_id(conv: Conv) -> str:
    return str(conv)


def stream_id(pos: Position) -> str:
    """A position as the id of its stream entry ("<ms>-<seq>")."""
    return f"{pos[0]}-{pos[1]}"


def position(stream_id: str) -> Position:
    """The position of a stream entry's id (raises ValueError for anything else)."""
    ms, _, seq = stream_id.partition("-")
    return Position(int(ms), int(seq))


def chat(c: str) -> str:
    return _conv(chat_conv(c))


def members(c: str) -> str:
    return f"{_conv(chat_conv(c))}:members"


def conv_stream(conv: Conv | str) -> str:
    """A conversation's stream (`conv`: a Conv, or its id)."""
    return f"{_conv(str(conv))}:msgs"


def stream(c: str) -> str:
    return conv_stream(chat_conv(c))


def chats() -> str:
    """Obsolete: the set of active chats, replaced by `chat_sizes`."""
    return f"{_GLOBAL}:chats"


def chat_sizes() -> str:
    """Every existing chat, scored by its member count (join/leave/register keep it)."""
    return f"{_GLOBAL}:chatsizes"


def chat_looks() -> str:
    """A chat name's look (its confusable skeleton, as typed at the chat's creation) ->
    the chat's key, so that a new chat cannot look like a live one (`join` checks the
    holder against `chat_sizes`). Entries of emptied chats are pruned a few at random at
    each creation, or replaced when their look is created again."""
    return f"{_GLOBAL}:chatlooks"


def registrations(address: str) -> str:
    """Accounts registered from one address in the current hour."""
    return f"{_GLOBAL}:regs:{address}"


def seen() -> str:
    """Every account, scored by when it last logged in or was online (ms)."""
    return f"{_GLOBAL}:seen"


def epoch() -> str:
    """The store's epoch: a random id set once; a change means Redis lost its data."""
    return f"{_GLOBAL}:epoch"


def held_addresses() -> str:
    """Addresses that may not register new accounts (address -> ms the hold ends)."""
    return f"{_GLOBAL}:held"


def held_reasons() -> str:
    """Why each address is held: `address|user` -> ms the hold for that user's ban ends
    (an address may be held for several banned users; it is free when none is left)."""
    return f"{_GLOBAL}:held:by"


def skeleton(s: str) -> str:
    """The user key holding a nickname skeleton: one user per look."""
    return f"{_GLOBAL}:skel:{s}"


def address_fails(address: str) -> str:
    """The nicknames whose logins failed from one address (nickname -> ms of the last)."""
    return f"{_GLOBAL}:fails:{address}"


def bans() -> str:
    """Every banned user, scored by when the ban ends (ms): `admin bans` reads it."""
    return f"{_GLOBAL}:bans"


def moderators() -> str:
    """The users whose /ban, /unban and /kick act at once (set of user keys)."""
    return f"{_GLOBAL}:mods"


def audit() -> str:
    """The audit trail: a capped stream of complaints, bans, kicks and admin actions."""
    return f"{_GLOBAL}:audit"


def gateways() -> str:
    return f"{_GLOBAL}:gateways"


def address_connections(address: str) -> str:
    """Connections from one address, per gateway (for --max-per-ip over all gateways)."""
    return f"{_GLOBAL}:addr:{address}:conns"


def gateway_alive(gw: str) -> str:
    return f"{_GLOBAL}:gw:{gw}:alive"


def gateway_online(gw: str) -> str:
    return f"{_GLOBAL}:gw:{gw}:online"


def gateway_online_next(gw: str) -> str:
    """Where a gateway builds its online set anew before renaming it into place."""
    return f"{_GLOBAL}:gw:{gw}:online:next"


def chat_channel(c: str) -> str:
    """A chat's channel: in the chat's slot, so post_many publishes where it writes."""
    return f"{PREFIX}ch:{{{chat_conv(c)}}}"


def user_channel(u: str) -> str:
    return f"{PREFIX}ch:{{u:{u}}}"


CHAT_CHANNEL = chat_channel("").removesuffix("}").encode()
USER_CHANNEL = user_channel("").removesuffix("}").encode()


def channel_name(channel: bytes, prefix: bytes) -> str:
    """The chat or user key of a channel that starts with `prefix` (CHAT_/USER_CHANNEL)."""
    return channel[len(prefix) : -1].decode()
