"""Who may connect and how long they may take to log in: the one owner of those counts.

A door asks `admit` for every new connection and gets a `Ticket` (or the reason it is
refused). The ticket counts against the per-address and pending-login limits until the
door says the session logged in (`logged_in`) or the connection is gone (`release`); its
timer calls the door back if login takes longer than the login timeout.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from gateway.metrics import METRICS

__all__ = ["Admission", "Ticket"]


class Ticket:
    __slots__ = ("_address", "_admission", "_pending", "_released", "_timer")

    def __init__(self, admission: Admission, address: str, timer: asyncio.TimerHandle) -> None:
        self._admission = admission
        self._address = address
        self._timer: asyncio.TimerHandle | None = timer
        self._pending = True
        self._released = False

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


class Admission:
    def __init__(
        self,
        max_per_ip: int,
        max_pending: int,
        login_timeout: float,
        max_pending_per_ip: int = 0,
    ) -> None:
        self.max_per_ip = max_per_ip
        self.max_pending = max_pending
        self.max_pending_per_ip = max_pending_per_ip
        self.login_timeout = login_timeout
        self.per_address: Counter[str] = Counter()
        self.pending_per_address: Counter[str] = Counter()
        self.pending = 0

    def admit(self, address: str, on_timeout: Callable[[], None]) -> Ticket | str:
        """A ticket, or the text of why the connection is refused (it counts nothing)."""
        if self.max_per_ip and self.per_address[address] >= self.max_per_ip:
            return "too many connections from your address"
        if self.max_pending_per_ip and (
            self.pending_per_address[address] >= self.max_pending_per_ip
        ):
            return "too many logins in progress from your address, try again shortly"
        if self.max_pending and self.pending >= self.max_pending:
            return "server busy: too many logins in progress, try again shortly"
        self.per_address[address] += 1
        self.pending_per_address[address] += 1
        self.pending += 1
        METRICS.connections.inc()
        timer = asyncio.get_running_loop().call_later(self.login_timeout, on_timeout)
        return Ticket(self, address, timer)

    def _logged_in(self, address: str) -> None:
        self.pending -= 1
        self.pending_per_address[address] -= 1
        if self.pending_per_address[address] <= 0:
            del self.pending_per_address[address]

    def _forget(self, address: str) -> None:
        METRICS.connections.dec()
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]
