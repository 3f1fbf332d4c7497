"""Who is online: this gateway's heartbeat and its users' online marks in the store.

The heartbeat rewrites the gateway's whole online set every HEARTBEAT seconds with a
time-to-live of the store's PRESENCE_TTL, so a crashed gateway's users stop counting as
online by themselves. Any failure is logged and the next beat tries again: a Redis error
reply (out of memory, a read-only replica) must not stop presence for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from gateway.metrics import METRICS
from store.contract import Store

__all__ = ["HEARTBEAT", "Presence"]

log = logging.getLogger("chat.presence")

#: Seconds between heartbeats; well under the store's presence time-to-live (15 s).
HEARTBEAT = 5.0
#: Expired accounts forgotten per heartbeat by each gateway: the sweep's cost per beat is
#: bounded (about 0.1 ms of Redis each) and still outruns the registration limit.
FORGET_STEP = 100


class Presence:
    def __init__(
        self,
        store: Store,
        users: Mapping[str, object],
        after_beat: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._store = store
        self._users = users
        #: Run after every periodic beat (the store-epoch check); it must not raise.
        self._after_beat = after_beat
        self._task: asyncio.Task[None] | None = None
        #: Whether the last heartbeat reached the store (reported by /healthz).
        self.ok = True
        #: Gateways whose heartbeat is current, read at every beat (--max-per-ip sums
        #: an address's connections over these).
        self.live_gateways: list[str] = []

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._tick(), name="presence")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        try:
            await self._store.gateway_gone()
        except Exception as exc:
            log.warning("event=presence_failed op=gateway_gone error=%s", exc)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            await self.beat()
            if self._after_beat is not None:
                await self._after_beat()
            await self.sweep()

    async def sweep(self) -> None:
        """Forget one bounded step of accounts unseen for the account lifetime."""
        try:
            gone = await self._store.forget_unseen(FORGET_STEP)
            if gone:
                log.info("event=accounts_expired count=%d", gone)
        except Exception as exc:
            log.warning("event=presence_failed op=forget_unseen error=%s", exc)

    async def beat(self) -> None:
        users = set(self._users)
        try:
            await self._store.heartbeat(users)
            self.ok = True
            # A user who left while the beat was in flight was written back as online:
            # take them out again now, not at the next beat.
            for user in users.difference(self._users):
                await self._mark(user, False)
            self.live_gateways = await self._store.live_gateways()
        except Exception as exc:
            self.ok = False
            METRICS.redis_errors.inc()
            log.warning("event=presence_failed op=heartbeat error=%s", exc)

    async def set_online(self, user: str) -> None:
        await self._mark(user, True)

    async def set_offline(self, user: str) -> None:
        await self._mark(user, False)

    async def _mark(self, user: str, online: bool) -> None:
        if (user in self._users) != online:  # changed again meanwhile: that call decides
            return
        try:
            await self._store.set_online(user, online)
        except Exception as exc:
            log.warning("event=presence_failed op=set_online user=%s error=%s", user, exc)
