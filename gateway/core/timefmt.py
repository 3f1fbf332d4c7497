"""Times in the texts the core writes: the gateway's local zone (set TZ to change it)."""

from __future__ import annotations

import time

__all__ = ["MAX_BAN", "ban_end", "parse_duration", "wait_for"]

#: The longest ban a moderator can give, in seconds (a month): longer exclusion is an
#: operator's decision (`admin delete-user`).
MAX_BAN = 30 * 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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


def parse_duration(text: str) -> int | None:
    """`90`, `90s`, `30m`, `2h`, `7d` as seconds (1 to MAX_BAN); None if not one."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:], 0)
    digits = text[:-1] if unit else text
    if not unit:
        unit = 1
    if not digits.isascii() or not digits.isdigit() or len(digits) > 9:
        return None
    seconds = int(digits) * unit
    return seconds if 1 <= seconds <= MAX_BAN else None
