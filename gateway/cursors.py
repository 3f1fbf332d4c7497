"""Shown positions, flushed: what each local user was shown reaches the store.

Positions are kept per user in memory (`LocalUser.mark_shown`) and written every `interval`
seconds, when a user's last session on this gateway closes, and on shutdown. A failed
write is tried again on the next tick, whatever the error was: one bad reply must not stop
every later flush.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from gateway.core.user import LocalUser
from gateway.metrics import METRICS
from store.contract import Conv, Position, Store

__all__ = ["Cursors"]

log = logging.getLogger("chat.cursors")

#: Users whose positions one periodic flush writes at most (round robin over the local
#: users): in a 50,000-member chat every user moves with every message, and writing all
#: of a gateway's 16,667 each second cost 250 ms of its CPU and 140 ms of Redis'. Past
#: this, a SIGKILLed gateway shows up to (local users / FLUSH_MAX) flushes again (never
#: loses any; client.py drops what it already showed). Closing users, shutdown: all.
FLUSH_MAX = 4000


class Cursors:
    def __init__(self, store: Store, users: Mapping[str, LocalUser], interval: float) -> None:
        self._store = store
        self._users = users
        self._interval = interval
        #: Positions of users who left this gateway, not yet written.
        self._gone: dict[str, dict[Conv, Position]] = {}
        self._task: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._start = 0  # where the next bounded flush starts in the users' order

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick(), name="cursors")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._flushes:
            await asyncio.wait(list(self._flushes), timeout=2)
        await self.flush()

    def flush_gone(self, user: LocalUser) -> None:
        """The user's last session here closed: write their positions soon."""
        shown = user.flushed()
        if shown is not None:
            self._gone[user.key] = shown
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        task = asyncio.ensure_future(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush(FLUSH_MAX)

    async def flush(self, limit: int | None = None) -> None:
        """Write the positions of users who left and of dirty local users: all of them, or
        at most `limit` local users, taking turns (the next flush starts after the last)."""
        updates, self._gone = self._gone, {}
        users = list(self._users.values())
        count = len(users)
        start = self._start % count if count and limit is not None else 0
        taken = 0
        for k in range(count):
            user = users[(start + k) % count]
            shown = user.flushed()
            if shown is not None:
                updates[user.key] = shown
                taken += 1
                if limit is not None and taken >= limit:
                    self._start = start + k + 1
                    break
        if not updates:
            return
        try:
            await self._store.advance_cursors(updates)
        except Exception as exc:  # keep them for the next tick
            METRICS.redis_errors.inc()
            log.warning("event=cursor_flush_failed users=%d error=%s", len(updates), exc)
            for key, shown in updates.items():
                still = self._users.get(key)
                if still is not None:
                    still.flush_failed()
                else:
                    self._gone.setdefault(key, shown)
