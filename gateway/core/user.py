"""One user's presence on this gateway: their sessions, chats and shown positions."""

from __future__ import annotations

from typing import Any

from gateway.core.events import ChatConv, Conversation, PrivateConv
from gateway.core.names import name_key
from store import keys
from store.contract import Message, UserState, id_key

__all__ = ["LocalUser"]


class LocalUser:
    """Shared by all of one user's sessions on this gateway; fan-out owns the registry."""

    __slots__ = ("chats", "dirty", "key", "last_private", "name", "peers", "sessions", "shown")

    def __init__(self, key: str, name: str, state: UserState) -> None:
        self.key = key
        self.name = name
        #: The user's sessions on this gateway (core sessions: typed loosely to keep the
        #: core free of a cycle; fan-out reads them through its `Reader` protocol).
        self.sessions: list[Any] = []
        self.chats: dict[str, str] = dict(state.chats)  # chat key -> display name
        self.peers: set[str] = set(state.peers)
        #: Conversation id -> last message id shown to any session; `dirty` until flushed.
        self.shown: dict[str, str] = {}
        self.dirty = False
        #: Private conversation id -> last id delivered live (drops the copy published to
        #: the other user's channel when both users are on this gateway, and replays).
        self.last_private: dict[str, tuple[int, int]] = {}

    def mark_shown(self, conv: str, mid: str) -> None:
        old = self.shown.get(conv)
        if old is None or id_key(mid) > id_key(old):
            self.shown[conv] = mid
            self.dirty = True

    def where(self, conv: str) -> Conversation:
        """A conversation id, from this user's side (the peer's key stands for its name)."""
        if keys.is_chat(conv):
            chat = keys.chat_of(conv)
            return ChatConv(chat, self.chats.get(chat, chat))
        peer = keys.peer_of(conv, self.key)
        return PrivateConv(peer, peer)

    def view(self, m: Message) -> Conversation:
        """The conversation of a stored message, from this user's side."""
        if keys.is_chat(m.conv):
            chat = keys.chat_of(m.conv)
            return ChatConv(chat, self.chats.get(chat, m.where or chat))
        peer = keys.peer_of(m.conv, self.key)
        return PrivateConv(peer, m.where if name_key(m.sender) == self.key else m.sender)
