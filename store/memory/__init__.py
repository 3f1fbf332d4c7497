"""The store contract in plain Python: dicts, sets and lists, no Redis, no I/O.

Like centrifuge's memory engine beside its Redis one: the same contract, the same
semantics as the Lua scripts and `RedisStore` (rate buckets, bans, complaints, login
limits and lockouts, resume tokens with expiry, backlog, history, membership limits,
events to subscriptions), so the core's tests run on it in-process in milliseconds and the
contract tests (tests/contract/) hold both implementations to one behaviour.

The parts: `server.py` (values with expiry, channels, the shared `Base`), `accounts.py`,
`conversations.py`, `moderation.py`, `presence.py`, one class each (each under 300
lines), joined by `MemoryStore`. Several `MemoryStore`s (one per "gateway") share one
`MemoryServer`, as gateways share one Redis: its data, its channels and its `Clock`. Time
comes only from that clock: with a `FakeClock` a test moves time by hand instead of
sleeping. Everything is done at once and atomically (there is no other process); events
are handed to subscriptions at the next loop turn, one list per turn, as a pub/sub link
hands over what one read brought.
"""

from __future__ import annotations

from store.memory.accounts import Accounts
from store.memory.conversations import Conversations
from store.memory.moderation import Moderation
from store.memory.presence import Presence
from store.memory.server import (
    ADDRESS_COUNT_TTL_MS,
    ADDRESS_MEMORY,
    EXACT_ONLINE,
    HOUR_MS,
    KNOWN_ADDRESSES,
    PRESENCE_TTL,
    SMALL_CHAT,
    MemoryServer,
)

__all__ = [
    "ADDRESS_COUNT_TTL_MS",
    "ADDRESS_MEMORY",
    "EXACT_ONLINE",
    "HOUR_MS",
    "KNOWN_ADDRESSES",
    "PRESENCE_TTL",
    "SMALL_CHAT",
    "MemoryServer",
    "MemoryStore",
]


class MemoryStore(Accounts, Conversations, Moderation, Presence):
    """The whole contract on a `MemoryServer`, one part per domain (each its own module)."""
