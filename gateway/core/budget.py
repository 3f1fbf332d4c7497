"""How much stored history one user may read per minute, whatever the door.

A history request is cheap to ask and dear to answer: `/history 1000` is 29,000 bytes
out per byte in, `CHATHISTORY LATEST # * 100` 14,000, a JOIN of a chat one is already in
20 messages each time. Without a bound three readers in a loop took 73 % of a core. The
login backlog (what the user has not seen) is never counted: it must be shown.
"""

from __future__ import annotations

import time

__all__ = ["Budget"]


class Budget:
    """A token bucket of messages: `per_minute` refill, at most `per_minute` at once.
    Made at a user's first history request (an idle user holds none)."""

    __slots__ = ("_at", "_tokens")

    def __init__(self, per_minute: int, now: float | None = None) -> None:
        self._tokens = float(per_minute)
        self._at = time.monotonic() if now is None else now

    def take(self, count: int, per_minute: int, now: float | None = None) -> float:
        """Spend `count` messages if the budget holds them: 0.0; else nothing is spent
        and the seconds until it would (at most a minute's refill for a full request)."""
        now = time.monotonic() if now is None else now
        rate = per_minute / 60.0
        self._tokens = min(float(per_minute), self._tokens + (now - self._at) * rate)
        self._at = now
        count = min(count, per_minute)  # a request bigger than the burst waits for a full one
        if self._tokens >= count:
            self._tokens -= count
            return 0.0
        return (count - self._tokens) / rate
