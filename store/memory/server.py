"""The memory store's server: values with expiry on a clock, channels, positions;
and what every part of `MemoryStore` shares (`Base`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from store.clock import SYSTEM, Clock
from store.contract import (
    Conv,
    Position,
    StoreEvent,
    StoreUnavailable,
)

__all__ = [
    "ADDRESS_COUNT_TTL_MS",
    "ADDRESS_MEMORY",
    "EXACT_ONLINE",
    "HOUR_MS",
    "KNOWN_ADDRESSES",
    "PRESENCE_TTL",
    "SMALL_CHAT",
    "Base",
    "Key",
    "MemoryServer",
    "done",
]

# The same policy constants as store/redis/policy.py (a contract test checks they agree).
PRESENCE_TTL = 15
ADDRESS_MEMORY = 30 * 86400
KNOWN_ADDRESSES = 16
HOUR_MS = 3_600_000
SMALL_CHAT = 2000
EXACT_ONLINE = 100
ADDRESS_COUNT_TTL_MS = 86_400_000

T = TypeVar("T")
Key = tuple[Any, ...]  # (kind, names...), as a Redis key's parts


class _Keys:
    """Values with an optional expiry on the clock, as Redis keeps keys: an expired value
    reads as missing, and an emptied set or mapping is deleted (`tidy`)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._values: dict[Key, Any] = {}
        self._expires: dict[Key, int] = {}

    def get(self, key: Key, default: Any = None) -> Any:
        at = self._expires.get(key)
        if at is not None and at <= self._clock.now_ms():
            self.delete(key)
            return default
        return self._values.get(key, default)

    def has(self, key: Key) -> bool:
        return self.get(key) is not None

    def put(self, key: Key, value: Any, ttl_ms: int | None = None) -> None:
        """Set a value; with `ttl_ms` it expires then, else it keeps no expiry."""
        self._values[key] = value
        if ttl_ms is None:
            self._expires.pop(key, None)
        else:
            self._expires[key] = self._clock.now_ms() + ttl_ms

    def upsert(self, key: Key, make: Callable[[], T]) -> T:
        """The value at `key`, created with `make` (no expiry) when missing."""
        value = self.get(key)
        if value is None:
            value = self._values[key] = make()
        return value  # type: ignore[no-any-return]

    def expire(self, key: Key, ttl_ms: int) -> None:
        if self.has(key):
            self._expires[key] = self._clock.now_ms() + ttl_ms

    def expire_at(self, key: Key, at_ms: int) -> None:
        if self.has(key):
            self._expires[key] = at_ms

    def ttl_ms(self, key: Key) -> int | None:
        """Ms left before `key` expires; None if it is missing or never expires."""
        if not self.has(key):
            return None
        at = self._expires.get(key)
        return None if at is None else at - self._clock.now_ms()

    def delete(self, *keys: Key) -> None:
        for key in keys:
            self._values.pop(key, None)
            self._expires.pop(key, None)

    def tidy(self, key: Key) -> None:
        """Delete `key` if its set or mapping is empty (Redis has no empty keys)."""
        if key in self._values and not self._values[key]:
            self.delete(key)

    def incr(self, key: Key, by: int = 1) -> int:
        """INCR: a missing value counts as 0; the expiry is kept."""
        value = int(self.get(key, 0)) + by
        self._values[key] = value
        return value


class _Link:
    """A `Subscriptions` on a `MemoryServer`: events of its channels, one list per turn."""

    def __init__(
        self,
        server: MemoryServer,
        on_events: Callable[[list[StoreEvent]], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None],
    ) -> None:
        self._server = server
        self._on_events = on_events
        self.on_reconnect = on_reconnect
        self.on_state = on_state
        self.channels: set[tuple[str, str]] = set()
        self._pending: list[StoreEvent] = []

    @property
    def count(self) -> int:
        return len(self.channels)

    async def start(self) -> None:
        self._server.links.add(self)

    async def close(self) -> None:
        self._server.links.discard(self)

    async def add(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None:
        self.channels.update(("c", c) for c in chats)
        self.channels.update(("u", u) for u in users)

    def remove(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None:
        self.channels.difference_update(("c", c) for c in chats)
        self.channels.difference_update(("u", u) for u in users)

    def push(self, event: StoreEvent) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._deliver)
        self._pending.append(event)

    def _deliver(self) -> None:
        events, self._pending = self._pending, []
        if events and self in self._server.links:
            self._on_events(events)


class MemoryServer:
    """What the stores of several gateways share, as they would share one Redis."""

    def __init__(self, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self.keys = _Keys(clock)
        self.links: set[_Link] = set()
        #: Set by a test: every call raises StoreUnavailable, as a Redis that is down.
        self.down = False
        self._seq = 0

    def now(self) -> int:
        if self.down:
            raise StoreUnavailable("the memory store is down (a test said so)")
        return self.clock.now_ms()

    def position(self, after: Position | None) -> Position:
        """A new message's position: the clock's ms, and a sequence number that grows
        across all conversations, so positions of one ms still order by storing."""
        self._seq += 1
        ms = self.clock.now_ms()
        if after is not None and after.ms > ms:  # the clock stepped back: stay after it
            ms = after.ms
        return Position(ms, self._seq)

    def wipe(self) -> None:
        """Lose every key, as a Redis restarted without persistence does (for tests)."""
        self.keys.delete(*list(self.keys._values))

    def publish(self, channel: tuple[str, str], event: StoreEvent) -> None:
        for link in self.links:
            if channel in link.channels:
                link.push(event)


class Base:
    """What every part of `MemoryStore` shares: the server, the policy, small helpers. The
    constructor takes the fields of the Redis store's `StorePolicy` as keywords (Redis' own
    tuning aside: the reply timeout, the replica wait)."""

    def __init__(
        self,
        server: MemoryServer | None = None,
        *,
        message_ttl: int,
        ban_threshold: int,
        ban_duration: int,
        rate: float,
        burst: int,
        gateway_id: str,
        complaint_min_age: int = 0,
        complaints_per_hour: int = 0,
        complaints_per_address: int = 0,
        ban_address_memory: int = 0,
        max_stored: int = 10000,
        max_user_chats: int = 100,
        max_chats: int = 10000,
        chat_creations: int = 10,
        max_registrations: int = 0,
        account_ttl: int = 180 * 86400,
    ) -> None:
        self.server = server if server is not None else MemoryServer()
        self.k = self.server.keys
        self.ttl_ms = message_ttl * 1000
        self.ban_threshold = ban_threshold
        self.ban_ms = ban_duration * 1000
        self.rate = rate
        self.burst = burst
        self.gateway_id = gateway_id
        self.complaint_min_age_ms = complaint_min_age * 1000
        self.complaints_per_hour = complaints_per_hour
        self.complaints_per_address = complaints_per_address
        self.ban_address_memory = ban_address_memory
        self.max_stored = max_stored
        self.max_user_chats = max_user_chats
        self.max_chats = max_chats
        self.chat_creations = chat_creations
        self.max_registrations = max_registrations
        self.account_ttl_ms = account_ttl * 1000

    async def start(self) -> None:
        self.server.now()

    async def close(self) -> None:
        return None

    def subscriptions(
        self,
        on_events: Callable[[list[StoreEvent]], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None],
    ) -> _Link:
        return _Link(self.server, on_events, on_reconnect, on_state)

    # -- small helpers -------------------------------------------------------------------

    def _set(self, key: Key) -> set[str]:
        return self.k.upsert(key, set)

    def _map(self, key: Key) -> dict[Any, Any]:
        return self.k.upsert(key, dict)

    def _members(self, key: Key) -> set[str]:
        found: set[str] = self.k.get(key, set())
        return found

    def _scores(self, key: Key) -> dict[str, int]:
        found: dict[str, int] = self.k.get(key, {})
        return found

    def _positions(self, user: str) -> dict[Conv, Position]:
        found: dict[Conv, Position] = self.k.get(("cursor", user), {})
        return found

    def _name(self, user: str) -> str | None:
        account = self.k.get(("user", user))
        return None if account is None else str(account["name"])

    def _user_channel(self, user: str, event: StoreEvent) -> None:
        self.server.publish(("u", user), event)

    @staticmethod
    def _trim_rank(scores: dict[str, int], keep: int) -> None:
        """ZREMRANGEBYRANK 0 -keep-1: keep the `keep` highest scores."""
        if len(scores) > keep:
            for member, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]))[:-keep]:
                del scores[member]

    @staticmethod
    def _drop_below(scores: dict[str, int], bound: int) -> None:
        """ZREMRANGEBYSCORE -inf bound."""
        for member in [m for m, s in scores.items() if s <= bound]:
            del scores[member]

    def _join_chat(self, user: str, chat: str, typed: str) -> int:
        """join.lua's add: the chat's name kept as first typed; the member count after."""
        self.k.upsert(("chat", chat), lambda: typed)
        members = self._set(("members", chat))
        members.add(user)
        return len(members)

    def _leave_chat(self, user: str, chat: str) -> tuple[bool, str]:
        """leave.lua and the chat list: (removed, the chat's name)."""
        members = self._members(("members", chat))
        if user not in members:
            return False, ""
        members.discard(user)
        name = self.k.get(("chat", chat)) or chat
        sizes = self._map(("chatsizes",))
        if members:
            sizes[chat] = len(members)
        else:
            self.k.delete(("members", chat), ("chat", chat))
            sizes.pop(chat, None)
        return True, name


def done(make: Callable[[], T]) -> asyncio.Future[T]:
    """A future already resolved with `make()` (or failed with what it raised)."""
    fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    try:
        fut.set_result(make())
    except Exception as exc:
        fut.set_exception(exc)
    return fut
