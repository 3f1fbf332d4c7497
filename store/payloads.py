"""The pub/sub payload format: written by `lua/payload_fn.lua` (the scripts) and by the
encoders here (what the gateway publishes itself), read by `decode` and nowhere else.
`tests/store/payload_vectors.json` holds payloads with the events they decode to: the Lua
writer, the Python writers and the decoder are all checked against it.

A payload is records separated by \\x1e (post_many publishes a burst as one payload), each
record fields separated by \\x1f, the first field its kind:

- `M id conv sender where text`: a message (`id` "<ms>-<seq>", `conv` "c:<chat>" or
  "p:<a>|<b>"; `where` the chat's name, or the recipient's for a private message);
- `J chat name origin` joined, `L chat name origin` left (`origin`: the session that did
  it, which said so itself);
- `B until_ms` banned after complaints, `B until_ms m` banned by a moderator;
- `K` kicked; `U` unbanned.

Chat channels carry only `M`; user channels carry private `M` records and the user's
`J`/`L`/`B`/`K`/`U`.
"""

from __future__ import annotations

import logging

from store import keys
from store.contract import (
    ChatPosts,
    Conv,
    MemberJoined,
    MemberLeft,
    Message,
    Position,
    PrivatePost,
    StoreEvent,
    UserBanned,
    UserKicked,
    UserUnbanned,
)

__all__ = [
    "RECORDS",
    "banned_record",
    "decode",
    "joined_record",
    "kicked_record",
    "left_record",
    "message_record",
    "payload",
    "unbanned_record",
]

log = logging.getLogger("chat.pubsub")
_CHAT = keys.CHAT_CHANNEL
_USER = keys.USER_CHANNEL
#: Between the records of one payload, and between the fields of one record.
RECORDS, FIELDS = "\x1e", "\x1f"


def message_record(mid: str, conv: str, sender: str, where: str, text: str) -> str:
    """An `M` record (the gateway publishes a private message itself on a cluster)."""
    return FIELDS.join(("M", mid, conv, sender, where, text))


def joined_record(chat: str, name: str, origin: str) -> str:
    return FIELDS.join(("J", chat, name, origin))


def left_record(chat: str, name: str, origin: str) -> str:
    return FIELDS.join(("L", chat, name, origin))


def banned_record(until_ms: int, by_moderator: bool) -> str:
    return FIELDS.join(("B", str(until_ms), "m")) if by_moderator else f"B{FIELDS}{until_ms}"


def kicked_record() -> str:
    return "K"


def unbanned_record() -> str:
    return "U"


def payload(records: list[str]) -> str:
    return RECORDS.join(records)


def _position(mid: str) -> Position:
    ms, _, seq = mid.partition("-")
    return Position(int(ms), int(seq))


def _message(fields: str, conv: Conv | None = None) -> Message:
    mid, conv_id, sender, where, text = fields.split(FIELDS, 4)
    if conv is None:
        conv = Conv.parse(conv_id)
        if conv is None:
            raise ValueError(f"bad conversation id {conv_id!r}")
    return Message(_position(mid), conv, sender, where, text)


def decode(channel: bytes, data: bytes) -> list[StoreEvent]:
    """The events of one payload; a malformed one is logged and dropped, never raised:
    one bad payload must not stop the others."""
    try:
        text = data.decode()
        if channel.startswith(_CHAT):
            chat = keys.channel_name(channel, _CHAT)
            conv = Conv.of_chat(chat)  # one for the burst: every record is of this chat
            return [ChatPosts(chat, [_message(r[2:], conv) for r in text.split(RECORDS)])]
        if channel.startswith(_USER):
            user = keys.channel_name(channel, _USER)
            return [_user_event(user, record) for record in text.split(RECORDS)]
    except (ValueError, UnicodeDecodeError):
        log.exception("event=bad_payload channel=%r", channel)
        return []
    log.warning("event=bad_payload channel=%r (unknown channel)", channel)
    return []


def _user_event(user: str, record: str) -> StoreEvent:
    kind, _, rest = record.partition(FIELDS)
    if kind == "M":
        return PrivatePost(user, _message(rest))
    if kind == "J":
        chat, name, origin = rest.split(FIELDS, 2)
        return MemberJoined(user, chat, name, origin)
    if kind == "L":
        chat, name, origin = rest.split(FIELDS, 2)
        return MemberLeft(user, chat, name, origin)
    if kind == "B":
        until, _, by = rest.partition(FIELDS)
        return UserBanned(user, int(until), by == "m")
    if kind == "K":
        return UserKicked(user)
    if kind == "U":
        return UserUnbanned(user)
    raise ValueError(f"unknown record kind {kind!r}")
