"""One contract, three stores: every test here runs on the memory store (with a fake
clock), on a real Redis and on a Redis Cluster (tests/conftest.py starts both), through a
`Backend` that makes stores (one per "gateway", sharing one backend) and says how time
passes: moved by hand on the memory store, waited out on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from store.clock import FakeClock
from store.contract import PostStatus, Registration, Store, StoreEvent, Subscriptions
from store.memory import MemoryServer, MemoryStore
from store.redis import StorePolicy, open_store

DEFAULTS: dict[str, Any] = {
    "message_ttl": 3600,
    "ban_threshold": 3,
    "ban_duration": 60,
    "rate": 0,
    "burst": 10,
}


@dataclass
class Backend:
    kind: str  # "memory", "redis" or "cluster"
    url: str = ""
    clock: FakeClock = field(default_factory=FakeClock)
    made: list[Any] = field(default_factory=list)
    server: MemoryServer | None = None

    async def make(self, **options: Any) -> Any:
        """A started store of a gateway of its own (gw0, gw1, ...) on the shared backend."""
        policy = {**DEFAULTS, "gateway_id": f"gw{len(self.made)}", **options}
        store: Any
        if self.kind == "memory":
            if self.server is None:
                self.server = MemoryServer(self.clock)
            store = MemoryStore(self.server, **policy)
            await store.start()
        else:
            store = await open_store(self.url, StorePolicy(**policy))
        self.made.append(store)
        return store

    def now_ms(self) -> int:
        return self.clock.now_ms() if self.kind == "memory" else int(time.time() * 1000)

    async def wait(self, seconds: float) -> None:
        """Let `seconds` pass: the fake clock moves at once; Redis' own clock is waited on."""
        if self.kind == "memory":
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    async def until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        """Until `done()`: loop turns on the memory store, polling on Redis."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("timed out")
            await asyncio.sleep(0 if self.kind == "memory" else 0.01)


@pytest.fixture(params=["memory", "redis", "cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        b = Backend("memory")
    else:
        fixture = "redis_url" if request.param == "redis" else "cluster_url"
        b = Backend(request.param, str(request.getfixturevalue(fixture)))
    yield b
    for s in b.made:
        await s.close()


MakeStore = Callable[..., Awaitable[Any]]


@pytest.fixture
def make_store(backend: Backend) -> MakeStore:
    return backend.make


@pytest.fixture
async def store(backend: Backend) -> Any:
    return await backend.make()


async def register(s: Store, *users: str, address: str = "") -> None:
    """Accounts named as their key in capitals (`ann` is ANN), skeleton = key."""
    for u in users:
        assert await s.register(u, u.upper(), "pw", u, address) is Registration.CREATED


async def post(s: Store, user: str, chat: str, *texts: str) -> list[PostStatus]:
    results = await s.post_chat(user, user.upper(), chat, chat, list(texts))
    return [r.status for r in results]


@contextlib.asynccontextmanager
async def listening(s: Store) -> AsyncIterator[tuple[Subscriptions, list[StoreEvent]]]:
    """`s`'s subscriptions, started; every event they deliver is appended to the list."""
    events: list[StoreEvent] = []

    async def resubscribed(_: float) -> None:
        return None

    links = s.subscriptions(events.extend, resubscribed, lambda _: None)
    await links.start()
    try:
        yield links, events
    finally:
        await links.close()
