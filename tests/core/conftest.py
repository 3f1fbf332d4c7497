"""The chat core on the in-memory store, in this process: no subprocess, no socket, no
Redis, and a fake clock that tests move by hand (no sleeping).

`Recorder` is the smallest door there is: it keeps the events a session emits. Events
from the store arrive at the next loop turn, so `wait_for` waits loop turns, not time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.session import Core, Phase, Session
from gateway.fanout import Fanout
from gateway.settings import Settings
from store.clock import FakeClock
from store.memory import MemoryServer, MemoryStore
from store.redis import StorePolicy, open_store


@dataclass
class Recorder:
    """A sink that records events (messages as (where, sender, text) tuples too)."""

    address: str = "127.0.0.1"
    events: list[ev.Event] = field(default_factory=list)
    closed: bool = False
    overflowed: bool = False
    #: Seconds to keep waiting after the loop turns: a real Redis takes real time.
    patience: float = 0.0

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)

    def show(self, messages: ev.Messages) -> None:
        self.events.append(messages)

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def close(self) -> None:
        self.closed = True

    def overflow(self) -> None:
        self.overflowed = True

    def messages(self) -> list[tuple[str, str, str]]:
        out = []
        for e in self.events:
            if isinstance(e, ev.Messages):
                where = ("#" if isinstance(e.where, ev.ChatConv) else "@") + e.where.name
                out += [(where, m.sender, m.text) for m in e.items]
        return out

    def of(self, kind: type) -> list[ev.Event]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, predicate, turns: int = 100) -> None:  # type: ignore[no-untyped-def]
        """Until `predicate(self)`: the store hands events over at the next loop turn."""
        for _ in range(turns):
            if predicate(self):
                return
            await asyncio.sleep(0)
        deadline = asyncio.get_running_loop().time() + self.patience
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
            if predicate(self):
                return
        raise AssertionError(f"not after {turns} loop turns; events: {self.events!r}")


@dataclass
class Chat:
    core: Core
    store: Any  # a MemoryStore (tests read its keys), or a RedisStore for `redis_chat`
    fanout: Fanout
    clock: FakeClock  # the memory store's; a real Redis keeps its own time

    async def connect(self, address: str = "127.0.0.1") -> tuple[Session, Recorder]:
        sink = Recorder(address, patience=0.0 if isinstance(self.store, MemoryStore) else 3.0)
        session = self.core.session(sink)
        session.start()
        return session, sink

    async def login(self, nick: str, password: str = "secret123") -> tuple[Session, Recorder]:
        session, sink = await self.connect()
        await session.handle(cmd.Nick(nick))
        await session.handle(cmd.Password(password))
        assert session.phase is Phase.READY, sink.events
        return session, sink


POLICY: dict[str, Any] = {
    "message_ttl": 3600,
    "ban_threshold": 3,
    "ban_duration": 60,
    "rate": 0,
    "burst": 20,
    "gateway_id": "test-gw",
}


async def _chat(store: Any, clock: FakeClock) -> AsyncIterator[Chat]:
    await store.start()
    fanout = Fanout(store, cursor_flush=0.2)
    await fanout.start()
    core = Core(store, fanout, Settings(history=5, rate=0, scrypt_log_n=4), "test-gw")
    try:
        yield Chat(core, store, fanout, clock)
    finally:
        await fanout.stop()
        await store.close()


@pytest.fixture
async def chat() -> AsyncIterator[Chat]:
    """The core on the memory store, its clock a FakeClock."""
    clock = FakeClock()
    async for made in _chat(MemoryStore(MemoryServer(clock), **POLICY), clock):
        yield made


@pytest.fixture(params=["memory", "redis"])
async def either_chat(request: pytest.FixtureRequest) -> AsyncIterator[Chat]:
    """The core on the memory store, then on a real Redis: for the few tests whose point
    is the real thing too (pub/sub through a real link, cursors through the scripts)."""
    if request.param == "memory":
        clock = FakeClock()
        store: Any = MemoryStore(MemoryServer(clock), **POLICY)
    else:
        url = request.getfixturevalue("redis_url")
        clock, store = FakeClock(), await open_store(url, StorePolicy(**POLICY))
    async for made in _chat(store, clock):
        yield made


@pytest.fixture
async def redis_chat(redis_url: str) -> AsyncIterator[Chat]:
    """The core on a real Redis (the session's redis-server, emptied): for what only Redis
    can show (how it keeps a key, what its scripts do)."""
    async for made in _chat(await open_store(redis_url, StorePolicy(**POLICY)), FakeClock()):
        yield made
