"""Chats, posts and stored messages in memory (join.lua, leave.lua, post_many.lua,
post_private.lua, bucket_fn.lua, xadd_fn.lua, advance.lua)."""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Mapping, Sequence

from store.contract import (
    ACCEPTED,
    Backlog,
    Change,
    ChatPosts,
    ChatPresence,
    Conv,
    JoinStatus,
    Kind,
    MemberJoined,
    MemberLeft,
    Membership,
    Message,
    Position,
    PostResult,
    PostStatus,
    PrivatePost,
    Range,
    TagsSent,
    UserState,
)
from store.memory.server import (
    HOUR_MS,
    Base,
    done,
)

__all__ = ["Conversations", "Entry"]

#: A stored message: position, sender, recipient's name ("" in a chat), text, kind, tags.
Entry = tuple[Position, str, str, str, Kind, str]


class Conversations(Base):
    # -- conversations -------------------------------------------------------------------

    def _stream(self, conv: Conv) -> list[Entry]:
        """A conversation's live entries, oldest first: (position, sender, recipient's
        name or "" in a chat, text, kind, client tags)."""
        found: list[Entry] = self.k.get(("msgs", conv), [])
        return found

    def _append(
        self,
        conv: Conv,
        sender: str,
        recipient: str,
        text: str,
        now: int,
        kind: Kind = Kind.MESSAGE,
        tags: str = "",
    ) -> Position:
        """xadd_fn.lua, then the trims and the expiry post_many.lua and post_private.lua do."""
        stream: list[Entry] = self.k.upsert(("msgs", conv), list)
        pos = self.server.position(stream[-1][0] if stream else None)
        stream.append((pos, sender, recipient, text, kind, tags))
        floor = now - self.ttl_ms
        drop = 0
        while drop < len(stream) and stream[drop][0].ms < floor:
            drop += 1
        drop = max(drop, len(stream) - self.max_stored)
        if drop:
            del stream[:drop]
        self.k.expire(("msgs", conv), self.ttl_ms)
        return pos

    def _floor(self, now: int) -> Position:
        return Position(max(0, now - self.ttl_ms), 0)

    def _read(
        self, conv: Conv, now: int, after: Position | None, before: Position | None = None
    ) -> list[Message]:
        """Live messages of `conv` after `after` (exclusive; the lifetime's start,
        inclusive, if older or None) and before `before` (exclusive), oldest first."""
        floor = self._floor(now)
        out = []
        for pos, sender, recipient, text, kind, tags in self._stream(conv):
            if pos < floor or (after is not None and after >= floor and pos <= after):
                continue
            if before is not None and pos >= before:
                break
            out.append(Message(pos, conv, sender, recipient, text, kind, tags))
        return out

    async def backlog(self, user: str, state: UserState, limit: int) -> Backlog:
        now = self.server.now()
        convs = [Conv.of_chat(c) for c in state.chats]
        convs += [Conv.private(user, p) for p in state.peers]
        kept: list[Message] = []
        cut: dict[Conv, int] = {}
        for conv in convs:
            unread = self._read(conv, now, state.cursors.get(conv))[-(limit + 1) :]
            if len(unread) > limit:
                cut[conv] = len(unread) - limit
                unread = unread[-limit:] if limit else []
            kept += unread
        kept.sort(key=lambda m: m.pos)
        if len(kept) > limit:
            for m in kept[: len(kept) - limit]:
                cut[m.conv] = cut.get(m.conv, 0) + 1
            kept = kept[len(kept) - limit :]
        return Backlog(kept, cut)

    async def read_after(self, after: Mapping[Conv, Position | None]) -> list[Message]:
        now = self.server.now()
        out = [m for conv, pos in after.items() for m in self._read(conv, now, pos)]
        out.sort(key=lambda m: m.pos)
        return out

    async def history(self, chat: str, name: str, count: int) -> list[Message]:
        now = self.server.now()
        found = self._read(Conv.of_chat(chat), now, None)
        return [m._replace(where=name) for m in found[-count:]] if count > 0 else []

    async def read_range(self, conv: Conv, want: Range) -> list[Message]:
        now = self.server.now()
        found = self._read(conv, now, want.after, want.before)
        if want.count <= 0:
            return []
        return found[-want.count :] if want.newest else found[: want.count]

    async def latest_many(self, convs: Sequence[Conv]) -> list[Message | None]:
        now = self.server.now()
        found = [self._read(conv, now, None, None) for conv in convs]
        return [messages[-1] if messages else None for messages in found]

    async def advance_cursors(self, updates: Mapping[str, Mapping[Conv, Position]]) -> None:
        self.server.now()
        for user, convs in updates.items():
            cursors = self._map(("cursor", user))
            for conv, pos in convs.items():
                old = cursors.get(conv)
                if old is None or pos > old:
                    cursors[conv] = pos
            self.k.expire(("cursor", user), self.ttl_ms)

    async def read_position(self, user: str, conv: Conv) -> Position | None:
        self.server.now()
        return self._positions(user).get(conv)

    # -- posting -------------------------------------------------------------------------

    def _bucket_take(self, user: str, now: int, n: int) -> list[int | None]:
        """bucket_fn.lua for `n` messages of one sender: None (a token taken) or the ms
        until one is back, each; the bucket saved if any token was taken."""
        key = ("rate", user)
        saved = self.k.get(key)
        tokens, ts = (float(self.burst), now) if saved is None else saved
        if now > ts:
            tokens = min(float(self.burst), tokens + (now - ts) * self.rate / 1000)
        out: list[int | None] = []
        for _ in range(n):
            if tokens < 1:
                out.append(math.ceil((1 - tokens) * 1000 / self.rate))
            else:
                tokens -= 1
                out.append(None)
        if any(r is None for r in out):
            self.k.put(key, (tokens, now), math.ceil(self.burst * 1000 / self.rate) + 1000)
        return out

    def _refusal(self, user: str, now: int, n: int) -> list[PostResult | None]:
        """The sender's ban and rate for `n` messages: a refusal each, or None (may pass)."""
        ban = self.k.get(("ban", user))
        if ban is not None:
            return [PostResult(PostStatus.BANNED, until_ms=int(ban))] * n
        if self.rate <= 0:
            return [None] * n
        return [
            None if r is None else PostResult(PostStatus.RATE, retry_ms=r)
            for r in self._bucket_take(user, now, n)
        ]

    def post_chat(
        self,
        user: str,
        name: str,
        chat: str,
        chat_name: str,
        texts: list[str],
        kind: Kind = Kind.MESSAGE,
        tags: str = "",
    ) -> asyncio.Future[list[PostResult]]:
        return done(lambda: self._post_chat(user, name, chat, chat_name, texts, kind, tags))

    def _post_chat(
        self,
        user: str,
        name: str,
        chat: str,
        chat_name: str,
        texts: list[str],
        kind: Kind,
        tags: str,
    ) -> list[PostResult]:
        now = self.server.now()
        if user not in self._members(("members", chat)):
            return [PostResult(PostStatus.NOT_MEMBER)] * len(texts)
        conv = Conv.of_chat(chat)
        results: list[PostResult] = []
        accepted: list[Message] = []
        for text, refused in zip(texts, self._refusal(user, now, len(texts)), strict=True):
            if refused is not None:
                results.append(refused)
                continue
            pos = self._append(conv, name, "", text, now, kind, tags)
            accepted.append(Message(pos, conv, name, chat_name, text, kind, tags))
            results.append(ACCEPTED)
        if accepted:
            self.server.publish(("c", chat), ChatPosts(chat, accepted))
        return results

    def post_private(
        self,
        user: str,
        name: str,
        peer: str,
        text: str,
        kind: Kind = Kind.MESSAGE,
        tags: str = "",
    ) -> asyncio.Future[PostResult]:
        return done(lambda: self._post_private(user, name, peer, text, kind, tags))

    def _post_private(
        self, user: str, name: str, peer: str, text: str, kind: Kind, tags: str
    ) -> PostResult:
        now = self.server.now()
        recipient = self._name(peer)
        if recipient is None:
            return PostResult(PostStatus.NO_USER)
        (refused,) = self._refusal(user, now, 1)
        if refused is not None:
            return refused
        conv = Conv.private(user, peer)
        pos = self._append(conv, name, recipient, text, now, kind, tags)
        for a, b in ((user, peer), (peer, user)):
            self._set(("peers", a)).add(b)
            self.k.expire(("peers", a), self.ttl_ms)
        m = Message(pos, conv, name, recipient, text, kind, tags)
        for who in (user, peer):
            self._user_channel(who, PrivatePost(who, m))
        return ACCEPTED

    # -- published, never stored: client tags (TAGMSG), chat presence ----------------------

    async def send_tags(self, user: str, name: str, conv: Conv, where: str, tags: str) -> str:
        ms = self.server.now()
        tid = f"{ms}-t{secrets.token_hex(6)}"
        if conv.is_chat:
            self.server.publish(("c", conv.chat), TagsSent("", conv, name, where, tags, ms, tid))
        else:
            for who in sorted({conv.low, conv.high}):  # once to oneself
                self._user_channel(who, TagsSent(who, conv, name, where, tags, ms, tid))
        return tid

    async def announce(
        self,
        chats: Sequence[str],
        user: str,
        name: str,
        change: Change,
        reason: str,
        stamp: int,
        max_members: int,
    ) -> None:
        self.server.now()
        for chat in chats:
            size = len(self._members(("members", chat)))
            if 0 < size <= max_members:
                event = ChatPresence(chat, user, name, change, reason, stamp)
                self.server.publish(("c", chat), event)

    # -- chats ---------------------------------------------------------------------------

    async def join(
        self, user: str, chat: str, typed: str, origin: str, look: str = ""
    ) -> Membership:
        self.server.now()
        mine = self._members(("chats", user))
        members = self._members(("members", chat))
        looks = self._map(("chatlooks",))
        holder = looks.get(look) if look else None
        live = self._scores(("chatsizes",))
        if not members and holder is not None and holder != chat and holder in live:
            return Membership(False, self.k.get(("chat", holder)) or holder, JoinStatus.LOOK_ALIKE)
        if user in members:
            self._set(("chats", user)).add(chat)
            return Membership(False, self.k.get(("chat", chat)) or typed)
        if chat not in mine and len(mine) >= self.max_user_chats:
            return Membership(False, typed, JoinStatus.USER_LIMIT)
        created = not members
        if created:
            if len(self._scores(("chatsizes",))) >= self.max_chats:
                return Membership(False, typed, JoinStatus.CHAT_LIMIT)
            if int(self.k.get(("creations", user), 0)) >= self.chat_creations:
                return Membership(False, typed, JoinStatus.CREATE_RATE)
            self.k.delete(("chat", chat))  # a name left over from an emptied chat
        count = self._join_chat(user, chat, typed)
        if look and created:
            for old in [k for k, c in looks.items() if c not in live][:3]:  # as Redis' prune
                del looks[old]
            looks[look] = chat
        name = self.k.get(("chat", chat))
        self._set(("chats", user)).add(chat)
        if created and self.k.incr(("creations", user)) == 1:
            self.k.expire(("creations", user), HOUR_MS)
        self._map(("chatsizes",))[chat] = count
        self._user_channel(user, MemberJoined(user, chat, name, origin))
        return Membership(True, name)

    async def leave(self, user: str, chat: str, origin: str) -> Membership:
        self.server.now()
        removed, name = self._leave_chat(user, chat)
        self._members(("chats", user)).discard(chat)
        self.k.tidy(("chats", user))
        if removed:
            self._user_channel(user, MemberLeft(user, chat, name, origin))
        return Membership(removed, name)

    async def is_member(self, user: str, chat: str) -> bool:
        self.server.now()
        return user in self._members(("members", chat))
