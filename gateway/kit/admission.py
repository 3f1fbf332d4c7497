"""Who may connect and how long they may take to log in: the one owner of those counts.

A door asks `admit` for every new connection and gets a `Ticket` (or the reason it is
refused). The ticket counts against the per-address and pending-login limits until the
door says the session logged in (`logged_in`) or the connection is gone (`release`); its
timer calls the door back if login takes longer than the login timeout.

`--max-per-ip` holds over every gateway: the local count refuses at once, and the
connection is also counted in the store (`count`); if the address has more than the
limit on all live gateways together, the door's `on_refused` is called a moment later.
If the store cannot be asked, the connection stays (the local limit still holds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from gateway.metrics import METRICS

log = logging.getLogger("chat.admission")

#: Counts a connection from an address (+1 opened, -1 closed) over all gateways; returns
#: the address's connections on every live gateway after the change.
GlobalCount = Callable[[str, int], Awaitable[int]]

__all__ = ["FULL", "REFUSAL_LOG_EVERY", "Admission", "Ticket"]

#: Seconds between two `event=refused` lines: a full gateway in a reconnect storm refuses
#: thousands of connections a second, and writing each line cost a third of the refusal.
#: The line after a quiet spell says how many were not logged (`suppressed=`).
REFUSAL_LOG_EVERY = 1.0

#: Why a connection over `max_connections` is refused; "busy" tells clients (client.py,
#: the load generator) to try another server.
FULL = "server busy: this gateway is full, try another one"


class Ticket:
    __slots__ = ("_address", "_admission", "_counted", "_pending", "_released", "_timer")

    def __init__(self, admission: Admission, address: str, timer: asyncio.TimerHandle) -> None:
        self._admission = admission
        self._address = address
        self._timer: asyncio.TimerHandle | None = timer
        self._pending = True
        self._released = False
        self._counted = False  # counted in the store: uncount on release

    def logged_in(self) -> None:
        """Stop counting as a pending login; the login timer is cancelled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            self._pending = False
            self._admission._logged_in(self._address)

    def release(self) -> None:
        """The connection is gone (idempotent)."""
        self.logged_in()
        if not self._released:
            self._released = True
            self._admission._forget(self._address)
            if self._counted:
                self._admission._uncount(self._address)


class Admission:
    def __init__(
        self,
        max_per_ip: int,
        max_pending: int,
        login_timeout: float,
        max_pending_per_ip: int = 0,
        count: GlobalCount | None = None,
        max_connections: int = 0,
    ) -> None:
        self.max_per_ip = max_per_ip
        #: Open connections at most on this gateway (0: no limit), and how many are open.
        self.max_connections = max_connections
        self.open = 0
        self._count = count
        self._tasks: set[asyncio.Task[None]] = set()
        self.max_pending = max_pending
        self.max_pending_per_ip = max_pending_per_ip
        self.login_timeout = login_timeout
        self.per_address: Counter[str] = Counter()
        self.pending_per_address: Counter[str] = Counter()
        self.pending = 0
        self._refusal_log_at = 0.0  # monotonic time the next refusal may be logged
        self._refusals_unlogged = 0

    def log_refused(self, reason: str, peer: str, door: str = "line") -> None:
        """Log a refused connection, at most once a REFUSAL_LOG_EVERY (see there)."""
        now = time.monotonic()
        if now < self._refusal_log_at:
            self._refusals_unlogged += 1
            return
        log.warning(
            "event=refused door=%s reason=%r peer=%s suppressed=%d",
            door,
            reason,
            peer,
            self._refusals_unlogged,
        )
        self._refusals_unlogged = 0
        self._refusal_log_at = now + REFUSAL_LOG_EVERY

    def admit(
        self,
        address: str,
        on_timeout: Callable[[], None],
        on_refused: Callable[[str], None] | None = None,
    ) -> Ticket | str:
        """A ticket, or the text of why the connection is refused (it counts nothing).
        `on_refused(text)` is called later if the address is over `--max-per-ip` on all
        gateways together."""
        if self.max_connections and self.open >= self.max_connections:
            return FULL
        if self.max_per_ip and self.per_address[address] >= self.max_per_ip:
            return "too many connections from your address"
        if self.max_pending_per_ip and (
            self.pending_per_address[address] >= self.max_pending_per_ip
        ):
            return "too many logins in progress from your address, try again shortly"
        if self.max_pending and self.pending >= self.max_pending:
            return "server busy: too many logins in progress, try again shortly"
        self.open += 1
        self.per_address[address] += 1
        self.pending_per_address[address] += 1
        self.pending += 1
        METRICS.connections.inc()
        timer = asyncio.get_running_loop().call_later(self.login_timeout, on_timeout)
        ticket = Ticket(self, address, timer)
        if self._count is not None and self.max_per_ip and on_refused is not None:
            self._spawn(self._count_everywhere(ticket, on_refused))
        return ticket

    async def _count_everywhere(self, ticket: Ticket, on_refused: Callable[[str], None]) -> None:
        assert self._count is not None
        try:
            total = await self._count(ticket._address, 1)
        except Exception as exc:  # the store is down: the local limit still holds
            log.warning("event=address_count_failed peer=%s error=%s", ticket._address, exc)
            return
        ticket._counted = True
        if ticket._released:  # closed while it was counted
            self._uncount(ticket._address)
        elif total > self.max_per_ip:
            log.warning("event=refused reason=per_ip_all_gateways peer=%s", ticket._address)
            on_refused("too many connections from your address")

    def _uncount(self, address: str) -> None:
        if self._count is not None:
            self._spawn(self._uncount_now(address))

    async def _uncount_now(self, address: str) -> None:
        assert self._count is not None
        try:
            await self._count(address, -1)
        except Exception as exc:
            log.warning("event=address_count_failed peer=%s error=%s", address, exc)

    def stop_counting(self) -> None:
        """The gateway is shutting down: count nothing more in the store (it leaves the
        live list, so its counts stop counting anyway) and drop the counts in flight, so
        none of them meets the store closing under it."""
        self._count = None
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _logged_in(self, address: str) -> None:
        self.pending -= 1
        self.pending_per_address[address] -= 1
        if self.pending_per_address[address] <= 0:
            del self.pending_per_address[address]

    def _forget(self, address: str) -> None:
        METRICS.connections.dec()
        self.open -= 1
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]
