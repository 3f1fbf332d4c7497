"""The store's contract (store.redis_store.RedisStore) on a standalone Redis and on a
Redis Cluster of 3 masters and 3 replicas: every test runs on both.

`start()` finds out by itself which one the URL names. On the cluster every operation
of several slots is a few steps (docs/REDIS.md); the race tests at the end check that
splitting them opened no hole: a burst through two gateways, a ban racing posts, joins
racing the chat limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis

from scripts.procs import free_port
from store import keys
from store.contract import (
    ChatPosts,
    ComplaintStatus,
    JoinStatus,
    LoginGate,
    LoginLimits,
    PostResult,
    PostStatus,
    PrivatePost,
    Registration,
    StoreRefused,
    StoreUnavailable,
    StoreUnusable,
    Subscriptions,
    UserBanned,
    UserState,
)
from store.redis_store import RedisStore
from tests.store.conftest import StoreCluster

MakeStore = Callable[..., Awaitable[RedisStore]]
DEFAULTS: dict[str, Any] = {
    "message_ttl": 3600,
    "ban_threshold": 3,
    "ban_duration": 60,
    "rate": 0,
    "burst": 10,
}


@pytest.fixture(params=["redis", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return str(request.getfixturevalue("cluster_url"))


@pytest.fixture
async def make_store(store_url: str) -> AsyncIterator[MakeStore]:
    """`await make_store(**options)`: a started RedisStore (a gateway's) on the test's
    Redis; each one made gets its own gateway id."""
    made: list[RedisStore] = []

    async def make(**options: Any) -> RedisStore:
        s = RedisStore(store_url, **{**DEFAULTS, "gateway_id": f"gw{len(made)}", **options})
        await s.start()
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()


@pytest.fixture
async def store(make_store: MakeStore) -> RedisStore:
    return await make_store()


async def register(s: RedisStore, *users: str, address: str = "") -> None:
    for u in users:
        assert await s.register(u, u.upper(), "pw", u, address) is Registration.CREATED


async def post(s: RedisStore, user: str, chat: str, *texts: str) -> list[PostStatus]:
    results = await s.post_chat(user, user.upper(), chat, chat, list(texts))
    return [r.status for r in results]


OK, RATE, BANNED = PostStatus.OK, PostStatus.RATE, PostStatus.BANNED


@contextlib.asynccontextmanager
async def listening(store: RedisStore) -> AsyncIterator[tuple[Subscriptions, list[Any]]]:
    """`store`'s pub/sub links, started; every event they deliver is appended to the list."""
    events: list[Any] = []

    async def resubscribed(_: float) -> None:
        return None

    links = store.subscriptions(events.extend, resubscribed, lambda _: None)
    await links.start()
    try:
        yield links, events
    finally:
        await links.close()


async def until_events(events: list[Any], want: int, tries: int, every: float) -> None:
    """Wait (at most tries x every seconds) until `events` holds `want` of them."""
    for _ in range(tries):
        if len(events) >= want:
            return
        await asyncio.sleep(every)


def test_the_mode_is_detected(store: RedisStore, store_url: str, request: Any) -> None:
    assert store.cluster is (request.node.callspec.params["store_url"] == "cluster")


# -- accounts --------------------------------------------------------------------------------


async def test_register(make_store: MakeStore) -> None:
    s = await make_store(max_registrations=2)
    assert await s.register("alice", "Alice", "pw", "a1ice", "9.9.9.9") is Registration.CREATED
    assert await s.register("alice", "ALICE", "pw2", "a1ice", "8.8.8.8") is Registration.TAKEN
    assert await s.register("aiice", "AIice", "pw", "a1ice", "8.8.8.8") is Registration.LOOK_ALIKE
    assert (await s.new_name("aiice", "a1ice", "8.8.8.8")).look_alike
    assert not (await s.new_name("alice", "a1ice", "8.8.8.8")).look_alike
    assert await s.register("bob", "Bob", "pw", "bob", "9.9.9.9") is Registration.CREATED
    assert await s.register("cid", "Cid", "pw", "cid", "9.9.9.9") is Registration.LIMITED
    assert await s.register("cid", "Cid", "pw", "cid", "") is Registration.CREATED  # no address
    account = await s.get_account("alice")
    assert account is not None and (account.name, account.password_hash) == ("Alice", "pw")
    assert await s.get_account("nobody") is None
    state = await user_state(s, "bob")
    assert state.chats == {keys.GENERAL: keys.GENERAL} and state.banned_until_ms is None
    top = await s.active_chats_bounded(10, 1000)
    assert top.total == 1 and top.chats[0].members == 3
    seen = [u.key for u in await s.users(10)]
    assert sorted(seen) == ["alice", "bob", "cid"]


LIMITS = LoginLimits(per_pair=3, per_nick=5, nicks_per_address=2, window=60)
OPEN = LoginLimits(per_pair=0, per_nick=0, nicks_per_address=0, window=60)


async def user_state(s: RedisStore, user: str) -> UserState:
    """The user's state as a login reads it."""
    return await s.enter(user, "127.0.0.1")


async def token_name(s: RedisStore, user: str, token_hash: str) -> str | None:
    """The display name a resume token logs in as, or None (no login limit in the way)."""
    return (await s.token_login(user, "127.0.0.1", OPEN, token_hash)).name


async def gates(s: RedisStore, user: str, address: str, n: int) -> list[LoginGate]:
    return [(await s.login_gate(user, address, LIMITS, take=True)).gate for _ in range(n)]


async def test_login_gate_pair_and_nick(store: RedisStore) -> None:
    G = LoginGate
    assert await gates(store, "ann", "10.0.0.1", 4) == [G.OK, G.OK, G.OK, G.PAIR]
    peek = await store.login_gate("ann", "10.0.0.2", LIMITS, take=False)
    assert peek.gate is G.OK
    assert await gates(store, "ann", "10.0.0.2", 3) == [G.OK, G.OK, G.NICK]
    refused = await store.login_gate("ann", "10.0.0.5", LIMITS, take=True)
    assert refused.gate is G.NICK and 0 < refused.wait_ms <= 60_000
    # a success forgives that address's attempts, and makes it known: exempt from the
    # nickname's limit (an attacker elsewhere cannot lock the owner out)
    await store.seen("ann", "10.0.0.1")
    assert await gates(store, "ann", "10.0.0.1", 4) == [G.OK, G.OK, G.OK, G.PAIR]


async def test_login_gate_address_limit(store: RedisStore) -> None:
    G = LoginGate
    assert await gates(store, "ann", "10.0.0.9", 2) == [G.OK, G.OK]  # one nickname, once
    assert await gates(store, "bob", "10.0.0.9", 1) == [G.OK]
    refused = await store.login_gate("cid", "10.0.0.9", LIMITS, take=True)
    assert refused.gate is G.ADDRESS and 0 < refused.wait_ms <= 60_000
    # refusals by the address limit are given back to the nickname's counters: many of
    # them leave cid's own limits untouched
    for _ in range(8):
        assert (await store.login_gate("cid", "10.0.0.9", LIMITS, take=True)).gate is G.ADDRESS
    assert await gates(store, "cid", "10.0.0.7", 3) == [G.OK] * 3
    assert await gates(store, "cid", "10.0.0.8", 3) == [G.OK, G.OK, G.NICK]
    # a nickname that logged in from the address before is not limited by it
    await store.seen("dan", "10.0.0.9")
    assert await gates(store, "dan", "10.0.0.9", 3) == [G.OK] * 3


# -- chats ---------------------------------------------------------------------------------


async def test_join_leave_and_limits(make_store: MakeStore) -> None:
    s = await make_store(max_user_chats=3, max_chats=4, chat_creations=2)
    await register(s, "ann", "bob", "cid")
    m = await s.join("ann", "c1", "C1", "o")
    assert (m.changed, m.name, m.status) == (True, "C1", JoinStatus.OK)
    assert (await s.join("ann", "c1", "c1", "o")).changed is False
    assert (await s.join("ann", "c2", "c2", "o")).changed
    assert (await s.join("bob", "c3", "c3", "o")).changed
    assert (await s.join("ann", "c3", "c3", "o")).status is JoinStatus.USER_LIMIT  # 3 chats
    assert (await s.join("bob", "c1", "c1", "o")).changed  # joining is no creation
    assert (await s.leave("ann", "c2", "o")).changed  # c2 is empty now: deleted
    assert not await s.is_member("ann", "c2")
    assert (await s.join("ann", "c4", "c4", "o")).status is JoinStatus.CREATE_RATE  # made 2
    assert (await s.join("bob", "c5", "c5", "o")).status is JoinStatus.USER_LIMIT
    assert (await s.join("cid", "c5", "c5", "o")).changed  # general, c1, c3, c5: 4 chats
    assert (await s.join("cid", "c6", "c6", "o")).status is JoinStatus.CHAT_LIMIT
    chats = await s.active_chats_bounded(10, 1000)
    assert chats.total == 4
    assert [(c.name, c.members) for c in chats.chats] == [
        ("general", 3),
        ("C1", 2),
        ("c3", 1),
        ("c5", 1),
    ]
    left = await s.leave("bob", "c3", "o")
    assert (left.changed, left.name) == (True, "c3")
    assert not (await s.leave("bob", "c3", "o")).changed
    assert (await s.active_chats_bounded(10, 1000)).total == 3
    assert set((await user_state(s, "bob")).chats) == {keys.GENERAL, "c1"}
    assert (await s.join("ann", "c3", "C3", "o")).status is JoinStatus.CREATE_RATE


async def test_events_reach_the_subscribed_gateway(make_store: MakeStore) -> None:
    """What one gateway does reaches another's links: on a cluster by SPUBLISH on the shard
    of each channel's slot (chats, users), through one link per shard."""
    g1, g2 = await make_store(), await make_store()
    await register(g1, "ann", "bob")
    async with listening(g2) as (links, events):
        await links.add(chats=[keys.GENERAL, "rust"], users=["ann", "bob"])
        await g1.join("ann", "rust", "Rust", "s1")
        assert await post(g1, "ann", "rust", "r1", "r2") == [OK, OK]
        assert (await g1.post_private("ann", "ANN", "bob", "psst")).status is OK
        await g1.leave("ann", "rust", "s2")
        await g1.ban("bob", 60)
        await g1.kick("bob")
        want = 7  # joined, the chat's posts, the private message twice, left, ban, kick
        await until_events(events, want, tries=100, every=0.02)
        kinds = [type(e).__name__ for e in events]
        assert sorted(kinds) == sorted(
            [
                "MemberJoined",
                "ChatPosts",
                "PrivatePost",
                "PrivatePost",
                "MemberLeft",
                "UserBanned",
                "UserKicked",
            ]
        ), events
        chat = next(e for e in events if isinstance(e, ChatPosts))
        assert [m.text for m in chat.messages] == ["r1", "r2"] and chat.chat == "rust"
        dms = [e for e in events if isinstance(e, PrivatePost)]
        assert {e.user for e in dms} == {"ann", "bob"}
        assert {e.message.text for e in dms} == {"psst"}
        banned = next(e for e in events if isinstance(e, UserBanned))
        assert banned.user == "bob" and banned.by_moderator


async def test_operator_records(make_store: MakeStore) -> None:
    g1, g2 = await make_store(), await make_store()
    await g1.audit({"op": "ban", "user": "bob"}, 100)
    await g1.audit({"op": "unban", "user": "bob"}, 100)
    log = await g2.audit_log(0, 10)
    assert [e.fields["op"] for e in log] == ["ban", "unban"]
    assert abs(log[0].ms - time.time() * 1000) < 10_000
    assert await g1.claim_epoch("e1") == "e1"
    assert await g2.claim_epoch("e2") == "e1"  # the first claim holds
    await g1.heartbeat(set())
    await g2.heartbeat(set())
    assert await g1.live_gateways() == ["gw0", "gw1"]
    assert await g1.count_address("10.0.0.1", 1, ["gw0", "gw1"]) == 1
    assert await g2.count_address("10.0.0.1", 1, ["gw0", "gw1"]) == 2
    await g2.gateway_gone()
    assert await g1.live_gateways() == ["gw0"]
    assert await g1.count_address("10.0.0.1", 1, ["gw0"]) == 2


async def test_reassert_writes_back_memberships(store: RedisStore) -> None:
    """After Redis lost its data, a gateway writes back what its users were in."""
    await store.reassert({"ann": {"rust": "Rust", keys.GENERAL: "general"}}, {"ann": {"bob"}})
    assert await store.is_member("ann", "rust")
    state = await user_state(store, "ann")
    assert state.chats == {"rust": "Rust", keys.GENERAL: "general"}
    assert state.peers == {"bob"}
    chats = await store.active_chats_bounded(10, 1000)
    assert sorted((c.name, c.members) for c in chats.chats) == [("Rust", 1), ("general", 1)]


# -- messages ------------------------------------------------------------------------------


async def test_post_chat_and_private(make_store: MakeStore) -> None:
    s = await make_store(rate=1, burst=3)
    await register(s, "ann", "bob")
    assert await post(s, "ann", keys.GENERAL, "1", "2", "3", "4") == [OK, OK, OK, RATE]
    again = await s.post_chat("ann", "ANN", keys.GENERAL, "general", ["5"])
    assert again[0].status is RATE and 0 < again[0].retry_ms <= 1000
    assert await post(s, "bob", "nowhere", "x") == [PostStatus.NOT_MEMBER]
    assert (await s.post_private("bob", "BOB", "nobody", "x")).status is PostStatus.NO_USER
    assert (await s.post_private("bob", "BOB", "ann", "hi")).status is OK
    assert (await s.post_private("ann", "ANN", "bob", "hi")).status is RATE  # one bucket
    info = await s.ban("bob", 60)
    assert info is not None
    refused = await s.post_chat("bob", "BOB", keys.GENERAL, "general", ["x", "y"])
    assert [r.until_ms for r in refused] == [info.until_ms] * 2
    assert refused[0].status is BANNED
    dm = await s.post_private("bob", "BOB", "ann", "x")
    assert (dm.status, dm.until_ms) == (BANNED, info.until_ms)
    history = await s.history(keys.GENERAL, "general", 10)
    assert [m.text for m in history] == ["1", "2", "3"]
    assert [m.key for m in history] == sorted({m.key for m in history})
    now = time.time() * 1000
    assert all(abs(m.key[0] - now) < 10_000 for m in history)  # ids carry the time
    assert (await user_state(s, "ann")).peers == {"bob"}


async def test_backlog_and_read_after_keep_the_order_of_sending(store: RedisStore) -> None:
    """Messages in three conversations (on a cluster, three slots, likely three shards)
    come back in the order they were sent."""
    await register(store, "ann", "bob")
    await store.join("ann", "c1", "c1", "o")
    await store.join("bob", "c1", "c1", "o")
    sent: list[str] = []
    for i in range(6):
        text = f"m{i}"
        if i % 3 == 0:
            assert await post(store, "ann", keys.GENERAL, text) == [OK]
        elif i % 3 == 1:
            assert (await store.post_private("ann", "ANN", "bob", text)).status is OK
        else:
            assert await post(store, "ann", "c1", text) == [OK]
        sent.append(text)
    state = await user_state(store, "bob")
    backlog = await store.backlog("bob", state, 100)
    assert [m.text for m in backlog.messages] == sent and backlog.cut == {}
    convs = [keys.chat_conv(keys.GENERAL), keys.chat_conv("c1"), keys.dm_conv("ann", "bob")]
    after = await store.read_after(convs, {})
    assert [m.text for m in after] == sent
    # cursors move forward only, and the backlog starts after them
    general = keys.chat_conv(keys.GENERAL)
    first = backlog.messages[0]
    await store.advance_cursors({"bob": {general: backlog.messages[3].id}})
    await store.advance_cursors({"bob": {general: first.id}})  # late, older: ignored
    state = await user_state(store, "bob")
    assert state.cursors == {general: backlog.messages[3].id}
    assert [m.text for m in (await store.backlog("bob", state, 100)).messages] == sent[1:3] + sent[
        4:
    ]
    short = await store.backlog("bob", await user_state(store, "bob"), 2)
    assert [m.text for m in short.messages] == ["m4", "m5"]
    assert sum(short.cut.values()) == 2
    mid = after[2].id
    assert [m.text for m in await store.read_after(convs, {keys.chat_conv("c1"): mid})] == [
        "m0",
        "m1",
        "m3",
        "m4",
        "m5",
    ]


async def test_who_and_online_counts(make_store: MakeStore) -> None:
    s1, s2 = await make_store(), await make_store()
    await register(s1, "ann", "bob", "cid", "dan")
    await s1.join("ann", "c1", "c1", "o")
    await s1.join("cid", "c1", "c1", "o")
    await s1.heartbeat({"ann", "bob"})
    await s2.heartbeat(set())
    await s2.set_online("cid", True)
    who = await s1.who_bounded(keys.GENERAL, 10, 1000)
    assert (who.names, who.total) == (["ANN", "BOB", "CID"], 3)
    some = await s2.who_bounded(keys.GENERAL, 2, 1000)
    assert len(some.names) == 2 and some.total == 3
    assert (await s1.who_bounded("c1", 10, 1000)).names == ["ANN", "CID"]
    chats = await s1.active_chats_bounded(10, 1000)
    assert [(c.name, c.members, c.online) for c in chats.chats] == [
        ("general", 4, 3),
        ("c1", 2, 2),
    ]
    await s2.set_online("cid", False)
    assert (await s1.who_bounded("c1", 10, 1000)).names == ["ANN"]
    await s1.gateway_gone()
    await s2.gateway_gone()
    assert (await s1.who_bounded(keys.GENERAL, 10, 1000)).total == 0
    assert (await s1.active_chats_bounded(10, 1000)).chats[0].online == 0


# -- complaints and bans -------------------------------------------------------------------


async def test_complaints_ban_at_threshold(make_store: MakeStore) -> None:
    s = await make_store(
        ban_threshold=2, complaints_per_address=1, ban_address_memory=4, complaints_per_hour=5
    )
    await register(s, "ann", "bob", "cid", "dan")
    await s.seen("bob", "10.0.0.9")
    assert (await s.complain("ann", "nobody", "1.1.1.1")).status is ComplaintStatus.NO_USER
    c = await s.complain("ann", "bob", "1.1.1.1")
    assert (c.status, c.count, c.name) == (ComplaintStatus.RECORDED, 1, "BOB")
    assert (await s.complain("ann", "bob", "1.1.1.2")).status is ComplaintStatus.AGAIN
    assert (await s.complain("cid", "bob", "1.1.1.1")).status is ComplaintStatus.ADDRESS
    assert [n for n, _ in await s.complaints_about("bob")] == ["ANN"]
    banned = await s.complain("cid", "bob", "2.2.2.2")
    assert (banned.status, banned.count) == (ComplaintStatus.BANNED, 2)
    assert banned.until_ms > time.time() * 1000 + 50_000
    assert (await s.complain("dan", "bob", "3.3.3.3")).status is ComplaintStatus.ALREADY_BANNED
    assert [(b.key, b.until_ms) for b in await s.bans()] == [("bob", banned.until_ms)]
    held = await s.new_name("eve", "eve", "10.0.0.9")
    assert held.held_until_ms == banned.until_ms  # bob's address may not register meanwhile
    assert (await s.new_name("eve", "eve", "10.0.0.8")).held_until_ms == 0
    assert await post(s, "bob", keys.GENERAL, "x") == [BANNED]
    assert (await user_state(s, "bob")).banned_until_ms == banned.until_ms
    assert await s.complaints_about("bob") == []


async def test_complaint_age_and_rate(make_store: MakeStore) -> None:
    s = await make_store(complaint_min_age=3600, complaints_per_hour=2)
    await register(s, "ann", "x", "y", "z")
    young = await s.complain("ann", "x", "1.1.1.1")
    assert young.status is ComplaintStatus.TOO_NEW and 3_590_000 < young.wait_ms <= 3_600_000
    s = await make_store(complaints_per_hour=2)
    assert (await s.complain("ann", "x", "1.1.1.1")).status is ComplaintStatus.RECORDED
    assert (await s.complain("ann", "y", "1.1.1.1")).status is ComplaintStatus.RECORDED
    rate = await s.complain("ann", "z", "1.1.1.1")
    assert rate.status is ComplaintStatus.RATE and 3_590_000 < rate.wait_ms <= 3_600_000
    assert await s.complaints_about("z") == []


async def test_ban_unban_and_the_bans_list(make_store: MakeStore) -> None:
    store = await make_store(ban_address_memory=4)
    await register(store, "ann", "bob")
    await store.seen("bob", "10.9.9.9")
    assert await store.ban("nobody", 60) is None
    info = await store.ban("bob", 60)
    assert info is not None and (info.key, info.name) == ("bob", "BOB")
    # a moderator's ban holds no address back from new accounts (only complaints do)
    assert (await store.new_name("zed", "zed", "10.9.9.9")).held_until_ms == 0
    assert await store.holds() == []
    assert abs(info.until_ms - (time.time() * 1000 + 60_000)) < 5000
    assert [(b.key, b.name, b.until_ms) for b in await store.bans()] == [
        ("bob", "BOB", info.until_ms)
    ]
    assert [u.banned_until_ms for u in await store.users(10) if u.key == "bob"] == [info.until_ms]
    assert await post(store, "bob", keys.GENERAL, "x") == [BANNED]
    assert await store.unban("bob")
    assert not await store.unban("bob")
    assert await store.bans() == []
    assert await post(store, "bob", keys.GENERAL, "x") == [OK]
    assert await store.set_moderator("ann", True) and await store.is_moderator("ann")
    assert not await store.set_moderator("nobody", True)


async def test_holds_of_bans_after_complaints_are_listed_and_lifted(
    make_store: MakeStore,
) -> None:
    s = await make_store(ban_threshold=1, ban_address_memory=4, complaints_per_address=0)
    await register(s, "ann", "bob", "cid")
    await s.seen("bob", "10.0.0.1")
    await s.seen("bob", "10.0.0.2")
    await s.seen("cid", "10.0.0.2")  # cid shares one of bob's addresses
    bob = await s.complain("ann", "bob", "1.1.1.1")
    cid = await s.complain("ann", "cid", "1.1.1.1")
    assert bob.status is cid.status is ComplaintStatus.BANNED
    held = {h.address: h for h in await s.holds()}
    assert set(held) == {"10.0.0.1", "10.0.0.2"}
    assert [(b.key, b.name) for b in held["10.0.0.2"].bans] == [("bob", "BOB"), ("cid", "CID")]
    assert held["10.0.0.1"].until_ms == bob.until_ms
    # lifting bob's ban frees the address only he held; cid's ban still holds the other
    assert await s.unban("bob")
    assert (await s.new_name("x", "x", "10.0.0.1")).held_until_ms == 0
    assert (await s.new_name("x", "x", "10.0.0.2")).held_until_ms == cid.until_ms
    assert [(h.address, [b.key for b in h.bans]) for h in await s.holds()] == [
        ("10.0.0.2", ["cid"])
    ]
    assert await s.lift_hold("10.0.0.2")  # an operator's choice, whatever holds it
    assert not await s.lift_hold("10.0.0.2")
    assert await s.holds() == []
    assert (await s.new_name("x", "x", "10.0.0.2")).held_until_ms == 0
    assert [b.key for b in await s.bans()] == ["cid"]  # the ban itself stays


async def test_delete_user_and_forget_unseen(store: RedisStore) -> None:
    await register(store, "ann", "bob", "cid")
    await store.join("ann", "solo", "solo", "o")
    await store.join("ann", "duo", "duo", "o")
    await store.join("bob", "duo", "duo", "o")
    assert (await store.post_private("ann", "ANN", "bob", "hi")).status is OK
    await store.issue_token("ann", "h1", 60, None, 5)
    await store.ban("ann", 60)
    assert await store.delete_user("ann", "ann")
    assert not await store.delete_user("ann", "ann")
    assert await store.get_account("ann") is None
    assert await token_name(store, "ann", "h1") is None
    assert (await user_state(store, "bob")).peers == set()
    assert await store.read_after([keys.dm_conv("ann", "bob")], {}) == []
    chats = await store.active_chats_bounded(10, 1000)
    assert [(c.name, c.members) for c in chats.chats] == [("general", 2), ("duo", 1)]
    assert await store.bans() == []
    assert not (await store.new_name("ann", "ann", "1.1.1.1")).look_alike
    assert await store.register("ann", "Ann", "pw", "ann", "") is Registration.CREATED
    assert (await user_state(store, "ann")).banned_until_ms is None  # nothing survives
    # accounts not seen for the account lifetime go, the oldest first, `limit` at a time
    await store.redis.zadd(keys.seen(), {"bob": 1, "cid": 2})
    assert await store.forget_unseen(1) == 1
    assert await store.get_account("bob") is None and await store.get_account("cid")
    assert await store.forget_unseen(10) == 1
    assert await store.forget_unseen(10) == 0
    listed = await store.active_chats_bounded(10, 1000)
    assert [(c.name, c.members) for c in listed.chats] == [("general", 1)]


async def test_tokens(store: RedisStore) -> None:
    await register(store, "ann")
    await store.issue_token("ann", "h1", 60, None, 3)
    assert await token_name(store, "ann", "h1") == "ANN"
    assert await token_name(store, "ann", "h2") is None
    await store.issue_token("ann", "h2", 60, "h1", 3)
    assert await token_name(store, "ann", "h1") is None
    assert await token_name(store, "ann", "h2") == "ANN"
    await store.revoke_token("ann", "h2")
    assert await token_name(store, "ann", "h2") is None
    for h in ("a", "b", "c", "d"):
        await store.issue_token("ann", h, 60, None, 3)
    assert [await token_name(store, "ann", h) for h in "abcd"] == [None, "ANN", "ANN", "ANN"]
    await store.set_password("ann", "pw2")
    assert await token_name(store, "ann", "d") is None
    assert (await store.get_account("ann")) is not None


# -- races: two gateways at once ------------------------------------------------------------


async def test_a_burst_through_two_gateways_is_the_burst(make_store: MakeStore) -> None:
    """One user's posts through two gateways at the same instant: the bucket (one slot)
    lets `burst` through in all, however the two batches interleave."""
    g1 = await make_store(rate=0.001, burst=5)
    g2 = await make_store(rate=0.001, burst=5)
    await register(g1, "ann")
    for _round in range(3):
        await g1.redis.delete(keys.rate("ann"))
        futures = [
            g.post_chat("ann", "ANN", keys.GENERAL, "general", [f"{i}"])
            for i in range(10)
            for g in (g1, g2)
        ]
        futures.append(g1.post_chat("ann", "ANN", keys.GENERAL, "general", ["x"] * 5))
        futures.append(g2.post_chat("ann", "ANN", keys.GENERAL, "general", ["y"] * 5))
        results: list[PostResult] = [r for rs in await asyncio.gather(*futures) for r in rs]
        assert sum(r.status is OK for r in results) == 5
        assert {r.status for r in results} == {OK, RATE}


async def test_posts_after_a_ban_returned_are_refused(make_store: MakeStore) -> None:
    """A ban by one gateway while another posts for the user: whatever was sent before
    may be accepted; nothing sent after ban() returned is."""
    g1, g2 = await make_store(), await make_store()
    await register(g1, "ann")
    after_ban = False
    late: list[asyncio.Future[list[PostResult]]] = []
    early: list[asyncio.Future[list[PostResult]]] = []

    async def flood() -> None:
        for i in range(20_000):
            f = g2.post_chat("ann", "ANN", keys.GENERAL, "general", [str(i)])
            (late if after_ban else early).append(f)
            await asyncio.sleep(0.0002 if i % 2 else 0)
            if len(late) >= 100:
                return

    task = asyncio.create_task(flood())
    await asyncio.sleep(0.01)
    assert await g1.ban("ann", 60)
    after_ban = True
    await task
    assert late, "the flood ended before the ban"
    late_results = [r for rs in await asyncio.gather(*late) for r in rs]
    assert {r.status for r in late_results} == {BANNED}
    early_results = [r for rs in await asyncio.gather(*early) for r in rs]
    assert OK in {r.status for r in early_results}


async def test_concurrent_joins_exceed_the_limit_by_at_most_those_in_flight(
    make_store: MakeStore,
) -> None:
    """The user's chat count is read before the join (its slot), the member added in the
    chat's slot: joins in flight at once can each pass. Observed and allowed: at most the
    limit + the joins in flight - 1 (here 4 + 7). Observed on both, every run: 2 of 8 pass
    where 1 may (the limit exceeded by one)."""
    g1 = await make_store(max_user_chats=4)
    g2 = await make_store(max_user_chats=4)
    await register(g1, "ann")
    await g1.join("ann", "a", "a", "o")
    await g1.join("ann", "b", "b", "o")  # 3 chats with general: one more allowed
    in_flight = 8
    results = await asyncio.gather(
        *((g1 if i % 2 else g2).join("ann", f"x{i}", f"x{i}", "o") for i in range(in_flight))
    )
    joined = sum(m.changed for m in results)
    chats = len((await user_state(g1, "ann")).chats)
    assert 1 <= joined <= in_flight
    assert chats == 3 + joined <= 4 + in_flight - 1
    # once the count is read again, nothing more passes
    assert (await g1.join("ann", "y", "y", "o")).status is JoinStatus.USER_LIMIT
    print(f"concurrent joins: {joined} of {in_flight} passed a limit of 1 more")


async def test_add_returns_once_subscribed(make_store: MakeStore) -> None:
    """A gateway subscribes, then reads the backlog: what is published after `add`
    returned must arrive, also on a shard the gateway had no link to yet."""
    g1, g2 = await make_store(), await make_store()
    async with listening(g2) as (links, events):
        users = [f"u{i}" for i in range(12)]  # on every shard, most likely
        await links.add(users=users)
        for u in users:
            await g1.kick(u)
        await until_events(events, len(users), tries=50, every=0.02)
        assert sorted(e.user for e in events) == sorted(users)


async def test_a_login_storm_subscribes_in_one_write_and_every_login_is_live(
    make_store: MakeStore, store_url: str
) -> None:
    """Many logins subscribe in one event-loop turn: each `add` returns once acknowledged
    and what is published afterwards reaches every user. On a standalone Redis the turn's
    channels went out as SUBSCRIBE_CHUNK-sized SUBSCRIBEs of one write, not one per login."""
    from store.pubsub import SUBSCRIBE_CHUNK

    g1, g2 = await make_store(), await make_store()
    admin = None if g2.cluster else redis.Redis.from_url(store_url, decode_responses=True)
    async with listening(g2) as (links, events):
        try:
            if admin is not None:
                admin.config_resetstat()
            users = [f"storm{i}" for i in range(2 * SUBSCRIBE_CHUNK + 100)]
            await asyncio.gather(*(links.add(users=[u]) for u in users))
            if admin is not None:
                stats = admin.info("commandstats")
                assert stats["cmdstat_subscribe"]["calls"] == 3  # 1,100 channels, 500 a command
            await asyncio.gather(*(g1.kick(u) for u in users))
            await until_events(events, len(users), tries=100, every=0.05)
            assert sorted(e.user for e in events) == sorted(users)
        finally:
            if admin is not None:
                admin.close()


async def test_subscribed_unsubscribed_and_subscribed_again_in_one_turn_ends_subscribed(
    make_store: MakeStore, store_url: str
) -> None:
    """Two logins and a logout of one user in one turn: the writes keep their order (the
    pending SUBSCRIBE goes out before the UNSUBSCRIBE), so the channel ends subscribed;
    a login and a logout in one turn end unsubscribed (checked on a standalone Redis: on
    a cluster an `add` over several shards reaches its links a step later, by a gather)."""
    g1, g2 = await make_store(), await make_store()

    async def remove(user: str) -> None:
        links.remove(users=[user])

    async with listening(g2) as (links, events):
        await links.add(users=["other"])  # the links are up (a cluster's made on demand)
        # gather runs each one's first step in the same turn, in this order
        await asyncio.gather(links.add(users=["ann"]), remove("ann"), links.add(users=["ann"]))
        await asyncio.sleep(0.2)  # the UNSUBSCRIBE's reply is in, if one was sent last
        await g1.kick("ann")
        await until_events(events, 1, tries=100, every=0.02)
        assert [e.user for e in events] == ["ann"]
        if not g2.cluster:
            await asyncio.gather(links.add(users=["bob"]), remove("bob"))
            await asyncio.sleep(0.2)
            admin = redis.Redis.from_url(store_url, decode_responses=True)
            try:
                subscribed = dict(
                    admin.pubsub_numsub(*(keys.user_channel(u) for u in ["ann", "bob"]))
                )
            finally:
                admin.close()
            assert subscribed == {keys.user_channel("ann"): 1, keys.user_channel("bob"): 0}


async def test_scripts_are_loaded_again_when_redis_lost_them(
    make_store: MakeStore, store_url: str
) -> None:
    """SCRIPT FLUSH (or a replica promoted without them): every path loads them again."""
    s = await make_store()
    await register(s, "ann", "bob")
    nodes = [store_url]
    if s.cluster:
        assert s.slots is not None
        nodes = [f"redis://{h}:{p}" for h, p in s.slots.masters()]
    for url in nodes:
        r = redis.Redis.from_url(url)
        try:
            r.script_flush()
        finally:
            r.close()
    assert await post(s, "ann", keys.GENERAL, "hi") == [OK]
    for url in nodes:
        r = redis.Redis.from_url(url)
        try:
            r.script_flush()
        finally:
            r.close()
    assert (await s.post_private("ann", "ANN", "bob", "x")).status is OK
    for url in nodes:
        r = redis.Redis.from_url(url)
        try:
            r.script_flush()
        finally:
            r.close()
    await s.advance_cursors({"ann": {keys.chat_conv(keys.GENERAL): "1-0"}})
    assert (await user_state(s, "ann")).cursors == {keys.chat_conv(keys.GENERAL): "1-0"}
    assert (await s.join("ann", "rust", "rust", "o")).changed


async def test_wait_for_a_replica(make_store: MakeStore, request: Any) -> None:
    """With wait_replica_ms a post is answered once a replica has it (on a cluster; a
    standalone Redis without replicas leaves every post unconfirmed)."""
    s = await make_store(wait_replica_ms=2000)
    await register(s, "ann")
    results = await s.post_chat("ann", "ANN", keys.GENERAL, "general", ["a", "b"])
    if not s.cluster:
        assert {r.status for r in results} == {PostStatus.UNCONFIRMED}
        return
    assert [r.status for r in results] == [OK, OK]
    cluster: StoreCluster = request.getfixturevalue("_store_cluster")
    found = 0
    for port in set(cluster.ports) - set(cluster.masters()):
        r = redis.Redis(port=port, decode_responses=True)
        try:
            r.execute_command("READONLY")
            found += int(r.xlen(keys.stream(keys.GENERAL)) == 2)
        except redis.ResponseError:  # MOVED: not this slot's replica
            pass
        finally:
            r.close()
    assert found == 1


async def test_seeds_and_unreachable_redis(store_url: str) -> None:
    """On a cluster, a comma-separated seed list whose first node is down works; nothing
    up is StoreUnavailable, not a traceback from deep inside redis-py. (A standalone
    Redis named second in a list is probed but not used: the store connects to the
    first seed.)"""
    dead = free_port()
    host_port = store_url.removeprefix("redis://").split("/")[0]
    if "/" not in store_url.removeprefix("redis://"):  # the cluster's URL has no db
        s = RedisStore(f"redis://127.0.0.1:{dead},{host_port}", **DEFAULTS, gateway_id="gw")
        try:
            await s.start()
            assert s.cluster
            await register(s, "ann")
            assert await post(s, "ann", keys.GENERAL, "x") == [OK]
        finally:
            await s.close()
    s = RedisStore(f"redis://127.0.0.1:{dead}", **DEFAULTS, gateway_id="gw")
    try:
        with pytest.raises(StoreUnavailable):
            await s.start()
    finally:
        await s.close()


async def test_concurrent_complaints(make_store: MakeStore) -> None:
    """The deciding step (the target's slot) counts a complainer once however many
    gateways send it at once; the hourly allowance is read before it (the complainer's
    slot), so complaints in flight at once may each pass it (observed and allowed: at
    most the allowance + those in flight - 1)."""
    g1 = await make_store(ban_threshold=10, complaints_per_hour=2)
    g2 = await make_store(ban_threshold=10, complaints_per_hour=2)
    targets = [f"t{i}" for i in range(6)]
    await register(g1, "ann", "cid", "bob", *targets)
    same = await asyncio.gather(
        *((g1 if i % 2 else g2).complain("cid", "bob", f"10.0.0.{i}") for i in range(6))
    )
    assert sum(c.status is ComplaintStatus.RECORDED for c in same) == 1
    assert len(await g1.complaints_about("bob")) == 1
    spread = await asyncio.gather(
        *((g1 if i % 2 else g2).complain("ann", t, "10.0.1.1") for i, t in enumerate(targets))
    )
    recorded = sum(c.status is ComplaintStatus.RECORDED for c in spread)
    assert 2 <= recorded <= 2 + len(targets) - 1
    assert {c.status for c in spread} <= {ComplaintStatus.RECORDED, ComplaintStatus.RATE}
    print(f"concurrent complaints: {recorded} of {len(targets)} passed an allowance of 2")
    late = await g1.complain("ann", "bob", "10.0.1.1")
    assert late.status is ComplaintStatus.RATE  # once recorded, the allowance holds


async def test_remove_then_add_again(make_store: MakeStore) -> None:
    """Unsubscribing channels of several slots at once, then subscribing them again."""
    g1, g2 = await make_store(), await make_store()
    async with listening(g2) as (links, events):
        users = [f"u{i}" for i in range(8)]
        await links.add(users=users)
        links.remove(users=users[:6])
        await asyncio.sleep(0.1)  # SUNSUBSCRIBE is not waited for
        assert links.count == 2
        for u in users:
            await g1.kick(u)
        await asyncio.sleep(0.3)
        assert sorted(e.user for e in events) == users[6:]
        events.clear()
        await links.add(users=users[:3])
        for u in users[:3]:
            await g1.kick(u)
        await until_events(events, 3, tries=50, every=0.02)
        assert sorted(e.user for e in events) == users[:3]


async def test_the_documented_acl_user_on_a_cluster(_store_cluster: StoreCluster) -> None:
    """docs/REDIS.md's least-privilege rule on every node of a cluster: the store starts
    (redis-py's cluster client asks COMMAND and CLUSTER SLOTS) and serves, and no command
    is refused. (tests/e2e/test_tls_acl.py runs the rule on a standalone Redis.)"""
    from tests.e2e.test_tls_acl import GATEWAY_ACL

    cluster = _store_cluster
    cluster.flushall()
    admins = [redis.Redis(port=p, decode_responses=True) for p in cluster.ports]
    for r in admins:
        r.execute_command("ACL", "SETUSER", "gw", "on", ">pw", *GATEWAY_ACL.split())
        r.execute_command("ACL", "LOG", "RESET")
    s = RedisStore(
        f"redis://gw:pw@127.0.0.1:{cluster.ports[0]}", **{**DEFAULTS, "rate": 5}, gateway_id="gw"
    )
    narrow = RedisStore(f"redis://gw2:pw@127.0.0.1:{cluster.ports[0]}", **DEFAULTS, gateway_id="g")
    for r in admins:  # the rule without +command: one clear error, no traceback
        rule = GATEWAY_ACL.replace(" +command", "")
        r.execute_command("ACL", "SETUSER", "gw2", "on", ">pw", *rule.split())
    try:
        with pytest.raises(StoreUnusable, match="ACL a gateway needs"):
            await narrow.start()
    finally:
        await narrow.close()
        for r in admins:
            r.execute_command("ACL", "DELUSER", "gw2")
    try:
        await s.start()
        assert s.cluster
        await register(s, "ann", "bob")
        await s.join("ann", "rust", "rust", "o")
        assert await post(s, "ann", "rust", "x") == [OK]
        assert (await s.post_private("ann", "ANN", "bob", "x")).status is OK
        await s.heartbeat({"ann"})
        assert (await s.who_bounded("rust", 10, 1000)).names == ["ANN"]
        await s.active_chats_bounded(10, 1000)
        lim = LoginLimits(per_pair=1, per_nick=5, nicks_per_address=1, window=60)
        await s.login_gate("ann", "10.0.0.1", lim, take=True)
        assert (await s.login_gate("bob", "10.0.0.1", lim, take=True)).gate is LoginGate.ADDRESS
        await s.complain("ann", "bob", "10.0.0.1")
        await s.leave("ann", "rust", "o")
        denied = [e for r in admins for e in r.acl_log() if e.get("username") == "gw"]
        assert denied == []
    finally:
        await s.close()
        for r in admins:
            r.execute_command("ACL", "DELUSER", "gw")
            r.close()


async def test_a_channel_removed_and_added_again_is_not_taken_for_a_slot_move(
    cluster_url: str,
) -> None:
    """The last local reader leaves and another joins at once: the server's reply to our
    own SUNSUBSCRIBE arrives after the channel was added again. It is ours, not a slot
    move: no gap fill (which holds every live delivery), and the channel stays live."""
    from store.cluster import Seeds, SlotMap
    from store.pubsub import ShardedLinks

    fills: list[float] = []
    events: list[Any] = []

    async def on_reconnect(lost_at: float) -> None:
        fills.append(lost_at)

    links = ShardedLinks(SlotMap(Seeds.parse(cluster_url), 2.0), events.extend, on_reconnect,
                         lambda up: None)  # fmt: skip
    await links.start()
    try:
        await links.add(chats=["c0"])
        for _ in range(5):
            links.remove(chats=["c0"])
            await links.add(chats=["c0"])
        await asyncio.sleep(0.5)
        assert fills == []
        r = redis.RedisCluster.from_url(cluster_url.split(",")[0], decode_responses=True)
        try:
            r.spublish(keys.chat_channel("c0"), "M\x1f1-0\x1fc:c0\x1fann\x1fc0\x1fstill here")
        finally:
            r.close()
        await until_events(events, 1, tries=100, every=0.02)
        assert [m.text for e in events for m in e.messages] == ["still here"]
    finally:
        await links.close()


async def test_a_redis_that_refuses_writes_is_unavailable_to_a_login(redis_url: str) -> None:
    """An error reply on the logins' pipeline (here OOM under noeviction) reaches the
    session as the contract's StoreUnavailable (a refusal), not as a raw reply error the
    session would call an internal error; the logins of one turn each get their own."""
    store = RedisStore(redis_url, **{**DEFAULTS, "gateway_id": "gw-oom"})
    await store.start()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await register(store, "ann", "bob")
        r.config_set("maxmemory", 1)
        try:
            results = await asyncio.gather(
                store.enter("ann", "10.0.0.1"),
                store.enter("bob", "10.0.0.1"),
                return_exceptions=True,
            )
        finally:
            r.config_set("maxmemory", 0)
        assert all(isinstance(e, StoreRefused) for e in results), results
        assert results[0] is not results[1]
        assert (await store.enter("ann", "10.0.0.1")).chats == {"general": "general"}
    finally:
        r.close()
        await store.close()
