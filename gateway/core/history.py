"""Stored messages on request and read positions, for doors that ask by range (IRC's
CHATHISTORY and MARKREAD): which conversation a target is, whether the user may read it,
and the same read positions the other doors advance (a message shown anywhere is read).

Functions of a logged-in `Session`; they read the store and never change what fan-out
delivers, so a door may call them between commands.
"""

from __future__ import annotations

import asyncio

from gateway.core import events as ev
from gateway.core.names import name_error, name_key
from gateway.core.session import Session
from store.contract import Conv, Message, Position, Range

__all__ = ["conversation", "latest", "mark_read", "messages", "read_marker"]


def conversation(session: Session, target: str) -> tuple[Conv, ev.Conversation] | None:
    """(the conversation, how the user sees it) for `#chat` or a nickname; None if the
    user may not read it (not a member of the chat, a bad name, themselves)."""
    user = session.user
    if user is None:
        return None
    if target.startswith("#"):
        chat = name_key(target[1:])
        if chat not in user.chats:
            return None
        return Conv.of_chat(chat), ev.ChatConv(chat, user.chats[chat])
    if name_error(target) is not None:
        return None
    peer = name_key(target)
    if peer == session.key:
        return None
    return Conv.private(session.key, peer), ev.PrivateConv(peer, target)


async def messages(session: Session, conv: Conv, want: Range) -> list[Message]:
    """The messages of `conv` that `want` asks for (see `Store.read_range`), oldest first;
    chat names filled in as the user sees them."""
    found = await session.core.store.read_range(conv, want)
    if session.user is not None and conv.is_chat:
        name = session.user.chats.get(conv.chat, conv.chat)
        found = [m._replace(where=name) for m in found]
    return found


async def latest(session: Session, count: int) -> list[tuple[ev.Conversation, Message]]:
    """The newest message of each of the user's conversations (chats and private ones),
    newest first, at most `count`."""
    user = session.user
    if user is None:
        return []
    convs = [Conv.of_chat(c) for c in user.chats]
    convs += [Conv.private(session.key, p) for p in user.peers]
    store = session.core.store
    newest = Range(1, newest=True)
    found = await asyncio.gather(*(store.read_range(c, newest) for c in convs))
    last = [(user.view(ms[0]), ms[0]) for ms in found if ms]
    last.sort(key=lambda pair: pair[1].pos, reverse=True)
    return last[:count]


async def read_marker(session: Session, conv: Conv) -> Position | None:
    """The user's read position in `conv`: the newer of this gateway's and the store's."""
    user = session.user
    stored = await session.core.store.read_position(session.key, conv)
    here = user.shown(conv) if user is not None else None
    if stored is None or (here is not None and here > stored):
        return here
    return stored


async def mark_read(session: Session, conv: Conv, ms: int) -> Position | None:
    """Mark read everything in `conv` up to `ms` (never moves back); the position after."""
    last = await session.core.store.read_range(
        conv, Range(1, before=Position(ms + 1, 0), newest=True)
    )
    if last and session.user is not None:
        session.user.mark_shown(conv, last[-1].pos)
    return await read_marker(session, conv)
