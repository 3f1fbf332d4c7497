"""Online users' accounts never expire, and a heartbeat renews only a share of them.

Renewing every online user's last-seen time at every heartbeat was one ZADD of all of
them (30-100 ms of Redis's only thread for a gateway of 16,667 users, every 5 s); now
each beat renews one share and every user is renewed once per pass (at most a quarter of
the account lifetime). On the memory store with a fake clock: no waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.presence import HEARTBEAT, Presence
from store.clock import FakeClock
from store.contract import Registration
from store.memory import MemoryServer, MemoryStore
from tests.core.conftest import POLICY

TTL = 40  # a pass of 10 s: two shares, one per 5 s heartbeat


async def _seen(store: MemoryStore) -> dict[str, int]:
    return {u.key: u.seen_ms for u in await store.users(1000)}


async def test_each_beat_renews_a_share_and_no_online_account_expires() -> None:
    clock = FakeClock()
    store = MemoryStore(MemoryServer(clock), **{**POLICY, "account_ttl": TTL})
    await store.start()
    names = [f"u{i}" for i in range(40)]
    for u in [*names, "gone"]:
        assert await store.register(u, u, "pw", u, "") is Registration.CREATED
    online: dict[str, object] = dict.fromkeys(names)
    presence = Presence(store, online, account_ttl=TTL)
    try:
        start = await _seen(store)
        clock.advance(HEARTBEAT)
        await presence.beat()
        first = {u for u, t in (await _seen(store)).items() if t != start[u]}
        assert 0 < len(first) < len(names), first  # a share, not everyone
        clock.advance(HEARTBEAT)
        await presence.beat()
        after = await _seen(store)
        second = {u for u, t in after.items() if t == clock.now_ms()}
        assert first.isdisjoint(second) and first | second == set(names)
        assert after["gone"] == start["gone"]  # not online: not renewed
        for _ in range(20):  # 100 s more, well past the 40 s lifetime
            clock.advance(HEARTBEAT)
            await presence.beat()
            assert await store.forget_unseen(100) in (0, 1)
        assert await store.get_account("gone") is None
        assert all([await store.get_account(u) is not None for u in names])
    finally:
        await store.close()


class _CountingStore(MemoryStore):
    """The memory store, counting its offline writes."""

    offline_writes: list[list[str]]

    async def set_offline_many(self, users: Sequence[str]) -> None:
        self.offline_writes.append(sorted(users))
        await super().set_offline_many(users)


async def test_the_leaves_of_one_turn_are_one_write_and_a_user_back_stays_online() -> None:
    """Thousands of clients behind a proxy that dies leave in one moment: one offline
    write for all of them, before any heartbeat; one who came back before it was written
    is not marked offline."""
    store = _CountingStore(MemoryServer(FakeClock()), **POLICY)
    store.offline_writes = []
    await store.start()
    names = [f"u{i}" for i in range(30)]
    online: dict[str, object] = dict.fromkeys(names)
    presence = Presence(store, online)
    try:
        await asyncio.gather(*(presence.set_online(u) for u in names))
        gw = [store.gateway_id]
        assert all([await store.online_on(u, gw) for u in names])
        for u in names[:20]:  # in one turn, as a door reads 20 resets together
            del online[u]
            presence.went_offline(u)
        online["u0"] = None  # u0 logged in again before the write
        for _ in range(5):
            await asyncio.sleep(0)
        assert store.offline_writes == [sorted(names[1:20])]
        assert [await store.online_on(u, gw) for u in names] == [True] + [False] * 19 + [True] * 10
    finally:
        await store.close()
