"""/who and /get_chats in a chat of thousands: bounded Redis work, still right.

A 3,000-member chat with 2,500 members online over three gateways, on a real Redis. The
bounded calls must never read the member set whole nor build a union of everyone online
(no SUNION/SINTER in Redis' own command statistics), list at most the names asked for, all of
them online members, and say the count stopped at the bound; a small chat stays exact.
"""

from __future__ import annotations

import redis

from store import keys
from store.redis import RedisStore, StorePolicy, open_store

GATEWAYS = ("gw-a", "gw-b", "gw-c")


def _seed(url: str) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    big = [f"u{i}" for i in range(3000)]
    for u in big:
        pipe.hset(keys.user(u), "name", u.upper())
    pipe.sadd(keys.members("big"), *big)
    pipe.hset(keys.chat("big"), "name", "Big")
    pipe.sadd(keys.members("small"), "u1", "u2", "u3", "nobody")
    pipe.hset(keys.chat("small"), "name", "small")
    pipe.zadd(keys.chat_sizes(), {"big": 3000, "small": 4})
    for k, gw in enumerate(GATEWAYS):
        pipe.sadd(keys.gateways(), gw)
        pipe.set(keys.gateway_alive(gw), "1", ex=60)
        pipe.sadd(keys.gateway_online(gw), *big[k:2500:3], "elsewhere")  # u0..u2499
    pipe.sadd(keys.gateway_online("gw-b"), "u1")  # u1 on two gateways
    pipe.execute()
    r.config_resetstat()
    r.close()


def _commands(url: str) -> set[str]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {k.removeprefix("cmdstat_") for k in r.info("commandstats")}
    finally:
        r.close()


async def _store(url: str) -> RedisStore:
    policy = StorePolicy(
        message_ttl=3600, ban_threshold=3, ban_duration=60, rate=0, burst=1, gateway_id="gw-a"
    )
    return await open_store(url, policy)


async def test_who_in_a_big_chat_is_bounded_and_says_so(redis_url: str) -> None:
    _seed(redis_url)
    store = await _store(redis_url)
    try:
        online = await store.who_bounded("big", 200, 1000)
        small = await store.who_bounded("small", 200, 1000)
    finally:
        await store.close()
    assert len(online.names) == 200
    assert online.capped and online.total >= 1000  # at least that many
    assert all(n.startswith("U") and int(n[1:]) < 2500 for n in online.names)  # online members
    assert online.names == sorted(online.names, key=str.casefold)
    assert (small.names, small.total, small.capped) == (["U1", "U2", "U3"], 3, False)
    used = _commands(redis_url)
    assert not used & {"sunionstore", "sinterstore", "sunion", "sinter"}, used


async def test_get_chats_counts_online_up_to_the_bound(redis_url: str) -> None:
    _seed(redis_url)
    store = await _store(redis_url)
    try:
        listed = await store.active_chats_bounded(50, 1000)
    finally:
        await store.close()
    assert listed.total == 2
    big, small = listed.chats
    assert (big.name, big.members, big.online, big.capped) == ("Big", 3000, 1000, True)
    assert (small.name, small.members, small.capped) == ("small", 4, False)
    assert small.online >= 3  # u1 is on two gateways: counted per gateway
    used = _commands(redis_url)
    assert not used & {"sunionstore", "sinterstore", "sunion", "sinter"}, used
