"""The chat core on the embedded store, in this process: no subprocess, no gateway.

`Recorder` is the smallest door there is: it keeps the events a session emits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.session import Core, Phase, Session
from gateway.fanout import Fanout
from gateway.settings import Settings
from store.embedded import start_embedded
from store.redis_store import RedisStore


@dataclass
class Recorder:
    """A sink that records events (messages as (where, sender, text) tuples too)."""

    address: str = "127.0.0.1"
    events: list[ev.Event] = field(default_factory=list)
    closed: bool = False
    overflowed: bool = False

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

    async def wait_for(self, predicate, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; events: {self.events!r}")
            await asyncio.sleep(0.01)


@dataclass
class Chat:
    core: Core
    store: RedisStore
    fanout: Fanout

    async def connect(self, address: str = "127.0.0.1") -> tuple[Session, Recorder]:
        sink = Recorder(address)
        session = self.core.session(sink)
        session.start()
        return session, sink

    async def login(self, nick: str, password: str = "secret123") -> tuple[Session, Recorder]:
        session, sink = await self.connect()
        await session.handle(cmd.Nick(nick))
        await session.handle(cmd.Password(password))
        assert session.phase is Phase.READY, sink.events
        return session, sink


@pytest.fixture
async def chat() -> AsyncIterator[Chat]:
    url, server = start_embedded()
    store = RedisStore(
        url,
        message_ttl=3600,
        ban_threshold=3,
        ban_duration=60,
        rate=0,
        burst=20,
        gateway_id="test-gw",
    )
    await store.start()
    fanout = Fanout(store, cursor_flush=0.2)
    await fanout.start()
    core = Core(store, fanout, Settings(history=5, rate=0, scrypt_log_n=4), "test-gw")
    try:
        yield Chat(core, store, fanout)
    finally:
        await fanout.stop()
        await store.close()
        server.shutdown()
