"""The pub/sub payload format: written by `lua/payload_fn.lua` (the scripts) and by the
encoders here (what the gateway publishes itself), read by `decode` and nowhere else.
`tests/store/payload_vectors.json` holds payloads with the events they decode to: the Lua
writer, the Python writers and the decoder are all checked against it.

A payload is records separated by \\x1e (post_many publishes a burst as one payload), each
record fields separated by \\x1f, the first field its kind:

- `M id conv sender where text`: a message (`id` "<ms>-<seq>", `conv` "c:<chat>" or
  "p:<a>|<b>"; `where` the chat's name, or the recipient's for a private message);
  `N ...` the same for a notice; `Mt`/`Nt id conv sender where tags text` one that
  carries client tags (`Kind`, `Message.tags`);
- `T id ms conv sender where tags`: client tags without a message (TAGMSG), not stored;
- `P change user name stamp reason`: a member of the channel's chat came (`J`), parted
  (`P`) or quit (`Q`) (`ChatPresence`);
- `J chat name origin` joined, `L chat name origin` left (`origin`: the session that did
  it, which said so itself);
- `B until_ms` banned after complaints, `B until_ms m` banned by a moderator;
- `K` kicked; `U` unbanned.

Chat channels carry messages, `T` and `P`; user channels carry private messages and `T`
and the user's `J`/`L`/`B`/`K`/`U`.
"""

from __future__ import annotations

import logging

from store import keys
from store.contract import (
    Change,
    ChatPosts,
    ChatPresence,
    Conv,
    Kind,
    MemberJoined,
    MemberLeft,
    Message,
    Position,
    PrivatePost,
    StoreEvent,
    TagsSent,
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
    "presence_record",
    "tags_record",
    "unbanned_record",
]

log = logging.getLogger("chat.pubsub")
_CHAT = keys.CHAT_CHANNEL
_USER = keys.USER_CHANNEL
#: Between the records of one payload, and between the fields of one record.
RECORDS, FIELDS = "\x1e", "\x1f"


def message_record(
    mid: str, conv: str, sender: str, where: str, text: str, kind: str = "M", tags: str = ""
) -> str:
    """An `M` (or `N`, `Mt`, `Nt`) record (the gateway publishes a private message itself
    on a cluster). `kind`: a `Kind`'s value."""
    if tags:
        return FIELDS.join((kind + "t", mid, conv, sender, where, tags, text))
    return FIELDS.join((kind, mid, conv, sender, where, text))


def tags_record(tid: str, ms: int, conv: str, sender: str, where: str, tags: str) -> str:
    return FIELDS.join(("T", tid, str(ms), conv, sender, where, tags))


def presence_record(change: str, user: str, name: str, stamp: int, reason: str) -> str:
    return FIELDS.join(("P", change, user, name, str(stamp), reason))


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


#: Named tuples built without their generated `__new__` (a Python-level lambda): the
#: fan-out decodes every message of every burst on every gateway.
_new = tuple.__new__


def _position(mid: str) -> Position:
    ms, _, seq = mid.partition("-")
    return _new(Position, (int(ms), int(seq)))


def _conv(conv_id: str) -> Conv:
    conv = Conv.parse(conv_id)
    if conv is None:
        raise ValueError(f"bad conversation id {conv_id!r}")
    return conv


def _message(record: str, conv: Conv | None = None) -> Message:
    """A plain `M` record (the fan-out path: nothing else to look at)."""
    _, mid, conv_id, sender, where, text = record.split(FIELDS, 5)
    ms, _, seq = mid.partition("-")  # _position's work, without a call per message
    pos = _new(Position, (int(ms), int(seq)))
    return _new(Message, (pos, conv or _conv(conv_id), sender, where, text, _MESSAGE, ""))


_MESSAGE = Kind.MESSAGE
#: A plain message record's head, at a payload's start and after each record separator
#: (no field holds a separator, so counting these counts plain records).
_PLAIN = "M" + FIELDS
_NEXT_PLAIN = RECORDS + _PLAIN
_KINDS = {"M": (Kind.MESSAGE, False), "N": (Kind.NOTICE, False)}
_KINDS |= {k + "t": (kind, True) for k, (kind, _) in list(_KINDS.items())}


def _rich(record: str, conv: Conv | None = None) -> Message:
    """A notice, or a message with client tags."""
    head, _, rest = record.partition(FIELDS)
    kind, tagged = _KINDS[head]
    tags = ""
    if tagged:
        mid, conv_id, sender, where, tags, text = rest.split(FIELDS, 5)
    else:
        mid, conv_id, sender, where, text = rest.split(FIELDS, 4)
    return Message(_position(mid), conv or _conv(conv_id), sender, where, text, kind, tags)


def _tags(user: str, rest: str) -> TagsSent:
    tid, ms, conv_id, sender, where, tags = rest.split(FIELDS, 5)
    return TagsSent(user, _conv(conv_id), sender, where, tags, int(ms), tid)


def _chat_events(chat: str, text: str) -> list[StoreEvent]:
    """A chat channel's payload: plain messages (the fan-out path) without a look at
    anything else; consecutive messages stay one `ChatPosts`."""
    conv = Conv.of_chat(chat)  # one for the burst: every record is of this chat
    records = text.split(RECORDS)
    if text.startswith(_PLAIN) and text.count(_NEXT_PLAIN) == len(records) - 1:
        # only plain messages (a busy chat's every burst): one pass, no look at kinds
        return [ChatPosts(chat, [_message(r, conv) for r in records])]
    out: list[StoreEvent] = []
    burst: list[Message] = []
    for r in records:
        if r.startswith(_PLAIN):
            burst.append(_message(r, conv))
            continue
        head = r.partition(FIELDS)[0]
        if head in _KINDS:
            burst.append(_rich(r, conv))
            continue
        if burst:
            out.append(ChatPosts(chat, burst))
            burst = []
        if head == "P":
            _, change, user, name, stamp, reason = r.split(FIELDS, 5)
            out.append(ChatPresence(chat, user, name, Change(change), reason, int(stamp)))
        elif head == "T":
            out.append(_tags("", r[2:]))
        else:
            raise ValueError(f"unknown record kind {head!r}")
    if burst:
        out.append(ChatPosts(chat, burst))
    return out


def decode(channel: bytes, data: bytes) -> list[StoreEvent]:
    """The events of one payload; a malformed one is logged and dropped, never raised:
    one bad payload must not stop the others."""
    try:
        text = data.decode()
        if channel.startswith(_CHAT):
            return _chat_events(keys.channel_name(channel, _CHAT), text)
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
        return PrivatePost(user, _message(record))
    if kind in _KINDS:
        return PrivatePost(user, _rich(record))
    if kind == "T":
        return _tags(user, rest)
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
