"""Stored messages on request and read markers, for doors that ask by range (IRC's
CHATHISTORY and MARKREAD): which conversation a target is, whether the user may read it,
and the same read positions the other doors advance (a message shown anywhere is read).

The commands (`ReadHistory`, `RecentTargets`, `MarkRead`) speak of messages and moments
(`MessageAt`, `TimeAt`); this module turns them into the store's typed reads (`Range`).
They never change what fan-out delivers, so a door may send them between other commands.
"""

from __future__ import annotations

import hashlib
import time
from functools import lru_cache
from typing import TYPE_CHECKING

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.names import name_error, name_key
from store.contract import SEQ_MAX, Conv, Message, Position, Range

if TYPE_CHECKING:
    from gateway.core.session import Session

__all__ = [
    "MAX_TARGETS",
    "conv_tag",
    "mark_read",
    "read_history",
    "recent_targets",
]

#: Conversations one `RecentTargets` considers at most (the chats first, then private
#: peers): each costs one stream read, and a user can have thousands of peers. The reads
#: go to the store in one pipeline.
MAX_TARGETS = 500


@lru_cache(maxsize=8192)
def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def conv_tag(where: ev.Conversation, me: str) -> str:
    """A short digest of a conversation, the same for every reader (`me`: the reader's
    user key): doors put it in message ids so that one names one conversation's message."""
    if isinstance(where, ev.ChatConv):
        return _digest("#" + where.key)
    a, b = sorted((me, where.peer))
    return _digest(f"{a} {b}")


def _conversation(session: Session, target: str) -> tuple[Conv, ev.Conversation] | ev.Error:
    """(the conversation, how the user sees it) for `#chat` or a nickname, or why the user
    may not read it."""
    user = session.user
    assert user is not None
    if target.startswith("#"):
        chat = name_key(target[1:])
        if chat not in user.chats:
            return ev.Error(ev.ErrorCode.NOT_MEMBER, f"you are not in {target}")
        return Conv.of_chat(chat), ev.ChatConv(chat, user.chats[chat])
    err = name_error(target)
    if err is not None:
        return ev.Error(ev.ErrorCode.BAD_NAME, f"bad nickname {target!r}: {err}")
    peer = name_key(target)  # yourself too: notes to yourself (IRC) are kept like any
    return Conv.private(session.key, peer), ev.PrivateConv(peer, target)


def _after(p: cmd.Point) -> Position:
    """The last position a read after `p` excludes (a moment: every message of its ms)."""
    if isinstance(p, cmd.MessageAt):
        return Position(p.ms, p.seq)
    return Position(p.ms, SEQ_MAX)


def _before(p: cmd.Point) -> Position:
    """The first position a read before `p` excludes (a moment: its first message on)."""
    if isinstance(p, cmd.MessageAt):
        return Position(p.ms, p.seq)
    return Position(p.ms, 0)


async def read_history(session: Session, c: cmd.ReadHistory) -> None:
    found = _conversation(session, c.target)
    if isinstance(found, ev.Error):
        session.sink.emit(found)
        return
    conv, where = found
    me = session.key
    for p in (c.after, c.before, c.around):
        if isinstance(p, cmd.MessageAt) and p.tag != conv_tag(where, me):
            session.sink.emit(
                ev.Error(ev.ErrorCode.BAD_INPUT, f"that message is not in {c.target}")
            )
            return
    count = max(1, c.count)
    if not session._history_allowed(count, "not shown"):
        return
    store = session.core.store
    items: list[Message]
    if c.around is not None:
        at = _before(c.around)
        half = count // 2 if count > 1 else 0
        early = await store.read_range(conv, Range(half, before=at, newest=True)) if half else []
        late = await store.read_range(conv, Range(count - len(early), after=at.previous()))
        items = early + late
    else:
        low = _after(c.after) if c.after is not None else None
        high = _before(c.before) if c.before is not None else None
        items = await store.read_range(conv, Range(count, low, high, c.newest))
    if conv.is_chat:
        items = [m._replace(where=where.name) for m in items]
    session.sink.emit(ev.HistoryPage(where, tuple(items)))


async def recent_targets(session: Session, c: cmd.RecentTargets) -> None:
    """The newest message of each conversation, read in one pipeline; conversations in
    the order of that message's time from the first moment towards the second (earliest
    first when the first is the earlier, as BETWEEN reads), at most `count`."""
    user = session.user
    assert user is not None
    convs = [Conv.of_chat(chat) for chat in user.chats]
    convs += [Conv.private(session.key, p) for p in user.peers]
    convs = convs[:MAX_TARGETS]
    newest = await session.core.store.latest_many(convs)
    found = [(user.view(m), m.ms) for m in newest if m is not None]
    lo, hi = sorted((c.after_ms, c.before_ms))
    found = [(w, ms) for w, ms in found if lo < ms < hi]
    found.sort(key=lambda pair: pair[1], reverse=c.after_ms > c.before_ms)
    session.sink.emit(ev.Targets(tuple(found[: max(0, c.count)])))


async def _marker(session: Session, conv: Conv) -> Position | None:
    """The user's read position in `conv`: the newer of this gateway's and the store's."""
    user = session.user
    stored = await session.core.store.read_position(session.key, conv)
    here = user.shown(conv) if user is not None else None
    if stored is None or (here is not None and here > stored):
        return here
    return stored


async def mark_read(session: Session, c: cmd.MarkRead) -> None:
    """A read marker, asked for or moved. A marker set to a moment marks every message
    up to it read (on every door: the next login replays nothing older); a moment in
    the future counts as now, so messages not yet sent are never marked read."""
    found = _conversation(session, c.target)
    user = session.user
    assert user is not None
    if isinstance(found, ev.Error):
        if c.ms is not None:
            session.sink.emit(found)
        else:  # nothing readable there: no marker
            where: ev.Conversation = ev.ChatConv(name_key(c.target[1:]), c.target[1:])
            if not c.target.startswith("#"):
                where = ev.PrivateConv(name_key(c.target), c.target)
            session.sink.emit(ev.ReadMarker(where, None))
        return
    conv, where = found
    before = await _marker(session, conv)
    if c.ms is not None:
        ms = min(c.ms, int(time.time() * 1000))
        if before is None or before.ms < ms:
            user.mark_shown(conv, Position(ms, SEQ_MAX))
    after = await _marker(session, conv)
    at = after.ms if after is not None else None
    session.sink.emit(ev.ReadMarker(where, at))
    if after != before and at is not None:
        for other in user.sessions:
            if other is not session:
                other.sink.emit(ev.ReadMarker(where, at, moved=True))
