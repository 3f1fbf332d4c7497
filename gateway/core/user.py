"""One user's presence on this gateway: their sessions, chats and shown positions."""

from __future__ import annotations

import bisect
import sys
from collections.abc import Set
from typing import Any

from gateway.core.budget import Budget
from gateway.core.events import ChatConv, Conversation, PrivateConv
from gateway.core.names import name_key
from store.contract import Conv, Message, Position, UserState

__all__ = ["RECENT_PRIVATE", "RECENT_QUITS", "LocalUser"]

#: Ids remembered per private conversation to drop copies and replays (see fresh_private):
#: more than private messages of one conversation can arrive out of order at once.
RECENT_PRIVATE = 16

#: Quits remembered per user to tell each once (they arrive together, one per chat).
RECENT_QUITS = 64

#: What a user with no private conversation (or none delivered yet) shares: one empty
#: set object for all of them instead of an empty set (216 bytes) or dict (64) each.
_NO_PEERS: frozenset[str] = frozenset()


class _Shared(dict[str, str]):
    """A chat mapping several users hold: copied before any change."""

    __slots__ = ()


#: The chat mappings users share (at most one chat each), by their items.
_SHARED: dict[tuple[tuple[str, str], ...], _Shared] = {}
#: Shared mappings kept at most (one per chat that is someone's only chat).
_SHARED_MAX = 10_000


def _shared_chats(chats: dict[str, str]) -> dict[str, str]:
    """A mapping of at most one chat, shared by every user with the same one (names
    interned: each reply from Redis is a new string); more chats: a dict of one's own."""
    if len(chats) > 1:
        return {sys.intern(k): sys.intern(v) for k, v in chats.items()}
    items = tuple((sys.intern(k), sys.intern(v)) for k, v in chats.items())
    shared = _SHARED.get(items)
    if shared is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()  # users keep theirs (still copied before any change)
        shared = _SHARED[items] = _Shared(items)
    return shared


class LocalUser:
    """Shared by all of one user's sessions on this gateway; fan-out owns the registry."""

    __slots__ = (
        "_dirty",
        "_shown",
        "banned_until",
        "chats",
        "history_budget",
        "key",
        "last_private",
        "name",
        "peers",
        "quits",
        "sessions",
        "tags_budget",
    )

    def __init__(self, key: str, name: str, state: UserState, first: Any = None) -> None:
        self.key = key
        self.name = key if name == key else name  # one string when they are the same
        #: The user's sessions on this gateway (core sessions: typed loosely to keep the
        #: core free of a cycle; fan-out reads them through its `Reader` protocol). Built
        #: with the first one in it: a list sized exactly, not grown by an append.
        self.sessions: list[Any] = [first] if first is not None else []
        #: Chat key -> display name. Users in the same single chat (most: #general only)
        #: share one dict until one of them joins or leaves (`set_chat`, `drop_chat` copy
        #: it first): 184 bytes per user less. Never change it in place from outside.
        self.chats: dict[str, str] = _shared_chats(state.chats)
        #: Private peers: a shared empty set until the first one (see `add_peer`).
        self.peers: Set[str] = set(state.peers) if state.peers else _NO_PEERS
        #: The last position shown to any session, per conversation; `_dirty` until the
        #: store has it (see `flushed`).
        self._shown: dict[Conv, Position] = {}
        self._dirty = False
        #: Private conversation -> the newest positions delivered live, ascending, at most
        #: RECENT_PRIVATE (drops the copy published to the other user's channel when both
        #: users are on this gateway, and replays); None until the first private message.
        self.last_private: dict[Conv, list[Position]] | None = None
        #: History messages this user may still read this minute (core/budget.py), shared
        #: by their sessions here; None until their first history request.
        self.history_budget: Budget | None = None
        #: User key -> the stamp of their last quit told to this user (a quit is published
        #: in every small chat the quitter was in: told once); None until the first.
        self.quits: dict[str, int] | None = None
        #: When the user's ban ends (ms; 0: none), as the login and the user's channel told.
        self.banned_until = state.banned_until_ms or 0
        #: TAGMSGs this user may still send this minute, like `history_budget`.
        self.tags_budget: Budget | None = None

    def set_chat(self, chat: str, name: str) -> None:
        chats = self.chats
        if chats.get(chat) == name:
            return
        if isinstance(chats, _Shared):
            chats = self.chats = dict(chats)
        chats[chat] = name

    def drop_chat(self, chat: str) -> None:
        if chat not in self.chats:
            return
        chats = self.chats
        if isinstance(chats, _Shared):
            chats = self.chats = dict(chats)
        del chats[chat]

    def add_peer(self, peer: str) -> None:
        if not isinstance(self.peers, set):
            self.peers = set()
        self.peers.add(peer)

    def first_quit(self, user: str, stamp: int) -> bool:
        """Whether `user`'s quit `stamp` is news to this user (then it is recorded)."""
        quits = self.quits
        if quits is None:
            quits = self.quits = {}
        if quits.get(user) == stamp:
            return False
        if len(quits) >= RECENT_QUITS:
            quits.clear()
        quits[user] = stamp
        return True

    def fresh_private(self, conv: Conv, key: Position) -> bool:
        """Whether a private message was not delivered yet; if so it is recorded.

        Not just "newer than the last": on a Redis Cluster a private message is published
        by its sender's gateway after it is stored, so two senders' messages can arrive
        out of id order, and the older one must still be shown. An id older than the
        RECENT_PRIVATE newest ones delivered counts as delivered (a replay)."""
        last = self.last_private
        if last is None:
            last = self.last_private = {}
        recent = last.get(conv)
        if recent is None:
            last[conv] = [key]
            return True
        if key in recent or (len(recent) >= RECENT_PRIVATE and key < recent[0]):
            return False
        bisect.insort(recent, key)
        if len(recent) > RECENT_PRIVATE:
            del recent[0]
        return True

    # -- what the user was shown (fan-out and the session report it; cursors flush it) ---

    def shown(self, conv: Conv) -> Position | None:
        """The last position shown to any of the user's sessions here in `conv`."""
        return self._shown.get(conv)

    def shown_all(self) -> dict[Conv, Position]:
        """Every conversation's last shown position (a copy)."""
        return dict(self._shown)

    def mark_shown(self, conv: Conv, pos: Position) -> None:
        """`pos` was shown to a session (never moves back)."""
        old = self._shown.get(conv)
        if old is None or pos > old:
            self._shown[conv] = pos
            self._dirty = True

    def shown_live(self, conv: Conv, pos: Position) -> None:
        """Fan-out's hot path: a live burst ending at `pos` was shown. Live positions only
        grow per conversation (fan-out drops replays first), so there is no comparison."""
        self._shown[conv] = pos
        self._dirty = True

    def flushed(self) -> dict[Conv, Position] | None:
        """What the store has not been told yet (then counted as told), or None."""
        if not self._dirty:
            return None
        self._dirty = False
        return dict(self._shown)

    def flush_failed(self) -> None:
        """The store did not take what `flushed` gave: flush it again next time (also after
        the store lost its data: every position is written again)."""
        self._dirty = True

    # -- a conversation from this user's side ----------------------------------------------

    def where(self, conv: Conv) -> Conversation:
        """A conversation, from this user's side (the peer's key stands for its name)."""
        if conv.chat:
            return ChatConv(conv.chat, self.chats.get(conv.chat, conv.chat))
        peer = conv.peer_of(self.key)
        return PrivateConv(peer, peer)

    def view(self, m: Message) -> Conversation:
        """The conversation of a stored message, from this user's side."""
        conv = m.conv
        if conv.chat:
            return ChatConv(conv.chat, self.chats.get(conv.chat, m.where or conv.chat))
        peer = conv.peer_of(self.key)
        return PrivateConv(peer, m.where if name_key(m.sender) == self.key else m.sender)
