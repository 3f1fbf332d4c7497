"""Fan-out: which local sessions read which conversation, and delivery to them.

Fan-out owns the gateway's subscriptions. Typed events arrive from the store; each burst
of chat messages becomes one `Messages` event handed to every reader's door as the same
object (the door renders it once). Nothing on this path awaits. Fan-out remembers, per
conversation, the last id it delivered: that drops duplicates and tells it where to resume
reading the streams after the link comes back. Presence and cursor flushing are their own
units (`presence.py`, `cursors.py`), driven from here because fan-out owns the registry of
local users; so is the store-epoch check (`epoch.py`), whose reset handling is here for the
same reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

from gateway.bigchat import CHUNK, BigChats, Timing
from gateway.core import events as ev
from gateway.core.names import name_key
from gateway.core.user import LocalUser
from gateway.cursors import Cursors
from gateway.epoch import Epoch
from gateway.metrics import METRICS
from gateway.presence import Presence
from store.contract import (
    GENERAL,
    Change,
    ChatPosts,
    ChatPresence,
    Conv,
    MemberJoined,
    MemberLeft,
    Message,
    Position,
    PrivatePost,
    Store,
    StoreEvent,
    TagsSent,
    UserBanned,
    UserKicked,
    UserState,
    UserUnbanned,
)

__all__ = ["ANNOUNCE_WAIT", "GAP_SLACK", "Fanout", "Reader"]

log = logging.getLogger("chat.fanout")
_ZERO = Position(0, 0)
#: Seconds before the link was lost from which a gap fill reads conversations that had no
#: delivery yet: covers messages published just before the loss was noticed.
GAP_SLACK = 5.0
#: Seconds a join, part or quit waits at most for its announcement (a courtesy: a slow
#: store must not hold a user's PART or QUIT for the store timeout).
ANNOUNCE_WAIT = 2.0
#: Reads of the gap after a reconnect before it is given up (with its loss logged), the
#: first wait between them in seconds, doubling: about 3 s in all, live messages held.
GAP_RETRIES, GAP_RETRY_FIRST = 4, 0.4


class Reader(Protocol):
    """What fan-out needs of a core session."""

    live: bool
    stored: dict[Conv, Position] | None

    @property
    def session_id(self) -> str: ...

    @property
    def sink(self) -> Any: ...

    def hold(self, messages: ev.Messages) -> None: ...

    def past_stored(self, messages: ev.Messages) -> ev.Messages | None: ...

    def joined_elsewhere(self, name: str) -> None: ...

    def left_elsewhere(self, chat: str, name: str) -> None: ...

    def banned(self, until_ms: int, by_moderator: bool = False) -> None: ...

    def kicked(self) -> None: ...

    def unbanned(self) -> None: ...

    def store_reset(self) -> None: ...


def deliver(users: Iterable[LocalUser], messages: ev.Messages) -> None:
    """The hot path of fan-out: one `show` per live session, whatever the burst's size;
    a session that is loading holds the burst, and one that has just shown a stored read
    is shown only what that read did not (`past_stored`). Ids arrive in increasing order
    per conversation, so the shown position is assigned without comparing (advance.lua
    never moves a cursor back)."""
    conv = messages.items[0].conv
    last = messages.items[-1].pos
    for user in users:
        wrote = False
        for s in user.sessions:
            try:  # one broken connection must not stop the burst for everyone after it
                if s.live:
                    fresh = messages if s.stored is None else s.past_stored(messages)
                    if fresh is not None:
                        s.sink.show(fresh)
                        wrote = True
                else:
                    s.hold(messages)
            except Exception:
                log.exception("event=deliver_failed session=%s", s.session_id)
        if wrote:
            user.shown_live(conv, last)


class Fanout:
    def __init__(
        self,
        store: Store,
        cursor_flush: float = 1.0,
        after_batch: Callable[[], None] | None = None,
        chunk: int = CHUNK,
        presence_members: int = 0,
        gateway_id: str = "",
        account_ttl: float = 180 * 86400,
    ) -> None:
        self.store = store
        self.after_batch = after_batch
        #: Chats of at most this many members are told who comes, parts and quits (0: none).
        self.presence_members = presence_members
        self.gateway_id = gateway_id
        self.users: dict[str, LocalUser] = {}
        self.readers: dict[str, set[LocalUser]] = {}  # chat key -> local members
        self.last_chat: dict[str, Position] = {}  # chat key -> last position delivered
        self.cursors = Cursors(store, self.users, cursor_flush)
        self.epoch = Epoch(store, self._store_reset)
        self.presence = Presence(store, self.users, self.epoch.check, account_ttl)
        self.link = store.subscriptions(self.on_events, self._on_reconnect, self._on_link_state)
        self.redis_ok = True
        #: Gap fills running (several links may recover at once); live events are held
        #: while any runs, and everything is released, gaps first, when the last ends.
        self._recovering = 0
        self._held: list[list[StoreEvent]] = []
        self._gaps: list[StoreEvent] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        #: How long deliveries take (the metrics port's /debug/fanout).
        self.timing = Timing()
        #: Chats with more than `chunk` local readers are written `chunk` readers per loop
        #: turn (bigchat.py); 0: every chat at once.
        self.chunk = chunk
        self.big = BigChats(self.readers, deliver, self._flush, self.timing, chunk)
        self._began = 0  # when the read being delivered arrived (monotonic ns)
        self._small: list[list[int]] = []  # its bursts delivered at once (timing records)

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.link.start()
        await self.epoch.check()
        await self.presence.start()
        self.cursors.start()

    async def stop(self) -> None:
        """Record every user's shown position, then let go of Redis."""
        self._stopping = True
        await self.cursors.stop()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        await self.presence.stop()
        await self.link.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def settled(self) -> bool:
        """Pub/sub is up and no gap is being read (see the core's `Readers`)."""
        return self.redis_ok and not self._recovering

    def _on_link_state(self, up: bool) -> None:
        self.redis_ok = up
        METRICS.redis_up.set(1 if up else 0)
        if up:
            self._spawn(self.presence.beat())
        else:
            METRICS.redis_errors.inc()

    # -- who reads what ------------------------------------------------------------------

    async def attach(self, reader: Reader, key: str, name: str, state: UserState) -> LocalUser:
        """Register a session; from now on its user's conversations reach it."""
        user = self.users.get(key)
        if user is not None:
            user.sessions.append(reader)
            return user
        user = self.users[key] = LocalUser(key, name, state, reader)
        chats = []
        for chat in user.chats:
            readers = self.readers.setdefault(chat, set())
            if not readers:
                chats.append(chat)
            readers.add(user)
            self.big.joined(chat, user)
        await self.link.add(chats=chats, users=[key])
        await self.presence.set_online(key)
        if self.presence_members:
            self._spawn(self._came_online(user))
        return user

    def detach(self, reader: Reader, user: LocalUser, reason: str | None = "") -> None:
        """Unregister a session; the user's last one here lets the user go (and, when no
        other gateway has the user online, tells small chats that they quit: `reason`;
        None: `quitting` told them already)."""
        if reader in user.sessions:
            user.sessions.remove(reader)
        if user.sessions or self.users.get(user.key) is not user or self._stopping:
            return
        del self.users[user.key]
        if self.presence_members and reason is not None:
            self._spawn(self._went_offline(user, reason))
        gone = []
        for chat in user.chats:
            readers = self.readers.get(chat)
            if readers is not None:
                readers.discard(user)
                if not readers:
                    del self.readers[chat]
                    self.last_chat.pop(chat, None)
                    gone.append(chat)
        self.link.remove(chats=gone, users=[user.key])
        self.cursors.flush_gone(user)
        self.presence.went_offline(user.key)

    async def add_chat(self, user: LocalUser, chat: str, name: str) -> None:
        if not self._join_locally(user, chat, name):
            return
        if len(self.readers[chat]) == 1:
            await self.link.add(chats=[chat])

    def _join_locally(self, user: LocalUser, chat: str, name: str) -> bool:
        """Make `user` a local reader of `chat` (at once, so a leave that follows in the
        same read undoes it in order); False when the user is no longer here."""
        if self.users.get(user.key) is not user:  # every session closed meanwhile
            return False
        user.set_chat(chat, name)
        self.readers.setdefault(chat, set()).add(user)
        self.big.joined(chat, user)
        return True

    async def _subscribe_chat(self, chat: str) -> None:
        """Subscribe to `chat` if it still has a local reader when this task runs: the
        only one may have closed in between, and its unsubscribe (of a channel not yet
        subscribed) did nothing, so subscribing now would leave the channel for good."""
        if self.readers.get(chat):
            await self.link.add(chats=[chat])

    def remove_chat(self, user: LocalUser, chat: str) -> None:
        user.drop_chat(chat)
        readers = self.readers.get(chat)
        if readers is None:
            return
        readers.discard(user)
        if not readers:
            del self.readers[chat]
            self.last_chat.pop(chat, None)
            self.link.remove(chats=[chat])

    # -- who comes, parts and quits (small chats only) --------------------------------------

    async def announce(
        self, user: LocalUser, chats: list[str], change: Change, reason: str
    ) -> None:
        """Tell the members of those of `chats` small enough (`presence_members`), never
        #general's (everyone is in it: every connect on the server would be a line to
        everyone online); a failure is logged, never raised: a courtesy, not the chat."""
        chats = [c for c in chats if c != GENERAL]
        if not self.presence_members or not chats:
            return
        stamp = int(time.time() * 1000)
        try:
            told = self.store.announce(
                chats, user.key, user.name, change, reason, stamp, self.presence_members
            )
            async with asyncio.timeout(ANNOUNCE_WAIT):  # not wait_for (store/resp.py)
                await told
        except Exception as exc:
            log.warning("event=announce_failed user=%s change=%s error=%s", user.key, change, exc)

    async def _online_elsewhere(self, key: str) -> bool:
        """Whether another live gateway has the user online (its heartbeat's set): what
        this gateway can know in one round trip, at most a heartbeat (5 s) old."""
        others = [gw for gw in self.presence.live_gateways if gw != self.gateway_id]
        try:
            return await self.store.online_on(key, others)
        except Exception as exc:
            log.warning("event=announce_failed user=%s error=%s", key, exc)
            return True  # unknown: say nothing rather than a wrong JOIN or QUIT

    async def quitting(self, reader: Reader, user: LocalUser, reason: str) -> bool:
        """A session quits (it asked): when it is the user's last anywhere, small chats
        are told now, before it closes; True if they were."""
        if not self.presence_members or user.sessions != [reader] or not _told(user):
            return False
        if await self._online_elsewhere(user.key):
            return False
        await self.announce(user, list(user.chats), Change.QUIT, reason or "Client quit")
        return True

    async def _came_online(self, user: LocalUser) -> None:
        if _told(user) and not await self._online_elsewhere(user.key):
            await self.announce(user, list(user.chats), Change.CAME, "")

    async def _went_offline(self, user: LocalUser, reason: str) -> None:
        chats = list(user.chats)
        if not _told(user) or await self._online_elsewhere(user.key) or user.key in self.users:
            return  # still on another gateway, or back here meanwhile: no QUIT
        await self.announce(user, chats, Change.QUIT, reason or "Connection closed")

    def _presence(self, e: ChatPresence) -> None:
        readers = self.readers.get(e.chat)
        if not readers:
            return
        event: ev.Event
        if e.change is Change.QUIT:
            event = ev.MemberQuit(e.name, e.reason)
        else:
            first = next(iter(readers))
            name = first.chats.get(e.chat, e.chat)
            if e.change is Change.CAME:
                event = ev.MemberCame(name, e.name)
            else:
                event = ev.MemberParted(name, e.name, e.reason)
        for user in readers:
            if user.key == e.user:  # the user's own sessions hear it from the user channel
                continue
            if e.change is Change.QUIT and not user.first_quit(e.user, e.stamp):
                continue
            for s in user.sessions:
                if s.live:
                    s.sink.emit(event)

    def _tags(self, e: TagsSent) -> None:
        """Client tags to whoever reads the conversation now (not held, not replayed)."""
        conv = e.conv
        if conv.chat:
            readers = self.readers.get(conv.chat)
            if not readers:
                return
            first = next(iter(readers))
            where: ev.Conversation = ev.ChatConv(conv.chat, first.chats.get(conv.chat, e.where))
            users: Iterable[LocalUser] = readers
        else:
            user = self.users.get(e.user)
            if user is None:
                return
            peer = conv.peer_of(user.key)
            own = name_key(e.sender) == user.key
            where = ev.PrivateConv(peer, e.where if own else e.sender)
            users = (user,)
        event = ev.Tagged(where, e.sender, e.tags, e.ms, e.id)
        for user in users:
            for s in user.sessions:
                if s.live:
                    s.sink.emit(event)

    # -- delivery ------------------------------------------------------------------------

    def on_events(self, events: list[StoreEvent]) -> None:
        """One read's worth of events from the store: consecutive posts to one chat are
        delivered as one burst."""
        if self._recovering:
            self._held.append(events)
            return
        self._began = began = time.monotonic_ns()
        burst_chat = ""
        burst: list[Message] = []
        for event in events:
            if isinstance(event, ChatPosts):
                if event.chat != burst_chat:
                    self._chat_burst(burst_chat, burst)
                    burst_chat, burst = event.chat, []
                burst += event.messages
                continue
            self._chat_burst(burst_chat, burst)
            burst_chat, burst = "", []
            try:
                if isinstance(event, ChatPresence):
                    self._presence(event)
                elif isinstance(event, TagsSent):
                    self._tags(event)
                else:
                    self._user_event(event)
            except Exception:  # one bad event must not stop the others
                log.exception("event=fanout_error event=%r", event)
        self._chat_burst(burst_chat, burst)
        queued = time.monotonic_ns()
        self._flush()
        if self._small:
            timing, now = self.timing, time.monotonic_ns()
            timing.queue_ns += queued - began
            timing.write_ns += now - queued
            for record in self._small:
                timing.writes += record[3] // record[2]
                timing.done(record, now)
            self._small = []

    def _flush(self) -> None:
        if self.after_batch is not None:
            self.after_batch()

    def _chat_burst(self, chat: str, burst: list[Message]) -> None:
        if not burst:
            return
        readers = self.readers.get(chat)
        if not readers:
            return
        last = self.last_chat.get(chat, _ZERO)
        if burst[0].pos <= last:  # a replay or a duplicate: keep only what is new
            burst = [m for m in burst if m.pos > last]
            if not burst:
                return
        self.last_chat[chat] = burst[-1].pos
        METRICS.observe_delivery(burst[0].ms, len(burst), len(readers))
        messages = ev.Messages(ev.ChatConv(chat, burst[0].where), tuple(burst))
        age = int(time.time() * 1000) - burst[0].ms
        record = [self._began, 0, len(burst), len(burst) * len(readers), age, 0]
        if self.chunk and (len(readers) > self.chunk or self.big.busy(chat)):
            self.big.add(chat, messages, record)
        else:
            deliver(readers, messages)
            self._small.append(record)

    def _user_event(self, event: StoreEvent) -> None:
        user = self.users.get(getattr(event, "user", ""))
        if user is None:
            return
        if isinstance(event, PrivatePost):
            self._private(user, event.message)
        elif isinstance(event, MemberJoined):
            joined = event.chat not in user.chats and self._join_locally(
                user, event.chat, event.name
            )
            if joined and len(self.readers[event.chat]) == 1:  # only the subscribe waits
                self._spawn(self._subscribe_chat(event.chat))
            for s in user.sessions:
                if s.session_id != event.origin:
                    s.joined_elsewhere(event.name)
        elif isinstance(event, MemberLeft):
            self.remove_chat(user, event.chat)
            for s in user.sessions:
                if s.session_id != event.origin:
                    s.left_elsewhere(event.chat, event.name)
        elif isinstance(event, UserBanned):
            user.banned_until = event.until_ms
            for s in user.sessions:
                s.banned(event.until_ms, event.by_moderator)
        elif isinstance(event, UserKicked):
            for s in list(user.sessions):  # closing a session detaches it from the list
                s.kicked()
        elif isinstance(event, UserUnbanned):
            user.banned_until = 0
            for s in user.sessions:
                s.unbanned()

    def _private(self, user: LocalUser, m: Message) -> None:
        if not user.fresh_private(m.conv, m.pos):
            return
        user.add_peer(m.conv.peer_of(user.key))
        METRICS.observe_delivery(m.ms, 1, 1)
        deliver((user,), ev.Messages(user.view(m), (m,)))

    # -- after the link comes back ---------------------------------------------------------

    async def _store_reset(self) -> None:
        """Redis lost its data: write back what this gateway knows of its logged-in users
        (memberships, chat names, private peers, presence; subscriptions are the link's
        and it renews them on reconnect), rewrite their cursors at the next flush, and
        tell them. Accounts are not re-created: nothing here lets anyone log in."""
        users = list(self.users.values())
        await self.store.reassert(
            {u.key: dict(u.chats) for u in users}, {u.key: set(u.peers) for u in users}
        )
        await self.store.heartbeat(set(self.users))
        METRICS.store_resets.inc()
        for user in users:
            user.flush_failed()  # written again at the next flush
            for s in user.sessions:
                s.store_reset()
        if self.after_batch is not None:
            self.after_batch()

    async def _on_reconnect(self, lost_at: float) -> None:
        """Read from the streams what was published while the link was down (after
        checking that Redis still has its data).

        Live events are held from the first await on: one delivered before the gap is
        read would move a chat's last id past the gap, which would then be dropped as
        already shown. Gap fills may overlap (one per pub/sub link on a cluster): what
        they read is kept until the last one ends, then delivered in id order before the
        held live events (fan-out drops whatever two of them both carry)."""
        METRICS.redis_reconnects.inc()
        self._recovering += 1
        try:
            await self.epoch.check()
            floor = Position(max(0, int((lost_at - GAP_SLACK) * 1000)), 0)
            after: dict[Conv, Position | None] = {}
            for chat in self.readers:
                after[Conv.of_chat(chat)] = self.last_chat.get(chat) or floor
            private_readers: dict[Conv, list[str]] = {}
            for user in self.users.values():
                for peer in user.peers:
                    conv = Conv.private(user.key, peer)
                    private_readers.setdefault(conv, []).append(user.key)
                    after.setdefault(conv, floor)
            messages = await self._read_gap(after)
            events: list[StoreEvent] = []
            for m in messages:
                if m.conv.is_chat:
                    chat = m.conv.chat
                    member = next(iter(self.readers.get(chat, ())), None)
                    where = member.chats.get(chat, chat) if member else chat
                    events.append(ChatPosts(chat, [_with_where(m, where)]))
                else:
                    events += [PrivatePost(u, m) for u in private_readers.get(m.conv, ())]
            self._gaps += events
            log.info("event=gap_fill messages=%d", len(messages))
        finally:
            self._recovering -= 1
            if not self._recovering:
                gaps, self._gaps = self._gaps, []
                gaps = list({_event_id(e): e for e in gaps}.values())  # two gaps overlap
                gaps.sort(key=_message_key)
                held, self._held = self._held, []
                self.on_events(gaps)
                for batch in held:
                    self.on_events(batch)

    async def _read_gap(self, after: dict[Conv, Position | None]) -> list[Message]:
        """The gap, read again after a failure (Redis may flap while it comes back): live
        deliveries are held meanwhile, so giving up early would lose messages for good."""
        delay = GAP_RETRY_FIRST
        for attempt in range(1, GAP_RETRIES + 1):
            try:
                return await self.store.read_after(after)
            except Exception as exc:
                if attempt == GAP_RETRIES:
                    raise
                log.warning("event=gap_fill_retry attempt=%d error=%s", attempt, exc)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")


def _told(user: LocalUser) -> bool:
    """Whether the user is in a chat whose members may be told of them (not #general
    alone, as most users of a big server are): else a login or logout asks nothing."""
    return len(user.chats) > 1 or GENERAL not in user.chats


def _message_key(event: StoreEvent) -> Position:
    """The position of the message a gap-fill event carries (one message each)."""
    if isinstance(event, ChatPosts):
        return event.messages[0].pos
    if isinstance(event, PrivatePost):
        return event.message.pos
    return _ZERO


def _event_id(event: StoreEvent) -> tuple[str, Conv | None, Position | int]:
    """What makes a gap-fill event the same as another: reader (private), conversation,
    position."""
    if isinstance(event, ChatPosts):
        m = event.messages[0]
        return ("", m.conv, m.pos)
    if isinstance(event, PrivatePost):
        return (event.user, event.message.conv, event.message.pos)
    return ("?", None, id(event))


def _with_where(m: Message, where: str) -> Message:
    """A stored chat message carries no chat name; live ones do."""
    return Message(m.pos, m.conv, m.sender, where, m.text)
