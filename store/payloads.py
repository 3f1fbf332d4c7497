"""Pub/sub payloads -> typed store events. The Lua scripts write these formats; this is
the only Python that reads them.

A payload is records separated by \\x1e (post_many publishes a burst as one payload), each
record fields separated by \\x1f, the first field its kind:
`M id conv sender where text` a message, `J chat name origin` joined,
`L chat name origin` left, `B until_ms [m]` banned (`m`: by a moderator), `K` kicked,
`U` unbanned.
Chat channels carry only `M`; user channels carry private `M` records and the user's
`J`/`L`/`B`/`K`.
"""

from __future__ import annotations

import logging

from store import keys
from store.contract import (
    ChatPosts,
    MemberJoined,
    MemberLeft,
    Message,
    PrivatePost,
    StoreEvent,
    UserBanned,
    UserKicked,
    UserUnbanned,
    id_key,
)

__all__ = ["decode", "message_record"]

log = logging.getLogger("chat.pubsub")
_CHAT = keys.CHAT_CHANNEL
_USER = keys.USER_CHANNEL


def _message(fields: str) -> Message:
    mid, conv, sender, where, text = fields.split("\x1f", 4)
    return Message(mid, id_key(mid), conv, sender, where, text)


def message_record(mid: str, conv: str, sender: str, where: str, text: str) -> str:
    """An `M` record, as the scripts write it (for the one a gateway publishes itself: a
    private message on a cluster)."""
    return "\x1f".join(("M", mid, conv, sender, where, text))


def decode(channel: bytes, payload: bytes) -> list[StoreEvent]:
    """The events of one payload; a malformed one is logged and dropped, never raised:
    one bad payload must not stop the others."""
    try:
        text = payload.decode()
        if channel.startswith(_CHAT):
            chat = keys.channel_name(channel, _CHAT)
            return [ChatPosts(chat, [_message(r[2:]) for r in text.split("\x1e")])]
        if channel.startswith(_USER):
            user = keys.channel_name(channel, _USER)
            return [_user_event(user, record) for record in text.split("\x1e")]
    except (ValueError, UnicodeDecodeError):
        log.exception("event=bad_payload channel=%r", channel)
        return []
    log.warning("event=bad_payload channel=%r (unknown channel)", channel)
    return []


def _user_event(user: str, record: str) -> StoreEvent:
    kind, _, rest = record.partition("\x1f")
    if kind == "M":
        return PrivatePost(user, _message(rest))
    if kind == "J":
        chat, name, origin = rest.split("\x1f", 2)
        return MemberJoined(user, chat, name, origin)
    if kind == "L":
        chat, name, origin = rest.split("\x1f", 2)
        return MemberLeft(user, chat, name, origin)
    if kind == "B":
        until, _, by = rest.partition("\x1f")
        return UserBanned(user, int(until), by == "m")
    if kind == "K":
        return UserKicked(user)
    if kind == "U":
        return UserUnbanned(user)
    raise ValueError(f"unknown record kind {kind!r}")
