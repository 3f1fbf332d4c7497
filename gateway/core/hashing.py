"""Password hashing for the whole gateway: a few threads behind one bounded queue.

scrypt costs tens of milliseconds of a core and 16 MiB on purpose, so hashing is the one
thing a crowd of logins can exhaust. One `Hasher` owns it: at most `threads` hashes run, at
most `max_pending` wait or run (beyond that `HashBusy`: the login says "server busy" and
may retry), and a job whose connection closed while it waited is dropped before it starts
(`HashGone`): nobody hashes for a connection that is no longer there.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.core.passwords import hash_password, verify_password

__all__ = ["HashBusy", "HashGone", "Hasher"]

T = TypeVar("T")


class HashBusy(Exception):
    """Too many hashes waiting: try again shortly."""


class HashGone(Exception):
    """The connection closed before its hash started; nothing was computed."""


#: Niceness of the hashing threads (Linux: per thread): under a storm of password logins
#: the event loops of this and the other gateways on the machine keep the CPU, so chat
#: users do not wait behind scrypt (measured: 4 s delays during a 16,666-user storm).
HASH_NICE = 10


def _lower_priority() -> None:
    """Run in each hashing thread as it starts (a ThreadPoolExecutor initializer)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: full priority
        pass


class Hasher:
    def __init__(self, threads: int, max_pending: int) -> None:
        self.threads = threads
        self.max_pending = max_pending
        self._executor: ThreadPoolExecutor | None = None
        self._running = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def pending(self) -> int:
        return self._running + len(self._waiting)

    @property
    def full(self) -> bool:
        """Whether a job asked now would get `HashBusy`."""
        return self.pending >= self.max_pending

    async def hash(self, password: str, log_n: int, alive: Callable[[], bool]) -> str:
        return await self._run(alive, hash_password, password, log_n)

    async def verify(self, password: str, stored: str, alive: Callable[[], bool]) -> bool:
        return await self._run(alive, verify_password, password, stored)

    async def _run(self, alive: Callable[[], bool], fn: Callable[..., T], *args: object) -> T:
        if self.full:
            raise HashBusy
        if self._running < self.threads:
            self._running += 1
        else:
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn  # `_done` hands this job a running slot
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._done()
                else:
                    self._waiting.remove(turn)
                raise
        if not alive():
            self._done()
            raise HashGone
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.threads, thread_name_prefix="hash", initializer=_lower_priority
            )
        job = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        job.add_done_callback(lambda _: self._done())  # the slot is free when the thread is
        return await asyncio.shield(job)

    def _done(self) -> None:
        """A running slot is free: give it to the next waiting job, if any."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._running -= 1
