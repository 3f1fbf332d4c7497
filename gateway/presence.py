"""Who is online: this gateway's heartbeat and its users' online marks in the store.

The heartbeat renews the gateway's online set every HEARTBEAT seconds with a
time-to-live of the store's PRESENCE_TTL, so a crashed gateway's users stop counting as
online by themselves; the store writes only what changed, and the beat renews a share of
the online users' last-seen times (SEEN_PASS). Any failure is logged and the next beat
tries again: a Redis error reply (out of memory, a read-only replica) must not stop
presence for good.
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
#: Seconds in which every online user's last-seen time is renewed once, a share at each
#: heartbeat (at most a quarter of the account lifetime). Renewing every online user at
#: every beat was one ZADD of all of them: 30-100 ms of Redis's only thread per gateway
#: of 16,667 users, every 5 s, which every user of every gateway waited for.
SEEN_PASS = 300.0


class Presence:
    def __init__(
        self,
        store: Store,
        users: Mapping[str, object],
        after_beat: Callable[[], Awaitable[object]] | None = None,
        account_ttl: float = 180 * 86400,
    ) -> None:
        self._store = store
        self._users = users
        #: Heartbeats per pass over the online users' last-seen times (see SEEN_PASS).
        self._shares = max(1, int(min(SEEN_PASS, account_ttl / 4) / HEARTBEAT))
        self._beats = 0
        #: Run after every periodic beat (the store-epoch check); it must not raise.
        self._after_beat = after_beat
        self._task: asyncio.Task[None] | None = None
        #: Whether the last heartbeat reached the store (reported by /healthz).
        self.ok = True
        #: Gateways whose heartbeat is current, read at every beat (--max-per-ip sums
        #: an address's connections over these).
        self.live_gateways: list[str] = []
        #: Users marked online during this loop turn, written together (`set_online`).
        self._batch: set[str] | None = None
        self._batch_done: asyncio.Future[None] | None = None
        #: Users who left during this loop turn, written together (`went_offline`).
        self._gone: set[str] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._stopped = False

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._tick(), name="presence")

    async def stop(self) -> None:
        self._stopped = True  # the loop ends even if a library swallows the cancel
        if self._task is not None:
            self._task.cancel()
        try:
            await self._store.gateway_gone()
        except Exception as exc:
            log.warning("event=presence_failed op=gateway_gone error=%s", exc)

    async def _tick(self) -> None:
        while not self._stopped:
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
        shares, share = self._shares, self._beats % self._shares
        # hash() is stable within this process: each user is in one share
        seen = [u for u in users if hash(u) % shares == share] if shares > 1 else users
        try:
            await self._store.heartbeat(users, seen)
            self._beats += 1  # a failed beat's share is tried again at the next
            self.ok = True
            # A user who left while the beat was in flight was written back as online:
            # take them out again now, not at the next beat.
            if left := users.difference(self._users):
                await self._store.set_offline_many(list(left))
            self.live_gateways = await self._store.live_gateways()
        except Exception as exc:
            self.ok = False
            METRICS.redis_errors.inc()
            log.warning("event=presence_failed op=heartbeat error=%s", exc)

    async def set_online(self, user: str) -> None:
        """Mark `user` online; the logins of one loop turn share one write (a reconnect
        storm is thousands of logins a second)."""
        done = self._batch_done
        if self._batch is None or done is None:
            loop = asyncio.get_running_loop()
            self._batch, done = set(), loop.create_future()
            self._batch_done = done
            loop.call_soon(self._write_batch)
        self._batch.add(user)
        await asyncio.shield(done)

    def _write_batch(self) -> None:
        users, done = self._batch, self._batch_done
        self._batch = self._batch_done = None
        assert done is not None
        task = asyncio.ensure_future(self._write_online(users or set(), done))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_online(self, users: set[str], done: asyncio.Future[None]) -> None:
        try:
            present = [u for u in users if u in self._users]  # left meanwhile: not online
            if present:
                await self._store.set_online_many(present)
        except Exception as exc:
            log.warning("event=presence_failed op=set_online users=%d error=%s", len(users), exc)
        finally:
            if not done.done():
                done.set_result(None)

    def went_offline(self, user: str) -> None:
        """Mark `user` offline, unless back by the time it is written: the leaves of one
        loop turn share one write, as logins do. A proxy dying in front of thousands of
        clients is thousands of leaves in a moment; with a redis-py call each, 16,000 of
        them took 2.6 s to show offline, ~200 us of the gateway's CPU each, and some timed
        out waiting for redis-py's pool (left online until the next beat)."""
        if self._gone is None:
            asyncio.get_running_loop().call_soon(self._write_gone)
            self._gone = set()
        self._gone.add(user)

    def _write_gone(self) -> None:
        users, self._gone = self._gone or set(), None
        task = asyncio.ensure_future(self._write_offline(users))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_offline(self, users: set[str]) -> None:
        try:
            gone = [u for u in users if u not in self._users]  # back meanwhile: online
            if gone:
                await self._store.set_offline_many(gone)
        except Exception as exc:
            log.warning("event=presence_failed op=set_offline users=%d error=%s", len(users), exc)
