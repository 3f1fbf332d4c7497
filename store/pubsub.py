"""The gateway's pub/sub links to Redis.

On a standalone Redis, one connection per gateway, whatever the number of users, speaking
RESP2 (the hiredis RESP3 push path leaks memory per message). It parses with hiredis and
hands every message that arrived in one read to the hub as one batch, so the hub can
coalesce its writes. It reconnects with backoff by itself, resubscribes, and then tells
the hub when the link was lost so the hub can read the gap from the streams.

On a Redis Cluster, `ShardedLinks`: one such link per master that serves a channel the
gateway needs, subscribed with SSUBSCRIBE (each channel lives in a slot, like a key, and
post scripts SPUBLISH to it on the shard they write to). A channel whose slot moved (the
server's own `sunsubscribe`, or `-MOVED` to SSUBSCRIBE) or whose master died is
subscribed again where its slot is served now, and the hub reads the gap.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence

import hiredis
from redis.connection import parse_url

from store import keys
from store.cluster import Addr, SlotMap, slot_of
from store.contract import StoreEvent, StoreUnavailable
from store.payloads import decode
from store.resp import auth_command, encode_command, open_redis

__all__ = ["PubSubLink", "ShardedLinks"]

log = logging.getLogger("chat.pubsub")

Batch = list[tuple[bytes, bytes]]

#: Channels per (UN)SUBSCRIBE command: bounds one command's size (a gateway may hold
#: tens of thousands of channels, and a reconnect storm asks for thousands in one turn).
SUBSCRIBE_CHUNK = 500
#: Seconds to wait for Redis to acknowledge a SUBSCRIBE before going on without it.
SUBSCRIBE_ACK_TIMEOUT = 5.0
#: Seconds to wait for the first connection at start.
START_TIMEOUT = 10.0
#: Backoff between connection attempts: first delay and cap, in seconds.
RECONNECT_FIRST, RECONNECT_MAX = 0.1, 5.0


class _Batch:
    """Channels sent in one write, and the callers waiting until Redis acknowledged them
    all (or a channel's slot moved, or the link was lost, or SUBSCRIBE_ACK_TIMEOUT passed).

    A login storm subscribes thousands of channels within one event-loop turn: they go
    out as one write with one timer, not a command, a timer and a gather per caller.
    Each caller waits on a future of its own, resolved with the batch: a shared future
    would be cancelled for every caller when one of them is (a client that hung up)."""

    __slots__ = ("chans", "done", "left", "timer", "waiters")

    def __init__(self) -> None:
        self.chans: list[bytes] = []
        self.left = 0
        self.waiters: list[asyncio.Future[None]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def wait(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        return fut

    def ack(self) -> None:
        """One channel acknowledged (or released: moved elsewhere)."""
        self.left -= 1
        if self.left <= 0:
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(None)
        self.waiters = []

    def expire(self) -> None:
        if not self.done:
            log.warning(
                "subscribe not acknowledged in time: %d of %d channels",
                self.left,
                len(self.chans),
            )
            self.finish()


class _Protocol(asyncio.Protocol):
    def __init__(self, link: PubSubLink) -> None:
        self.link = link
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost_at = 0.0  # unix time the connection was lost (the next gap starts there)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        batch: Batch = []
        link = self.link
        while True:
            reply = self.reader.gets()
            if reply is False:
                break
            if isinstance(reply, list) and reply:
                kind = reply[0]
                if kind == b"message" or kind == b"smessage":
                    batch.append((reply[1], reply[2]))
                elif kind == b"subscribe" or kind == b"ssubscribe":
                    link._acked(reply[1])
                elif kind == b"sunsubscribe":
                    link._unsubscribed(reply[1])
            elif isinstance(reply, hiredis.ReplyError):
                link._error(str(reply))
        if batch:
            link.deliver(batch)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost_at = time.time()
            self.lost.set_result(None)


class PubSubLink:
    """The `Subscriptions` of a standalone Redis: one link that survives Redis restarts.

    Everything that arrived in one read is decoded and handed to `on_events` as one list,
    so fan-out can coalesce its writes. `on_reconnect(lost_at)` runs after every
    resubscription, so fan-out can read the gap from the streams; what the new connection
    hears before it has returned is kept and handed over after it (`hold`).
    """

    def __init__(
        self,
        url: str,
        on_events: Callable[[list[StoreEvent]], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None],
        *,
        sharded: bool = False,
        on_moved: Callable[[PubSubLink, list[bytes]], None] | None = None,
    ) -> None:
        self._params = parse_url(url)  # type: ignore[no-untyped-call]
        self.sharded = sharded
        self._verbs = (
            (b"SSUBSCRIBE", b"SUNSUBSCRIBE") if sharded else (b"SUBSCRIBE", b"UNSUBSCRIBE")
        )
        self._on_moved = on_moved
        self.up = False
        #: Our SUNSUBSCRIBEs not yet answered, per channel (sharded links only).
        self._unsubscribing: dict[bytes, int] = {}
        self._on_events = on_events
        self._on_reconnect = on_reconnect
        self._on_state = on_state
        self.channels: set[bytes] = set()
        #: Per channel, the batches that sent it and wait for its acknowledgement, in order.
        self._waiting: dict[bytes, deque[_Batch]] = defaultdict(deque)
        #: Channels asked for in this event-loop turn, written when the turn ends.
        self._pending: _Batch | None = None
        #: Channels let go of in this event-loop turn, unsubscribed when the turn ends.
        self._leaving: list[bytes] | None = None
        self._proto: _Protocol | None = None
        #: Events heard while held (`hold`), in order; None when not held.
        self._early: list[list[StoreEvent]] | None = None
        self._holds = 0
        #: Set when a caller stopped waiting for this link's first connection (unix
        #: time it began to wait): that connection then reads the gap from then, as one
        #: after a loss does, since the caller went on as if it were subscribed.
        self.missed_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def count(self) -> int:
        return len(self.channels)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pubsub")
        async with asyncio.timeout(START_TIMEOUT):  # not wait_for (see store/resp.py)
            await self._ready.wait()

    def deliver(self, batch: Batch) -> None:
        if len(batch) == 1:
            events = decode(*batch[0])
        else:
            events = []
            for channel, payload in batch:
                events += decode(channel, payload)
        if self._early is not None:
            self._early.append(events)
            return
        self._on_events(events)

    def hold(self) -> None:
        """Keep what this link hears until as many `release`s: some of its channels were
        just (re)subscribed and their gap is about to be read. A message published just
        after a SUBSCRIBE was acknowledged can be read with the acknowledgement, before
        the gap read starts: handed over at once, it reached fan-out ahead of the gap
        (shown before older messages of other chats; in its own chat it moved fan-out's
        last id past the gap, whose messages were then never shown)."""
        self._holds += 1
        if self._early is None:
            self._early = []

    def release(self) -> None:
        """Undo one `hold`; the last one hands over what was heard, in the order heard."""
        assert self._holds > 0, "a release without its hold"
        self._holds -= 1
        if self._holds:
            return
        early, self._early = self._early or [], None
        for events in early:
            try:
                self._on_events(events)
            except Exception:  # logged; the link goes on
                log.exception("delivery after a gap read failed")

    async def add(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None:
        await self.subscribe(_channels(chats, users))

    def remove(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None:
        self.unsubscribe(_channels(chats, users))

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._proto and self._proto.transport:
            self._proto.transport.close()

    def _acked(self, channel: bytes) -> None:
        waiting = self._waiting.get(channel)
        if waiting:
            batch = waiting.popleft()
            if not waiting:
                del self._waiting[channel]
            batch.ack()

    def _unsubscribed(self, channel: bytes) -> None:
        """A sunsubscribe: the reply to ours (counted when sent: the channel may have
        been added again since), or the server's own when the channel's slot moved to
        another shard: then it must be subscribed there."""
        pending = self._unsubscribing.get(channel, 0)
        if pending:
            if pending == 1:
                del self._unsubscribing[channel]
            else:
                self._unsubscribing[channel] = pending - 1
            return
        if channel in self.channels and self._on_moved is not None:
            self.channels.discard(channel)
            self._on_moved(self, [channel])

    def _error(self, text: str) -> None:
        """An error reply; `-MOVED slot host:port` to SSUBSCRIBE: the slot is served
        elsewhere, so its channels move (and their waiters stop waiting)."""
        if not text.startswith("MOVED ") or self._on_moved is None:
            log.error("pubsub error reply: %s", text)
            return
        slot = int(text.split(" ")[1])
        moved = [c for c in self.channels if slot_of(c) == slot]
        self.channels.difference_update(moved)
        for c in [c for c in self._waiting if slot_of(c) == slot]:
            for batch in self._waiting.pop(c):
                batch.ack()
        if moved:
            self._on_moved(self, moved)

    async def subscribe(self, channels: list[str] | list[bytes]) -> None:
        """SUBSCRIBE (channel names are the store's business: fan-out uses `add`).

        Returns once Redis acknowledged the channels (or SUBSCRIBE_ACK_TIMEOUT passed),
        at once when the link is down: the reconnect subscribes them. What every caller
        asks for in one event-loop turn goes out as one write (`_Batch`)."""
        acked = self.want(channels)
        if acked is not None:
            await acked

    def want(self, channels: list[str] | list[bytes]) -> asyncio.Future[None] | None:
        """`subscribe`'s bookkeeping, done now (a leave later in this turn finds the
        channels wanted, and undoes them in order); returns what to wait on, if anything."""
        wanted = [c if isinstance(c, bytes) else c.encode() for c in channels]
        new = [c for c in dict.fromkeys(wanted) if c not in self.channels]
        if not new:
            return None
        self.channels.update(new)
        if self._leaving:  # an UNSUBSCRIBE asked for before this goes first
            self._flush_leaving()
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            return None
        batch = self._pending
        if batch is None:
            asyncio.get_running_loop().call_soon(self._flush)
            batch = self._pending = _Batch()
        batch.chans += new
        return batch.wait()

    def unsubscribe(self, channels: list[str] | list[bytes]) -> None:
        """UNSUBSCRIBE, written when the event-loop turn ends with every other one asked
        for in it (thousands of users who drop at once were a write each)."""
        wanted = [c if isinstance(c, bytes) else c.encode() for c in channels]
        gone = [c for c in dict.fromkeys(wanted) if c in self.channels]
        if not gone:
            return
        self.channels.difference_update(gone)
        # Writes stay in call order, so that a channel unsubscribed and subscribed again
        # in one turn ends subscribed: the SUBSCRIBEs asked for before go first, and a
        # SUBSCRIBE asked for after writes these first (`subscribe`).
        self._flush()
        if self.sharded:  # counted now, before the server's own sunsubscribe can come
            for c in gone:
                self._unsubscribing[c] = self._unsubscribing.get(c, 0) + 1
        if self._leaving is None:
            asyncio.get_running_loop().call_soon(self._flush_leaving)
            self._leaving = []
        self._leaving += gone

    def _flush_leaving(self) -> None:
        """Write the UNSUBSCRIBEs asked for in this turn; without a link, none is needed
        (the reconnect subscribes only the channels still wanted), and no reply comes."""
        gone, self._leaving = self._leaving, None
        if not gone:
            return
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            for c in gone if self.sharded else ():
                pending = self._unsubscribing.get(c, 0)  # cleared if the link was lost
                if pending > 1:
                    self._unsubscribing[c] = pending - 1
                elif pending:
                    del self._unsubscribing[c]
            return
        proto.transport.write(self._commands(self._verbs[1], gone))

    def _flush(self) -> None:
        """Write the SUBSCRIBEs asked for in this turn (if still wanted: a channel's slot
        may have moved meanwhile); without a link, release their callers."""
        batch, self._pending = self._pending, None
        if batch is None:
            return
        batch.chans = [c for c in batch.chans if c in self.channels]
        proto = self._proto
        if (
            not batch.chans
            or proto is None
            or proto.transport is None
            or proto.transport.is_closing()
        ):
            batch.finish()
            return
        self._send(proto, batch)

    async def _connect(self) -> _Protocol:
        proto = await open_redis(self._params, lambda: _Protocol(self), 5)
        auth = auth_command(self._params)
        if auth and proto.transport is not None:
            proto.transport.write(encode_command(*auth))
        return proto

    async def _run(self) -> None:
        delay = RECONNECT_FIRST
        lost_at: float | None = None
        while True:
            try:
                proto = await self._connect()
            except (OSError, TimeoutError) as exc:
                log.warning("pubsub connect failed: %s; retrying in %.1fs", exc, delay)
                if self.sharded:  # a dead master: its channels may have a new home
                    self._on_state(False)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            delay = RECONNECT_FIRST
            self.hold()  # before any SUBSCRIBE can go out on it: a gap may be read first
            self._proto = proto
            try:
                await self._resubscribe(proto)
                if lost_at is None and self.missed_since is not None:
                    lost_at, self.missed_since = self.missed_since, None  # see there
                if lost_at is not None:
                    log.info("pubsub reconnected after %.1fs", time.time() - lost_at)
                    try:
                        await self._on_reconnect(lost_at)
                    except Exception:
                        log.exception("gap fill after reconnect failed")
            finally:
                self.release()  # after the gap, what was heard, in the order it came
            self.up = True
            self._on_state(True)
            self._ready.set()
            await proto.lost
            self.up = False
            self._proto = None
            lost_at = proto.lost_at  # not now: it may have been lost while resubscribing
            for waiting in self._waiting.values():
                for batch in waiting:
                    batch.finish()
            self._waiting.clear()
            self._unsubscribing.clear()  # no reply comes on a lost connection
            self._on_state(False)
            log.warning("pubsub link lost; reconnecting")

    async def _resubscribe(self, proto: _Protocol) -> None:
        """Subscribe every channel on a new connection, a chunk at a time."""
        chans = list(self.channels)
        for i in range(0, len(chans), SUBSCRIBE_CHUNK):
            if proto.lost.done():  # no acknowledgement comes: the next connection does it
                return
            batch = _Batch()
            # still wanted: a leave while the chunks before were acknowledged has written
            # its UNSUBSCRIBE already, and would be undone
            batch.chans = [c for c in chans[i : i + SUBSCRIBE_CHUNK] if c in self.channels]
            if not batch.chans:
                continue
            done = batch.wait()
            self._send(proto, batch)
            await asyncio.wait((done, proto.lost), return_when=asyncio.FIRST_COMPLETED)

    def _send(self, proto: _Protocol, batch: _Batch) -> None:
        """SUBSCRIBE the batch's channels in one write; it is done when Redis acknowledged
        every channel, or after SUBSCRIBE_ACK_TIMEOUT (one timer for the whole batch)."""
        for c in batch.chans:
            self._waiting[c].append(batch)
        batch.left = len(batch.chans)
        batch.timer = asyncio.get_running_loop().call_later(SUBSCRIBE_ACK_TIMEOUT, batch.expire)
        assert proto.transport is not None
        proto.transport.write(self._commands(self._verbs[0], batch.chans))

    def _commands(self, verb: bytes, chans: list[bytes]) -> bytes:
        """One (UN)SUBSCRIBE per SUBSCRIBE_CHUNK channels; sharded, per slot: a cluster
        refuses an SSUBSCRIBE or SUNSUBSCRIBE of channels in several slots (CROSSSLOT)."""
        if not self.sharded:
            groups: Iterable[list[bytes]] = (chans,)
        else:
            by_slot: dict[int, list[bytes]] = defaultdict(list)
            for c in chans:
                by_slot[slot_of(c)].append(c)
            groups = by_slot.values()
        return b"".join(
            encode_command(verb, *cs[i : i + SUBSCRIBE_CHUNK])
            for cs in groups
            for i in range(0, len(cs), SUBSCRIBE_CHUNK)
        )


#: Seconds between looks at the slot map while a lost master's channels have no new home.
REHOME_EVERY = 0.25


class ShardedLinks:
    """The `Subscriptions` of a Redis Cluster: a `PubSubLink` (SSUBSCRIBE) per master that
    serves one of the gateway's channels, each channel on its slot's master.

    When a link goes down, its channels wait on it while its master is still named for
    their slots (a restart or a blip: the link resubscribes and reads the gap itself);
    once a replica has taken the slots over they are subscribed there and the gap is read.
    A channel whose slot moved while the link stayed up follows it the same way."""

    def __init__(
        self,
        slots: SlotMap,
        on_events: Callable[[list[StoreEvent]], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None],
    ) -> None:
        self.slots = slots
        self._on_events = on_events
        self._on_reconnect = on_reconnect
        self._on_state = on_state
        self.links: dict[Addr, PubSubLink] = {}
        self._rehoming: dict[PubSubLink, asyncio.Task[None]] = {}
        self._moved: list[bytes] = []
        self._moving: asyncio.Task[None] | None = None
        self._up = True

    @property
    def count(self) -> int:
        return sum(link.count for link in self.links.values())

    async def start(self) -> None:
        if not any(self.slots.owner):
            await self.slots.refresh()

    async def close(self) -> None:
        for task in [*self._rehoming.values(), self._moving]:
            if task is not None:
                task.cancel()
        for link in list(self.links.values()):
            await link.close()

    async def add(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None:
        await self._subscribe([c.encode() for c in _channels(chats, users)])

    def remove(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None:
        gone = {c.encode() for c in _channels(chats, users)}
        self._moved = [c for c in self._moved if c not in gone]
        for link in self.links.values():
            link.unsubscribe([c for c in gone if c in link.channels])

    async def _subscribe(self, channels: list[bytes], held: list[PubSubLink] | None = None) -> None:
        """Subscribe each channel on its slot's master (a link started there if need be).
        `held`: each link they go to is held (`PubSubLink.hold`) and added to it before
        its SSUBSCRIBE is sent, for the caller to release once their gap is read."""
        by_node: dict[Addr, list[bytes]] = {}
        for c in channels:
            addr = self.slots.node(slot_of(c))
            if addr is None:  # no master for it yet: try again when the map says one
                self._later([c])
                continue
            by_node.setdefault(addr, []).append(c)
        links = [(self._link(a), cs) for a, cs in by_node.items()]
        if held is not None:
            for link, _ in links:
                link.hold()
                held.append(link)
        # every link's bookkeeping now, in this turn (a gather of `subscribe`s ran them a
        # turn later, after a leave in this turn had found nothing to undo)
        acks = [acked for link, cs in links if (acked := link.want(cs)) is not None]
        if len(acks) == 1:
            await acks[0]
        elif acks:
            await asyncio.gather(*acks)
        # a link made just now subscribes once connected: wait for that too (bounded), so
        # that what is published after `add` returned arrives, as on a live link
        waiting = [link for link, _ in links if not link._ready.is_set()]
        if waiting:
            await asyncio.gather(*(_connected(link) for link in waiting))

    def _link(self, addr: Addr) -> PubSubLink:
        link = self.links.get(addr)
        if link is None:
            link = PubSubLink(
                self.slots.seeds.url(addr),
                self._on_events,
                self._on_reconnect,
                self._on_state,  # replaced below: the state is this link's
                sharded=True,
                on_moved=self._channels_moved,
            )
            made = link
            link._on_state = lambda up: self._link_state(made, up)
            self.links[addr] = link
            link._task = asyncio.get_running_loop().create_task(link._run(), name=f"pubsub {addr}")
        return link

    def _link_state(self, link: PubSubLink, up: bool) -> None:
        if not up and link not in self._rehoming:
            lost_at = time.time()
            task = asyncio.get_running_loop().create_task(self._rehome(link, lost_at))
            self._rehoming[link] = task
            task.add_done_callback(lambda _: self._rehoming.pop(link, None))
        now_up = all(li.up or not li.channels for li in self.links.values())
        if now_up != self._up:
            self._up = now_up
            self._on_state(now_up)

    async def _rehome(self, link: PubSubLink, lost_at: float) -> None:
        """While `link` is down, move its channels to wherever their slots are served now;
        when some moved, read the gap (the link reads it itself if it comes back)."""
        while not link.up and link.channels:
            try:
                await self.slots.refresh()
            except StoreUnavailable as exc:
                log.warning("event=slot_map_refresh_failed error=%s", exc)
                await asyncio.sleep(REHOME_EVERY)
                continue
            addr = next((a for a, li in self.links.items() if li is link), None)
            moved = [c for c in link.channels if self.slots.node(slot_of(c)) != addr]
            if moved:
                link.channels.difference_update(moved)
                log.warning("event=pubsub_failover channels=%d from=%s", len(moved), addr)
                await self._follow(moved, lost_at, "a failover")
            if not link.channels and addr is not None:
                self.links.pop(addr, None)
                await link.close()
                self._link_state(link, True)
                return
            await asyncio.sleep(REHOME_EVERY)

    def _channels_moved(self, link: PubSubLink, channels: list[bytes]) -> None:
        self._later(channels)

    def _later(self, channels: list[bytes]) -> None:
        self._moved += channels
        if self._moving is None or self._moving.done():
            self._moving = asyncio.get_running_loop().create_task(self._move())

    async def _move(self) -> None:
        """Subscribe channels whose slot moved at their new master, then read the gap."""
        lost_at = time.time()
        while self._moved:
            try:
                await self.slots.refresh()
            except StoreUnavailable as exc:
                log.warning("event=slot_map_refresh_failed error=%s", exc)
                await asyncio.sleep(REHOME_EVERY)
                continue
            todo = [c for c in self._moved if self.slots.node(slot_of(c)) is not None]
            if not todo:
                await asyncio.sleep(REHOME_EVERY)
                continue
            self._moved = [c for c in self._moved if c not in set(todo)]
            log.info("event=pubsub_slot_moved channels=%d", len(todo))
            await self._follow(todo, lost_at - 1, "a slot moved")
            if self._moved:  # sent back (-MOVED: the map was behind): not in a tight loop
                await asyncio.sleep(REHOME_EVERY)

    async def _follow(self, channels: list[bytes], lost_at: float, why: str) -> None:
        """Subscribe channels that changed master, then read their gap; what the links
        they went to hear meanwhile is held until the gap is read (`PubSubLink.hold`)."""
        held: list[PubSubLink] = []
        try:
            await self._subscribe(channels, held)
            try:
                await self._on_reconnect(lost_at)
            except Exception:
                log.exception("gap fill after %s failed", why)
        finally:
            for link in held:
                link.release()


async def _connected(link: PubSubLink) -> None:
    """Wait until a new link first connected and subscribed (a link that was up once
    and is down now is not waited for: it reads the gap itself when it is back). If it
    is not up in time, its first connection reads the gap from when this wait began
    (`missed_since`)."""
    began = time.time()
    try:
        async with asyncio.timeout(SUBSCRIBE_ACK_TIMEOUT):  # not wait_for (store/resp.py)
            await link._ready.wait()
    except TimeoutError:
        log.warning("pubsub link not up in time; its channels follow when it is")
        if not link._ready.is_set() and (link.missed_since is None or began < link.missed_since):
            link.missed_since = began  # the earliest caller's: later ones' gaps are inside


def _channels(chats: Sequence[str], users: Sequence[str]) -> list[str]:
    return [keys.chat_channel(c) for c in chats] + [keys.user_channel(u) for u in users]
