"""Script and stream replies as the contract's types (`PostResult`, `Message`,
`Position`), and the stream bounds the reads ask for."""

from __future__ import annotations

from typing import Any

from store import keys
from store.contract import ACCEPTED, Conv, Kind, Message, Position, PostResult, PostStatus

UNCONFIRMED = PostResult(PostStatus.UNCONFIRMED)


def post_result(status: str, value: Any) -> PostResult:
    if status == "ok":
        return ACCEPTED
    if status == "banned":
        return PostResult(PostStatus.BANNED, until_ms=int(value))
    if status == "rate":
        return PostResult(PostStatus.RATE, retry_ms=int(value))
    return PostResult(PostStatus(status))


def stream_messages(conv: Conv, entries: list[Any], chat_name: str | None = None) -> list[Message]:
    """Messages from a raw XRANGE/XREVRANGE reply ([id, [field, value, ...]] each)."""
    out = []
    for mid, flat in entries:
        f = dict(zip(flat[::2], flat[1::2], strict=False))
        out.append(
            stream_message(conv, mid, f, chat_name if chat_name is not None else f.get("r", ""))
        )
    return out


def stream_message(conv: Conv, mid: str, f: dict[str, str], where: str) -> Message:
    """One stream entry (post_many.lua, post_private.lua: `n` sender, `t` text, `r` the
    recipient's name, `k` "N" for a notice, `g` client tags)."""
    pos, sender, text = keys.position(mid), f.get("n", "?"), f.get("t", "")
    if "k" not in f:
        return Message(pos, conv, sender, where, text)
    kind = Kind.NOTICE if f["k"] == "N" else Kind.MESSAGE
    return Message(pos, conv, sender, where, text, kind, f.get("g", ""))


def low_bound(floor: Position, after: Position | None) -> str:
    """The low XRANGE bound for messages after `after` (exclusive) that are still live."""
    if after is None or after < floor:
        return keys.stream_id(floor)
    return "(" + keys.stream_id(after)


def position_of(mid: Any) -> Position | None:
    try:
        return keys.position(mid) if mid else None
    except ValueError:
        return None


def cursor_positions(flat: list[str]) -> dict[Conv, Position]:
    """A cursor hash (conversation id -> stream id, flat) as positions; a field that is
    not a conversation's, or a value that is not an id, is skipped."""
    out: dict[Conv, Position] = {}
    for field, mid in zip(flat[::2], flat[1::2], strict=True):
        conv, pos = Conv.parse(field), position_of(mid)
        if conv is not None and pos is not None:
            out[conv] = pos
    return out
