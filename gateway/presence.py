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
from collections.abc import Awaitable, Callable, Mapping, Sequence

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
        self._writes: set[asyncio.Task[None]] = set()
        self._online = _TurnWrite(True, users, store.set_online_many, self._writes)
        self._offline = _TurnWrite(False, users, store.set_offline_many, self._writes)
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
        """Mark `user` online; returns once written (with the rest of this turn's logins)."""
        await asyncio.shield(self._online.add(user))

    def went_offline(self, user: str) -> None:
        """Mark `user` offline, unless back by the time it is written (with the rest of
        this turn's leaves)."""
        self._offline.add(user)


class _TurnWrite:
    """The users marked online (or offline) during one event-loop turn, written by one
    store call when it ends: a reconnect storm is thousands of logins a second, and a
    proxy dying in front of thousands of clients thousands of leaves in a moment (with a
    redis-py call each, 16,000 leaves took 2.6 s to show offline and ~200 us of the
    gateway's CPU each, and some timed out waiting for redis-py's pool). A user whose
    state changed again before the write (left, or back) is left out of it: that change
    decides."""

    __slots__ = ("_done", "_online", "_present", "_tasks", "_users", "_write")

    def __init__(
        self,
        online: bool,
        present: Mapping[str, object],
        write: Callable[[Sequence[str]], Awaitable[None]],
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self._online, self._present, self._write, self._tasks = online, present, write, tasks
        self._users: set[str] = set()
        self._done: asyncio.Future[None] | None = None

    def add(self, user: str) -> asyncio.Future[None]:
        """Add `user` to this turn's write; done once it is written (or failed)."""
        if self._done is None:
            loop = asyncio.get_running_loop()
            loop.call_soon(self._flush)
            self._done = loop.create_future()
        self._users.add(user)
        return self._done

    def _flush(self) -> None:
        users, done = self._users, self._done
        self._users, self._done = set(), None
        assert done is not None
        task = asyncio.ensure_future(self._run(users, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, users: set[str], done: asyncio.Future[None]) -> None:
        try:
            still = [u for u in users if (u in self._present) == self._online]
            if still:
                await self._write(still)
        except Exception as exc:
            op = "set_online" if self._online else "set_offline"
            log.warning("event=presence_failed op=%s users=%d error=%s", op, len(users), exc)
        finally:
            if not done.done():
                done.set_result(None)
