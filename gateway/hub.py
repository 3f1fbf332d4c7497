"""Fan-out: which local sessions read which conversation, and delivery to them.

The hub owns the gateway's one pub/sub link. Each message arriving from Redis is formatted
once and the same bytes are queued on every reader's connection; nothing on this path
awaits. The hub also remembers, per conversation, the last id it delivered: that drops
duplicates and tells it where to resume reading the streams after the link comes back.
Shown positions are kept per user in memory and flushed to Redis every `cursor_flush`
seconds, when a user's last session closes, and on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from gateway import render
from gateway.metrics import METRICS
from gateway.names import name_key
from store import keys
from store.base import StoredMessage, StoreUnavailable, UserState, id_tuple

if TYPE_CHECKING:
    from store.pubsub import Batch
    from store.redis_store import RedisStore

__all__ = ["Hub", "LocalUser", "Reader"]

log = logging.getLogger("chat.hub")
_USER_CHANNEL = keys.user_channel("")
_ZERO = (0, 0)


class Reader(Protocol):
    """What the hub needs of a session."""

    session_id: str
    current: str
    live: bool
    conn: Any

    def deliver(self, conv: str, key: tuple[int, int], mid: str, line: bytes) -> bool: ...

    def notice(self, text: str) -> None: ...


class LocalUser:
    """One user's presence on this gateway: their sessions, chats and shown positions."""

    __slots__ = ("chats", "dirty", "key", "name", "peers", "sessions", "shown")

    def __init__(self, key: str, name: str, state: UserState) -> None:
        self.key = key
        self.name = name
        self.sessions: list[Reader] = []
        self.chats: dict[str, str] = dict(state.chats)
        self.peers: set[str] = set(state.peers)
        self.shown: dict[str, str] = {}
        self.dirty = False

    def mark_shown(self, conv: str, mid: str) -> None:
        old = self.shown.get(conv)
        if old is None or id_tuple(mid) > id_tuple(old):
            self.shown[conv] = mid
            self.dirty = True


Group = list[tuple[tuple[int, int], str, bytes]]  # (id key, id, line), ids increasing


def deliver_group(users: Iterable[LocalUser], conv: str, group: Group) -> None:
    """The hot path of fan-out. Consecutive messages of one conversation: their lines joined
    once, one write per live reader (a burst of K messages costs each reader one append,
    not K). The hub delivers each conversation's ids in increasing order, so the shown
    position is assigned without comparing (advance.lua never moves a cursor back)."""
    data = group[0][2] if len(group) == 1 else b"".join(g[2] for g in group)
    mid = group[-1][1]
    for user in users:
        wrote = False
        for s in user.sessions:
            if s.live:
                s.conn.write(data)
                wrote = True
            else:
                for key, gmid, line in group:
                    s.deliver(conv, key, gmid, line)
        if wrote:
            user.shown[conv] = mid
            user.dirty = True


def dm_where(reader: str, nick: str, recipient: str) -> str:
    """`@peer` for a private message, from the reader's point of view."""
    return "@" + (recipient if name_key(nick) == reader else nick)


class Hub:
    def __init__(
        self,
        store: RedisStore,
        cursor_flush: float = 1.0,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.after_batch = after_batch
        self.cursor_flush = cursor_flush
        self.users: dict[str, LocalUser] = {}
        self.readers: dict[str, set[LocalUser]] = {}
        self.last: dict[object, tuple[int, int]] = {}
        self.link = store.pubsub(self.on_messages, self._on_reconnect, self._on_link_state)
        self._recovering = False
        self._held: list[Batch] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.redis_ok = True
        self._stopping = False

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.link.start()
        await self._heartbeat_now()
        self._ticker = asyncio.create_task(self._tick(), name="hub-ticker")

    async def stop(self) -> None:
        """Record every user's shown position, then let go of Redis."""
        self._stopping = True
        if self._ticker:
            self._ticker.cancel()
        await self.flush_cursors()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        try:
            await self.store.gateway_gone()
        except StoreUnavailable:
            pass
        await self.link.close()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick(self) -> None:
        beat = 0.0
        while True:
            await asyncio.sleep(self.cursor_flush)
            await self.flush_cursors()
            if time.monotonic() - beat >= 5:
                try:
                    await self.store.heartbeat(set(self.users))
                    beat = time.monotonic()
                except StoreUnavailable:
                    pass

    def _on_link_state(self, up: bool) -> None:
        self.redis_ok = up
        METRICS.redis_up.set(1 if up else 0)
        if up:
            self._spawn(self._heartbeat_now())
        else:
            METRICS.redis_errors.inc()

    async def _heartbeat_now(self) -> None:
        try:
            await self.store.heartbeat(set(self.users))
        except StoreUnavailable:
            pass

    # -- who reads what ------------------------------------------------------------------

    async def attach(self, reader: Reader, key: str, name: str, state: UserState) -> LocalUser:
        """Register a session; from now on its user's conversations reach it."""
        user = self.users.get(key)
        if user is None:
            user = self.users[key] = LocalUser(key, name, state)
            channels = [keys.user_channel(key)]
            for chat in user.chats:
                readers = self.readers.setdefault(chat, set())
                if not readers:
                    channels.append(keys.chat_channel(chat))
                readers.add(user)
            user.sessions.append(reader)
            await self.link.subscribe(channels)
            await self._set_online(key, True)
        else:
            user.sessions.append(reader)
        return user

    def detach(self, reader: Reader, user: LocalUser) -> None:
        if reader in user.sessions:
            user.sessions.remove(reader)
        if user.sessions or self.users.get(user.key) is not user or self._stopping:
            return
        del self.users[user.key]
        gone = [keys.user_channel(user.key)]
        for chat in user.chats:
            readers = self.readers.get(chat)
            if readers is not None:
                readers.discard(user)
                if not readers:
                    del self.readers[chat]
                    gone.append(keys.chat_channel(chat))
        for peer in user.peers:
            self.last.pop((user.key, keys.dm_conv(user.key, peer)), None)
        self.link.unsubscribe(gone)
        if user.dirty:
            self._spawn(self._flush({user.key: dict(user.shown)}))
        self._spawn(self._set_online(user.key, False))

    async def _set_online(self, key: str, online: bool) -> None:
        try:
            await self.store.set_online(key, online and key in self.users)
        except StoreUnavailable:
            pass

    async def add_chat(self, user: LocalUser, chat: str, name: str) -> None:
        user.chats[chat] = name
        readers = self.readers.setdefault(chat, set())
        first = not readers
        readers.add(user)
        if first:
            await self.link.subscribe([keys.chat_channel(chat)])

    def remove_chat(self, user: LocalUser, chat: str) -> None:
        user.chats.pop(chat, None)
        readers = self.readers.get(chat)
        if readers is None:
            return
        readers.discard(user)
        if not readers:
            del self.readers[chat]
            self.last.pop(keys.chat_conv(chat), None)
            self.link.unsubscribe([keys.chat_channel(chat)])

    # -- delivery ------------------------------------------------------------------------

    def on_messages(self, batch: Batch) -> None:
        if self._recovering:
            self._held.append(batch)
            return
        group_conv = ""
        group: Group = []
        for channel, raw in batch:
            for data in raw.decode().split("\x1e"):  # post_many publishes bursts
                group_conv, group = self._take(channel, data, group_conv, group)
        self._flush_group(group_conv, group)
        if self.after_batch is not None:
            self.after_batch()

    def _take(self, channel: bytes, data: str, group_conv: str, group: Group) -> tuple[str, Group]:
        """Add a chat message to the current group, or flush the group and dispatch."""
        try:
            if data.startswith("M\x1f"):
                mid, conv, nick, where, text = data[2:].split("\x1f", 4)
                if conv.startswith("c:"):
                    if conv != group_conv:
                        self._flush_group(group_conv, group)
                        group_conv, group = conv, []
                    entry = self._chat_entry(conv, mid, nick, where, text)
                    if entry is not None:
                        group.append(entry)
                    return group_conv, group
            self._flush_group(group_conv, group)
            self._dispatch(channel.decode(), data)
        except Exception:  # one bad payload must not stop the others
            log.exception("bad pubsub payload on %r", channel)
        return "", []

    def _flush_group(self, conv: str, group: Group) -> None:
        if not group:
            return
        readers = self.readers.get(conv[2:])
        if not readers:
            return
        METRICS.observe_delivery(group[0][0][0], len(group), len(readers))
        deliver_group(readers, conv, group)

    def _dispatch(self, channel: str, data: str) -> None:
        kind, _, rest = data.partition("\x1f")
        if kind == "M":  # chat messages never get here: on_messages groups them
            mid, conv, nick, where, text = rest.split("\x1f", 4)
            if channel.startswith(_USER_CHANNEL):
                self._deliver_dm(channel[len(_USER_CHANNEL) :], conv, mid, nick, where, text)
            return
        if not channel.startswith(_USER_CHANNEL):
            return
        user = self.users.get(channel[len(_USER_CHANNEL) :])
        if user is None:
            return
        if kind == "J":
            chat, name, origin = rest.split("\x1f", 2)
            if chat not in user.chats:
                self._spawn(self.add_chat(user, chat, name))
            for s in user.sessions:
                if s.session_id != origin:
                    s.notice(f"joined #{name}")
        elif kind == "L":
            chat, name, origin = rest.split("\x1f", 2)
            self.remove_chat(user, chat)
            for s in user.sessions:
                if s.session_id != origin:
                    s.notice(f"left #{name}")
                    if s.current == chat:
                        s.current = keys.GENERAL
                        s.notice("current chat is now #general")
        elif kind == "B":
            until = int(rest)
            for s in user.sessions:
                s.notice(
                    f"you are banned until {render.ban_end(until)} after complaints "
                    "from other users: you can read but not send"
                )

    def _fresh(self, dkey: object, mid: str) -> tuple[int, int] | None:
        key = id_tuple(mid)
        if key <= self.last.get(dkey, _ZERO):
            return None
        self.last[dkey] = key
        return key

    def _chat_entry(
        self, conv: str, mid: str, nick: str, where: str, text: str
    ) -> tuple[tuple[int, int], str, bytes] | None:
        """The group entry for a chat message this gateway has readers for and has not
        delivered yet, or None."""
        if conv[2:] not in self.readers:
            return None
        key = self._fresh(conv, mid)
        if key is None:
            return None
        return key, mid, render.message(key[0], "#" + where, nick, text)

    def _deliver_chat(self, conv: str, mid: str, nick: str, where: str, text: str) -> None:
        entry = self._chat_entry(conv, mid, nick, where, text)
        if entry is not None:
            self._flush_group(conv, [entry])

    def _deliver_dm(
        self, reader: str, conv: str, mid: str, nick: str, where: str, text: str
    ) -> None:
        user = self.users.get(reader)
        if user is None:
            return
        key = self._fresh((reader, conv), mid)
        if key is None:
            return
        peer = conv[2:].split("|")
        user.peers.add(peer[1] if peer[0] == reader else peer[0])
        METRICS.observe_delivery(key[0], 1, 1)
        line = render.message(key[0], dm_where(reader, nick, where), nick, text)
        deliver_group((user,), conv, [(key, mid, line)])

    # -- after the link comes back ---------------------------------------------------------

    async def _on_reconnect(self, lost_at: float) -> None:
        """Read from the streams what was published while the link was down."""
        METRICS.redis_reconnects.inc()
        self._recovering = True
        try:
            floor = f"{int((lost_at - 5) * 1000)}-0"
            after: dict[str, str] = {}
            for chat in self.readers:
                conv = keys.chat_conv(chat)
                last = self.last.get(conv)
                after[conv] = f"{last[0]}-{last[1]}" if last else floor
            dm_readers: dict[str, list[str]] = {}
            for user in self.users.values():
                for peer in user.peers:
                    conv = keys.dm_conv(user.key, peer)
                    dm_readers.setdefault(conv, []).append(user.key)
                    after.setdefault(conv, floor)
            messages = await self.store.read_after(list(after), after)
            for m in messages:
                if m.conv.startswith("c:"):
                    chat = m.conv[2:]
                    reader = next(iter(self.readers.get(chat, ())), None)
                    where = reader.chats.get(chat, chat) if reader else chat
                    self._deliver_chat(m.conv, m.id, m.nick, where, m.text)
                else:
                    for reader in dm_readers.get(m.conv, ()):
                        self._deliver_dm(reader, m.conv, m.id, m.nick, m.where, m.text)
            log.info("gap fill after reconnect: %d messages", len(messages))
        finally:
            self._recovering = False
            held, self._held = self._held, []
            for batch in held:
                self.on_messages(batch)

    # -- cursors -------------------------------------------------------------------------

    async def flush_cursors(self) -> None:
        updates = {}
        for user in self.users.values():
            if user.dirty:
                user.dirty = False
                updates[user.key] = dict(user.shown)
        await self._flush(updates)

    async def _flush(self, updates: dict[str, dict[str, str]]) -> None:
        if not updates:
            return
        try:
            await self.store.advance_cursors(updates)
        except StoreUnavailable:
            for key in updates:  # try again on the next tick
                user = self.users.get(key)
                if user is not None:
                    user.dirty = True
                else:
                    self._spawn(self._flush_later({key: updates[key]}))

    async def _flush_later(self, update: dict[str, dict[str, str]]) -> None:
        await asyncio.sleep(self.cursor_flush)
        await self._flush(update)

    def render_stored(self, reader: str, user: LocalUser, m: StoredMessage) -> bytes:
        if m.conv.startswith("c:"):
            where = "#" + user.chats.get(m.conv[2:], m.where or m.conv[2:])
        else:
            where = dm_where(reader, m.nick, m.where)
        return render.message(m.ms, where, m.nick, m.text)
