"""The time the in-memory store reads, injectable: the system's clock when serving, a
`FakeClock` in tests, moved by hand, so that expiries (tokens, bans, login windows, rate
buckets, the message lifetime) are tested without sleeping.

(The Redis store reads Redis' own clock inside its scripts, so every gateway stamps by one
clock; it does not take one of these.)
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["SYSTEM", "Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    def now_ms(self) -> int:
        """Unix time in milliseconds."""


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


SYSTEM = SystemClock()


class FakeClock:
    """A clock that stands still until `advance`d (it never goes back)."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, seconds: float = 0, *, ms: int = 0) -> None:
        step = round(seconds * 1000) + ms
        if step < 0:
            raise ValueError("a clock does not go back")
        self._now += step
