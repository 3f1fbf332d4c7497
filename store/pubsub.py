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
from collections.abc import Awaitable, Callable

import hiredis
from redis.connection import parse_url

from store.resp import auth_command, encode_command, open_redis

__all__ = ["PubSubLink"]

log = logging.getLogger("chat.pubsub")

Batch = list[tuple[bytes, bytes]]


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
            link.on_messages(batch)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class PubSubLink:
    """Subscriptions that survive Redis restarts.

    `subscribe` resolves once Redis has acknowledged, so anything published after it
    returns reaches `on_messages`. While the link is down, subscribe records the channel
    and returns at once; `on_reconnect(lost_at)` runs after every resubscription.
    """

    def __init__(
        self,
        url: str,
        on_messages: Callable[[Batch], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        *,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self._params = parse_url(url)
        self.on_messages = on_messages
        self._on_reconnect = on_reconnect
        self._on_state = on_state
        self.channels: set[bytes] = set()
        self._waiting: dict[bytes, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._proto: _Protocol | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._proto is not None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pubsub")
        await asyncio.wait_for(self._ready.wait(), 10)

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
        delay = 0.1
        lost_at: float | None = None
        while True:
            try:
                proto = await self._connect()
            except (OSError, TimeoutError) as exc:
                log.warning("pubsub connect failed: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            self._proto = proto
            if self.channels:
                chans = list(self.channels)
                for i in range(0, len(chans), 500):
                    await self._subscribe_on(proto, chans[i : i + 500])
            if lost_at is not None:
                self.reconnects += 1
                log.info("pubsub reconnected after %.1fs", time.time() - lost_at)
                try:
                    await self._on_reconnect(lost_at)
                except Exception:
                    log.exception("gap fill after reconnect failed")
            if self._on_state:
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
            if self._on_state:
                self._on_state(False)
            log.warning("pubsub link lost; reconnecting")

    async def _subscribe_on(self, proto: _Protocol, chans: list[bytes]) -> None:
        """SUBSCRIBE and wait (at most 5 s) for Redis to acknowledge every channel."""
        loop = asyncio.get_running_loop()
        futs = []
        for c in chans:
            fut = loop.create_future()
            self._waiting[c].append(fut)
            futs.append(fut)
        assert proto.transport is not None
        proto.transport.write(encode_command(b"SUBSCRIBE", *chans))
        try:
            await asyncio.wait_for(asyncio.gather(*futs), 5)
        except TimeoutError:
            log.warning("subscribe not acknowledged in time: %d channels", len(chans))
