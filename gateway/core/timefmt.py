"""Times in the texts the core writes: the gateway's local zone (set TZ to change it)."""

from __future__ import annotations

import time

__all__ = ["ban_end", "wait_for"]


def ban_end(ms: int) -> str:
    """When a ban ends, as `YYYY-MM-DD HH:MM:SS ZONE`."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ms // 1000))


def wait_for(ms: int) -> str:
    """A wait, rounded up, in the largest unit that keeps it readable: `40 s`, `12 min`."""
    seconds = max(1, -(-ms // 1000))
    if seconds < 120:
        return f"{seconds} s"
    minutes = -(-seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{-(-minutes // 60)} h"
