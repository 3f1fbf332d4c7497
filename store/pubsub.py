"""The gateway's single pub/sub link to Redis.

One connection per gateway, whatever the number of users, speaking RESP2 (the hiredis
RESP3 push path leaks memory per message). It parses with hiredis and hands every message
that arrived in one read to the hub as one batch, so the hub can coalesce its writes.
It reconnects with backoff by itself, resubscribes, and then tells the hub when the link
was lost so the hub can read the gap from the streams.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence

import hiredis
from redis.connection import parse_url

from store import keys
from store.contract import StoreEvent
from store.payloads import decode
from store.resp import auth_command, encode_command, open_redis

__all__ = ["PubSubLink"]

log = logging.getLogger("chat.pubsub")

Batch = list[tuple[bytes, bytes]]

#: Channels per SUBSCRIBE command when resubscribing after a reconnect: bounds one
#: command's size (a gateway may hold tens of thousands of channels).
SUBSCRIBE_CHUNK = 500
#: Seconds to wait for Redis to acknowledge a SUBSCRIBE before going on without it.
SUBSCRIBE_ACK_TIMEOUT = 5.0
#: Seconds to wait for the first connection at start.
START_TIMEOUT = 10.0
#: Backoff between connection attempts: first delay and cap, in seconds.
RECONNECT_FIRST, RECONNECT_MAX = 0.1, 5.0


class _Protocol(asyncio.Protocol):
    def __init__(self, link: PubSubLink) -> None:
        self.link = link
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

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
                if kind == b"message":
                    batch.append((reply[1], reply[2]))
                elif kind == b"subscribe":
                    link._acked(reply[1])
                elif kind == b"pong" or kind == b"unsubscribe":
                    pass
            elif isinstance(reply, hiredis.ReplyError):
                log.error("pubsub error reply: %s", reply)
        if batch:
            link.deliver(batch)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class PubSubLink:
    """The `Subscriptions` of a standalone Redis: one link that survives Redis restarts.

    Everything that arrived in one read is decoded and handed to `on_events` as one list,
    so fan-out can coalesce its writes. `on_reconnect(lost_at)` runs after every
    resubscription, so fan-out can read the gap from the streams.
    """

    def __init__(
        self,
        url: str,
        on_events: Callable[[list[StoreEvent]], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None],
    ) -> None:
        self._params = parse_url(url)  # type: ignore[no-untyped-call]
        self._on_events = on_events
        self._on_reconnect = on_reconnect
        self._on_state = on_state
        self.channels: set[bytes] = set()
        self._waiting: dict[bytes, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._proto: _Protocol | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def count(self) -> int:
        return len(self.channels)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pubsub")
        await asyncio.wait_for(self._ready.wait(), START_TIMEOUT)

    def deliver(self, batch: Batch) -> None:
        if len(batch) == 1:
            self._on_events(decode(*batch[0]))
            return
        events: list[StoreEvent] = []
        for channel, payload in batch:
            events += decode(channel, payload)
        self._on_events(events)

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
            fut = waiting.popleft()
            if not waiting:
                del self._waiting[channel]
            if not fut.done():
                fut.set_result(None)

    async def subscribe(self, channels: list[str]) -> None:
        """SUBSCRIBE (channel names are the store's business: fan-out uses `add`)."""
        new = [c.encode() for c in channels if c.encode() not in self.channels]
        if not new:
            return
        self.channels.update(new)
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            return
        await self._subscribe_on(proto, new)

    def unsubscribe(self, channels: list[str]) -> None:
        gone = [c.encode() for c in channels if c.encode() in self.channels]
        if not gone:
            return
        self.channels.difference_update(gone)
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.transport.is_closing():
            proto.transport.write(encode_command(b"UNSUBSCRIBE", *gone))

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
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            delay = RECONNECT_FIRST
            self._proto = proto
            if self.channels:
                chans = list(self.channels)
                for i in range(0, len(chans), SUBSCRIBE_CHUNK):
                    await self._subscribe_on(proto, chans[i : i + SUBSCRIBE_CHUNK])
            if lost_at is not None:
                log.info("pubsub reconnected after %.1fs", time.time() - lost_at)
                try:
                    await self._on_reconnect(lost_at)
                except Exception:
                    log.exception("gap fill after reconnect failed")
            self._on_state(True)
            self._ready.set()
            await proto.lost
            self._proto = None
            lost_at = time.time()
            for waiting in self._waiting.values():
                for fut in waiting:
                    if not fut.done():
                        fut.set_result(None)
            self._waiting.clear()
            self._on_state(False)
            log.warning("pubsub link lost; reconnecting")

    async def _subscribe_on(self, proto: _Protocol, chans: list[bytes]) -> None:
        """SUBSCRIBE and wait (a bounded time) for Redis to acknowledge every channel."""
        loop = asyncio.get_running_loop()
        futs = []
        for c in chans:
            fut = loop.create_future()
            self._waiting[c].append(fut)
            futs.append(fut)
        assert proto.transport is not None
        proto.transport.write(encode_command(b"SUBSCRIBE", *chans))
        try:
            await asyncio.wait_for(asyncio.gather(*futs), SUBSCRIBE_ACK_TIMEOUT)
        except TimeoutError:
            log.warning("subscribe not acknowledged in time: %d channels", len(chans))


def _channels(chats: Sequence[str], users: Sequence[str]) -> list[str]:
    return [keys.chat_channel(c) for c in chats] + [keys.user_channel(u) for u in users]
