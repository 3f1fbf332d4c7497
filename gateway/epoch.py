"""Did Redis lose its data? The store's epoch, and what a gateway does when it changed.

A Redis restarted without persistence, or a replica promoted after missing writes, is
empty (or behind) while the gateways still hold logged-in users who are "in" chats that the
store no longer knows: every post would be refused as not-a-member until they reconnect.
At first start the gateways agree (SET NX) on a random epoch stored in Redis and each
remembers it; when a later check finds it changed or gone, a new one is claimed the same
way and the gateway re-asserts what it knows (fan-out's `on_reset`). The check is one
round trip, run after every pub/sub reconnect and after every presence heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from gateway.metrics import METRICS
from store.contract import Store

__all__ = ["Epoch"]

log = logging.getLogger("chat.epoch")


class Epoch:
    def __init__(self, store: Store, on_reset: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._on_reset = on_reset
        #: The epoch this gateway's state belongs to; None until the first check.
        self.value: str | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> bool:
        """Whether a reset was found and handled now. Never raises: a failed check (Redis
        down or refusing) is logged and the next one tries again; a failed re-assert
        leaves the old epoch remembered, so the next check re-asserts again."""
        if self._lock.locked():  # one check at a time; the running one answers
            return False
        async with self._lock:
            try:
                current = await self._store.claim_epoch(uuid.uuid4().hex)
                if self.value is None or current == self.value:
                    self.value = current
                    return False
                log.warning("event=store_reset old_epoch=%s new_epoch=%s", self.value, current)
                await self._on_reset()
                self.value = current
                return True
            except Exception as exc:
                METRICS.redis_errors.inc()
                log.warning("event=epoch_check_failed error=%s", exc)
                return False
