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
from store import keys
from store.contract import Message, id_key

__all__ = ["conversation", "latest", "mark_read", "messages", "read_marker"]


def conversation(session: Session, target: str) -> tuple[str, ev.Conversation] | None:
    """(conversation id, how the user sees it) for `#chat` or a nickname; None if the
    user may not read it (not a member of the chat, a bad name, themselves)."""
    user = session.user
    if user is None:
        return None
    if target.startswith("#"):
        chat = name_key(target[1:])
        if chat not in user.chats:
            return None
        return keys.chat_conv(chat), ev.ChatConv(chat, user.chats[chat])
    if name_error(target) is not None:
        return None
    peer = name_key(target)
    if peer == session.key:
        return None
    return keys.dm_conv(session.key, peer), ev.PrivateConv(peer, target)


async def messages(
    session: Session, conv: str, low: str, high: str, count: int, newest: bool
) -> list[Message]:
    """At most `count` messages of `conv` between two XRANGE bounds (see
    `Store.conv_range`), oldest first; chat names filled in as the user sees them."""
    found = await session.core.store.conv_range(conv, low, high, count, newest)
    if session.user is not None and keys.is_chat(conv):
        name = session.user.chats.get(keys.chat_of(conv), keys.chat_of(conv))
        found = [m._replace(where=name) for m in found]
    return found


async def latest(session: Session, count: int) -> list[tuple[ev.Conversation, Message]]:
    """The newest message of each of the user's conversations (chats and private ones),
    newest first, at most `count`."""
    user = session.user
    if user is None:
        return []
    convs = [keys.chat_conv(c) for c in user.chats]
    convs += [keys.dm_conv(session.key, p) for p in user.peers]
    store = session.core.store
    found = await asyncio.gather(*(store.conv_range(c, "-", "+", 1, True) for c in convs))
    last = [(user.view(ms[0]), ms[0]) for ms in found if ms]
    last.sort(key=lambda pair: pair[1].key, reverse=True)
    return last[:count]


async def read_marker(session: Session, conv: str) -> str | None:
    """The user's read position in `conv`: the newer of this gateway's and the store's."""
    user = session.user
    stored = await session.core.store.read_position(session.key, conv)
    here = user.shown.get(conv) if user is not None else None
    if stored is None or (here is not None and id_key(here) > id_key(stored)):
        return here
    return stored


async def mark_read(session: Session, conv: str, ms: int) -> str | None:
    """Mark read everything in `conv` up to `ms` (never moves back); the position after."""
    last = await session.core.store.conv_range(conv, "-", str(ms), 1, True)
    if last and session.user is not None:
        session.user.mark_shown(conv, last[-1].id)
    return await read_marker(session, conv)
