"""Times in the texts the core writes: the gateway's local zone (set TZ to change it)."""

from __future__ import annotations

import time

__all__ = ["ban_end"]


def ban_end(ms: int) -> str:
    """When a ban ends, as `YYYY-MM-DD HH:MM:SS ZONE`."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ms // 1000))
