"""The contract's chats, posts, stored messages, read positions, events, presence and
operator records, on every store."""

from __future__ import annotations

import asyncio
from typing import Any

from store.contract import (
    GENERAL,
    Change,
    ChatPosts,
    ChatPresence,
    Conv,
    JoinStatus,
    Kind,
    MemberJoined,
    MemberLeft,
    Position,
    PostStatus,
    PrivatePost,
    Range,
    TagsSent,
    UserBanned,
)
from tests.contract.conftest import Backend, MakeStore, listening, post, register

OK, RATE, BANNED = PostStatus.OK, PostStatus.RATE, PostStatus.BANNED
GEN = Conv.of_chat(GENERAL)


async def user_state(s: Any, user: str) -> Any:
    return await s.enter(user, "127.0.0.1")


async def test_join_leave_and_limits(make_store: MakeStore) -> None:
    s = await make_store(max_user_chats=3, max_chats=4, chat_creations=2)
    await register(s, "ann", "bob", "cid")
    m = await s.join("ann", "c1", "C1", "o")
    assert (m.changed, m.name, m.status) == (True, "C1", JoinStatus.OK)
    again = await s.join("ann", "c1", "c1", "o")
    assert (again.changed, again.name) == (False, "C1")  # the name as first typed
    assert (await s.join("ann", "c2", "c2", "o")).changed
    assert (await s.join("bob", "c3", "c3", "o")).changed
    assert (await s.join("ann", "c3", "c3", "o")).status is JoinStatus.USER_LIMIT  # 3 chats
    assert (await s.join("bob", "c1", "c1", "o")).changed  # joining is no creation
    assert (await s.leave("ann", "c2", "o")).changed  # c2 is empty now: deleted
    assert not await s.is_member("ann", "c2") and await s.is_member("bob", "c1")
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
    assert [c.name for c in (await s.active_chats_bounded(2, 1000)).chats] == ["general", "C1"]
    left = await s.leave("bob", "c3", "o")
    assert (left.changed, left.name) == (True, "c3")
    assert not (await s.leave("bob", "c3", "o")).changed
    assert (await s.active_chats_bounded(10, 1000)).total == 3
    assert set((await user_state(s, "bob")).chats) == {GENERAL, "c1"}
    assert (await s.join("ann", "c3", "C3", "o")).status is JoinStatus.CREATE_RATE


async def test_a_chat_emptied_and_made_again_takes_the_new_name(store: Any) -> None:
    await register(store, "ann")
    await store.join("ann", "den", "Den", "o")
    await store.leave("ann", "den", "o")
    assert (await store.join("ann", "den", "DEN", "o")).name == "DEN"


async def test_a_chat_is_not_created_while_a_live_chat_looks_the_same(store: Any) -> None:
    """`look` is the name's skeleton (the core's `name_skeleton`): `#poo1` is not made
    beside `#Pool`, whose name it is given; once `#Pool` has emptied it can be."""
    await register(store, "ann", "bob")
    assert (await store.join("ann", "pool", "Pool", "o", "poo1")).status is JoinStatus.OK
    alike = await store.join("bob", "poo1", "poo1", "o", "poo1")
    assert (alike.status, alike.name, alike.changed) == (JoinStatus.LOOK_ALIKE, "Pool", False)
    assert not await store.is_member("bob", "poo1")
    assert (await store.join("bob", "pool", "pool", "o", "poo1")).status is JoinStatus.OK
    await store.leave("ann", "pool", "o")
    await store.leave("bob", "pool", "o")
    made = await store.join("bob", "poo1", "poo1", "o", "poo1")
    assert (made.status, made.changed) == (JoinStatus.OK, True)
    # the look now belongs to #poo1: #Pool cannot come back, a member of #poo1 rejoins
    again = await store.join("ann", "pool", "POOL", "o", "poo1")
    assert (again.status, again.name) == (JoinStatus.LOOK_ALIKE, "poo1")
    assert (await store.join("bob", "poo1", "poo1", "o", "poo1")).status is JoinStatus.OK


async def test_a_look_is_recorded_at_creation_and_never_refuses_a_join(store: Any) -> None:
    """Only a creation records its look: a chat made without one (before looks were
    recorded) is not protected, and joining an existing chat is never refused, whatever
    look it is typed with."""
    await register(store, "ann", "bob", "cy")
    await store.join("ann", "rn", "rn", "o")  # no look recorded
    assert (await store.join("bob", "m", "m", "o", "rn")).status is JoinStatus.OK
    assert (await store.join("cy", "rn", "RN", "o", "rn")).status is JoinStatus.OK
    assert (await store.join("cy", "m", "M", "o", "rn")).status is JoinStatus.OK
    await store.join("ann", "rn", "rn", "o", "rn")  # a member again: still no refusal
    await store.leave("bob", "m", "o")
    await store.leave("cy", "m", "o")
    assert (await store.join("bob", "m", "m", "o", "rn")).status is JoinStatus.OK  # re-made


async def test_events_reach_the_subscribed_gateway(make_store: MakeStore, backend: Backend) -> None:
    g1, g2 = await make_store(), await make_store()
    await register(g1, "ann", "bob")
    async with listening(g2) as (links, events):
        await links.add(chats=[GENERAL, "rust"], users=["ann", "bob"])
        assert links.count == 4
        await g1.join("ann", "rust", "Rust", "s1")
        assert await post(g1, "ann", "rust", "r1", "r2") == [OK, OK]
        assert (await g1.post_private("ann", "ANN", "bob", "psst")).status is OK
        await g1.leave("ann", "rust", "s2")
        await g1.ban("bob", 60)
        await backend.until(lambda: len(events) >= 6)
        joined = next(e for e in events if isinstance(e, MemberJoined))
        assert joined == MemberJoined("ann", "rust", "Rust", "s1")
        chat = next(e for e in events if isinstance(e, ChatPosts))
        assert chat.chat == "rust" and [(m.text, m.where) for m in chat.messages] == [
            ("r1", "rust"),  # the chat's name as the poster's gateway gave it
            ("r2", "rust"),
        ]
        assert chat.messages[0].pos < chat.messages[1].pos
        assert {m.conv for m in chat.messages} == {Conv.of_chat("rust")}
        dms = [e for e in events if isinstance(e, PrivatePost)]
        assert {e.user for e in dms} == {"ann", "bob"}
        (m,) = {e.message for e in dms}
        assert (m.conv, m.sender, m.where, m.text) == (
            Conv.private("bob", "ann"),
            "ANN",
            "BOB",
            "psst",
        )
        assert MemberLeft("ann", "rust", "Rust", "s2") in events
        banned = next(e for e in events if isinstance(e, UserBanned))
        assert banned.user == "bob" and banned.by_moderator
        # unsubscribed: nothing more of #rust or bob; ann's still come
        links.remove(chats=["rust"], users=["bob"])
        events.clear()
        await g1.join("bob", "rust", "Rust", "s3")
        await post(g1, "bob", "rust", "unseen")
        await g1.kick("bob")
        await g1.join("ann", "den", "Den", "s4")
        await backend.until(lambda: len(events) >= 1)
        assert events == [MemberJoined("ann", "den", "Den", "s4")]


async def test_post_chat_and_private(make_store: MakeStore, backend: Backend) -> None:
    s = await make_store(rate=1, burst=3)
    await register(s, "ann", "bob")
    assert await post(s, "ann", GENERAL, "1", "2", "3", "4") == [OK, OK, OK, RATE]
    again = await s.post_chat("ann", "ANN", GENERAL, "general", ["5"])
    assert again[0].status is RATE and 0 < again[0].retry_ms <= 1000
    assert await post(s, "bob", "nowhere", "x") == [PostStatus.NOT_MEMBER]
    assert (await s.post_private("bob", "BOB", "nobody", "x")).status is PostStatus.NO_USER
    assert (await s.post_private("bob", "BOB", "ann", "hi")).status is OK
    assert (await s.post_private("ann", "ANN", "bob", "hi")).status is RATE  # one bucket
    info = await s.ban("bob", 60)
    assert info is not None
    refused = await s.post_chat("bob", "BOB", GENERAL, "general", ["x", "y"])
    assert [r.until_ms for r in refused] == [info.until_ms] * 2
    assert refused[0].status is BANNED
    dm = await s.post_private("bob", "BOB", "ann", "x")
    assert (dm.status, dm.until_ms) == (BANNED, info.until_ms)
    history = await s.history(GENERAL, "General", 10)
    assert [(m.text, m.where, m.sender) for m in history] == [
        ("1", "General", "ANN"),
        ("2", "General", "ANN"),
        ("3", "General", "ANN"),
    ]
    assert [m.pos for m in history] == sorted({m.pos for m in history})
    assert all(abs(m.ms - backend.now_ms()) < 10_000 for m in history)  # positions carry time
    assert [m.text for m in await s.history(GENERAL, "general", 2)] == ["2", "3"]
    assert (await user_state(s, "ann")).peers == {"bob"}
    await backend.wait(1.0)  # the bucket refills at 1 a second
    assert await post(s, "ann", GENERAL, "6", "7") == [OK, RATE]


async def test_backlog_and_read_after_keep_the_order_of_sending(store: Any) -> None:
    """Messages in three conversations (on a cluster, three slots, likely three shards)
    come back in the order they were sent."""
    await register(store, "ann", "bob")
    await store.join("ann", "c1", "c1", "o")
    await store.join("bob", "c1", "c1", "o")
    sent: list[str] = []
    for i in range(6):
        text = f"m{i}"
        if i % 3 == 0:
            assert await post(store, "ann", GENERAL, text) == [OK]
        elif i % 3 == 1:
            assert (await store.post_private("ann", "ANN", "bob", text)).status is OK
        else:
            assert await post(store, "ann", "c1", text) == [OK]
        sent.append(text)
    state = await user_state(store, "bob")
    backlog = await store.backlog("bob", state, 100)
    assert [m.text for m in backlog.messages] == sent and backlog.cut == {}
    assert [m.where for m in backlog.messages][:2] == ["", "BOB"]  # a chat's name: the reader's
    convs = [GEN, Conv.of_chat("c1"), Conv.private("ann", "bob")]
    after = await store.read_after(dict.fromkeys(convs))
    assert [m.text for m in after] == sent
    # cursors move forward only, and the backlog starts after them
    first = backlog.messages[0]
    await store.advance_cursors({"bob": {GEN: backlog.messages[3].pos}})
    await store.advance_cursors({"bob": {GEN: first.pos}})  # late, older: ignored
    state = await user_state(store, "bob")
    assert state.cursors == {GEN: backlog.messages[3].pos}
    assert await store.read_position("bob", GEN) == backlog.messages[3].pos
    assert await store.read_position("bob", convs[1]) is None
    unread = (await store.backlog("bob", state, 100)).messages
    assert [m.text for m in unread] == sent[1:3] + sent[4:]
    short = await store.backlog("bob", await user_state(store, "bob"), 2)
    assert [m.text for m in short.messages] == ["m4", "m5"]
    assert short.cut == {convs[1]: 1, convs[2]: 1}
    mid = after[2].pos
    assert [m.text for m in await store.read_after({**dict.fromkeys(convs), convs[1]: mid})] == [
        "m0",
        "m1",
        "m3",
        "m4",
        "m5",
    ]
    assert await store.read_after({}) == []


async def test_a_backlog_cut_counts_what_it_left_out(store: Any) -> None:
    await register(store, "ann", "bob")
    for i in range(5):
        assert await post(store, "ann", GENERAL, f"g{i}") == [OK]
    backlog = await store.backlog("bob", await user_state(store, "bob"), 3)
    assert [m.text for m in backlog.messages] == ["g2", "g3", "g4"]
    assert backlog.cut[GEN] >= 1  # at least one older unread message left out


async def test_read_range_bounds(store: Any) -> None:
    await register(store, "ann")
    for i in range(6):
        assert await post(store, "ann", GENERAL, f"m{i}") == [OK]
    ms = await store.read_range(GEN, Range(100))
    pos = [m.pos for m in ms]
    assert [m.text for m in ms] == [f"m{i}" for i in range(6)]
    assert {m.conv for m in ms} == {GEN}

    async def texts(want: Range) -> list[str]:
        return [m.text for m in await store.read_range(GEN, want)]

    assert await texts(Range(2)) == ["m0", "m1"]
    assert await texts(Range(2, newest=True)) == ["m4", "m5"]
    assert await texts(Range(10, after=pos[3])) == ["m4", "m5"]  # exclusive
    assert await texts(Range(10, before=pos[2])) == ["m0", "m1"]  # exclusive
    assert await texts(Range(1, before=pos[2], newest=True)) == ["m1"]
    assert await texts(Range(10, after=pos[1], before=pos[4])) == ["m2", "m3"]
    assert await texts(Range(10, after=pos[2].previous())) == ["m2", "m3", "m4", "m5"]
    assert await texts(Range(10, after=pos[5])) == []
    assert await texts(Range(10, after=Position(0, 0), before=Position(1, 0))) == []
    assert await store.read_range(Conv.of_chat("nowhere"), Range(10)) == []
    assert (await store.post_private("ann", "ANN", "ann", "note")).status is OK
    (dm,) = await store.read_range(Conv.private("ann", "ann"), Range(5))
    assert (dm.sender, dm.where, dm.text) == ("ANN", "ANN", "note")


async def test_the_latest_of_many_conversations_in_one_read(store: Any) -> None:
    await register(store, "ann", "bob")
    assert await post(store, "ann", GENERAL, "old", "new") == [OK, OK]
    assert (await store.post_private("ann", "ANN", "bob", "psst")).status is OK
    dm, nowhere = Conv.private("ann", "bob"), Conv.of_chat("nowhere")
    latest = await store.latest_many([GEN, nowhere, dm])
    assert [m.text if m else None for m in latest] == ["new", None, "psst"]
    assert await store.latest_many([]) == []


async def test_messages_live_for_the_lifetime_and_the_newest_are_kept(backend: Backend) -> None:
    s = await backend.make(message_ttl=1, max_stored=3)
    await register(s, "ann", "bob")
    assert await post(s, "ann", GENERAL, "a", "b", "c", "d") == [OK] * 4
    assert [m.text for m in await s.history(GENERAL, "general", 10)] == ["b", "c", "d"]
    assert (await s.post_private("ann", "ANN", "bob", "p")).status is OK
    await backend.wait(1.1)
    assert await s.history(GENERAL, "general", 10) == []
    assert await s.read_range(GEN, Range(10)) == []
    assert await s.read_after({GEN: None, Conv.private("ann", "bob"): None}) == []
    assert (await s.backlog("bob", await user_state(s, "bob"), 10)).messages == []
    assert await post(s, "ann", GENERAL, "e") == [OK]
    assert [m.text for m in await s.history(GENERAL, "general", 10)] == ["e"]


async def test_a_burst_through_two_gateways_is_the_burst(make_store: MakeStore) -> None:
    """One user's posts through two gateways at the same instant: the bucket lets `burst`
    through in all, however the two batches interleave."""
    g1 = await make_store(rate=0.001, burst=5)
    g2 = await make_store(rate=0.001, burst=5)
    await register(g1, "ann")
    results = await asyncio.gather(
        g1.post_chat("ann", "ANN", GENERAL, "general", ["x"] * 5),
        g2.post_chat("ann", "ANN", GENERAL, "general", ["y"] * 5),
    )
    statuses = [r.status for batch in results for r in batch]
    assert statuses.count(OK) == 5 and statuses.count(RATE) == 5


async def test_each_heartbeat_leaves_exactly_its_users_online(make_store: MakeStore) -> None:
    """A heartbeat writes what changed since the last (the whole set was one command of
    every user, which held Redis); the set still ends up exactly the users given, after
    logins and logouts written by themselves or not at all, and after it was lost."""
    s1, s2 = await make_store(), await make_store()
    crowd = [f"u{i:04}" for i in range(2500)]  # more than one command's worth (1,000)
    await register(s1, "ann", "bob", "cid", *crowd)

    async def online() -> list[str]:
        return (await s2.who_bounded(GENERAL, 5000, 10_000)).names

    await s1.heartbeat({"ann", "bob", *crowd})
    assert len(await online()) == 2502
    await s1.set_online("cid", True)  # a login between beats, written by itself
    await s1.heartbeat({"ann", "cid", *crowd[:1200]})  # bob and 1,300 left unannounced
    assert await online() == ["ANN", "CID", *(u.upper() for u in crowd[:1200])]
    await s1.set_online("dan", True)  # logged in and out between beats, the logout's
    await s1.heartbeat({"bob"})  # write lost: the beat without dan takes dan out
    assert await online() == ["BOB"]
    await s1.gateway_gone()  # its set is gone, as after Redis lost its data
    await s1.heartbeat({"ann", "bob"})
    assert await online() == ["ANN", "BOB"]
    await s1.gateway_gone()  # lost again, and a login makes the set anew before the beat:
    await s1.set_online("cid", True)  # the beat must not take it for the whole set
    await s1.heartbeat({"ann", "bob", "cid"})
    assert await online() == ["ANN", "BOB", "CID"]


async def test_an_acl_without_unlink_and_rename_still_rebuilds_the_set(redis_url: str) -> None:
    """The gateway's ACL of docs/REDIS.md before session 9 lacked UNLINK and RENAME: the
    set is rewritten in place instead (and that is logged), never left unknown."""
    from store import keys
    from store.redis import StorePolicy, open_store
    from tests.contract.conftest import DEFAULTS
    from tests.helpers import redis_client

    raw = redis_client(redis_url)
    try:
        raw.execute_command(
            "ACL", "SETUSER", "oldacl", "on", ">pw", "~*", "&*", "+@all", "-unlink", "-rename"
        )
    finally:
        raw.close()
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    policy = StorePolicy(**{**DEFAULTS, "gateway_id": "oldacl"})
    s = await open_store(f"redis://oldacl:pw@{host_port}/0", policy)
    try:
        await register(s, "ann", "zed")
        await s.heartbeat({"ann", "zed"})
        s._online_written = None  # as after a beat that failed part-way
        await s.heartbeat({"ann"})
        assert (await s.who_bounded(GENERAL, 10, 1000)).names == ["ANN"]
        assert s._no_swap
        raw = redis_client(redis_url)
        try:
            assert raw.ttl(keys.gateway_online("oldacl")) > 0
            assert not raw.exists(keys.gateway_online_next("oldacl"))
        finally:
            raw.close()
    finally:
        await s.close()


async def test_the_online_set_is_rebuilt_now_and_then(backend: Backend) -> None:
    """Whatever a gateway's set holds that it does not know of (a member written by a
    write it thinks failed) is gone within ONLINE_REBUILD_EVERY beats; the memory store
    writes the whole set at every beat."""
    from store import keys
    from store.redis.presence import ONLINE_REBUILD_EVERY
    from tests.helpers import redis_client

    s = await backend.make()
    await register(s, "ann", "zed")
    await s.heartbeat({"ann"})
    if backend.kind == "memory":
        await s.set_online("zed", True)
    else:  # behind the gateway's back
        raw = redis_client(backend.url)
        try:
            key = keys.gateway_online(s.policy.gateway_id)
            raw.sadd(key, "zed")
        finally:
            raw.close()
    names = []
    for _ in range(ONLINE_REBUILD_EVERY):
        await s.heartbeat({"ann"})
        names.append((await s.who_bounded(GENERAL, 10, 1000)).names)
    assert names[-1] == ["ANN"], names
    if backend.kind != "memory":
        assert names[0] == ["ANN", "ZED"], names  # the beats in between wrote changes only
        raw = redis_client(backend.url)
        try:
            assert raw.ttl(key) > 0  # and the swapped-in set expires like the old one
        finally:
            raw.close()


async def test_who_and_online_counts(make_store: MakeStore) -> None:
    s1, s2 = await make_store(), await make_store()
    await register(s1, "ann", "bob", "cid", "dan")
    await s1.join("ann", "c1", "c1", "o")
    await s1.join("cid", "c1", "c1", "o")
    await s1.heartbeat({"ann", "bob"})
    await s2.heartbeat(set())
    await s2.set_online("cid", True)
    who = await s1.who_bounded(GENERAL, 10, 1000)
    assert (who.names, who.total, who.capped) == (["ANN", "BOB", "CID"], 3, False)
    some = await s2.who_bounded(GENERAL, 2, 1000)
    assert len(some.names) == 2 and some.total == 3
    assert (await s1.who_bounded("c1", 10, 1000)).names == ["ANN", "CID"]
    assert (await s1.who_bounded("nowhere", 10, 1000)).total == 0
    chats = await s1.active_chats_bounded(10, 1000)
    assert [(c.name, c.members, c.online, c.capped) for c in chats.chats] == [
        ("general", 4, 3, False),
        ("c1", 2, 2, False),
    ]
    capped = (await s1.active_chats_bounded(10, 2)).chats[0]
    assert (capped.online, capped.capped) == (2, True)
    await s2.set_online("cid", False)
    assert (await s1.who_bounded("c1", 10, 1000)).names == ["ANN"]
    await s2.set_online_many(["cid", "dan"])
    assert (await s1.who_bounded(GENERAL, 10, 1000)).total == 4
    await s2.set_offline_many(["cid", "dan", "nobody"])
    assert (await s1.who_bounded(GENERAL, 10, 1000)).names == ["ANN", "BOB"]
    await s2.set_online_many(["cid", "dan"])
    assert await s1.live_gateways() == ["gw0", "gw1"]
    await s1.gateway_gone()
    assert await s1.live_gateways() == ["gw1"]
    assert (await s1.who_bounded(GENERAL, 10, 1000)).names == ["CID", "DAN"]
    await s2.gateway_gone()
    assert (await s1.who_bounded(GENERAL, 10, 1000)).total == 0
    assert (await s1.active_chats_bounded(10, 1000)).chats[0].online == 0


async def test_a_user_online_on_two_gateways_is_one_online_member(make_store: MakeStore) -> None:
    """/get_chats said "#solo (1 member, 2 online)" for a user on two gateways: a small
    chat's online count is exact, and no chat has more online than members."""
    s1, s2 = await make_store(), await make_store()
    await register(s1, "ann", "bob")
    await s1.join("ann", "solo", "solo", "o")
    await s1.heartbeat({"ann"})
    await s2.heartbeat({"ann", "bob"})
    chats = {c.name: c for c in (await s1.active_chats_bounded(10, 1000)).chats}
    assert (chats["solo"].members, chats["solo"].online) == (1, 1)
    assert (chats["general"].members, chats["general"].online) == (2, 2)
    assert (await s1.who_bounded("solo", 10, 1000)).total == 1
    # a larger chat is counted per gateway (no union of everyone online), at most its size
    crowd = [f"u{i}" for i in range(101)]
    await register(s1, *crowd)
    for u in crowd:
        await s1.join(u, "big", "big", "o")
    await s1.heartbeat({"ann", *crowd})
    await s2.heartbeat({"ann", "bob", *crowd})
    big = {c.name: c for c in (await s1.active_chats_bounded(10, 1000)).chats}["big"]
    assert (big.members, big.online) == (101, 101)


async def test_operator_records(make_store: MakeStore, backend: Backend) -> None:
    g1, g2 = await make_store(), await make_store()
    await g1.audit({"op": "ban", "user": "bob"}, 100)
    await g1.audit({"op": "unban", "user": "bob"}, 100)
    log = await g2.audit_log(0, 10)
    assert [e.fields for e in log] == [{"op": "ban", "user": "bob"}, {"op": "unban", "user": "bob"}]
    assert abs(log[0].ms - backend.now_ms()) < 10_000 and log[0].id != log[1].id
    assert [e.fields["op"] for e in await g2.audit_log(0, 1)] == ["unban"]  # the newest
    assert await g2.audit_log(log[1].ms + 1, 10) == []
    assert await g1.claim_epoch("e1") == "e1"
    assert await g2.claim_epoch("e2") == "e1"  # the first claim holds
    await g1.heartbeat(set())
    await g2.heartbeat(set())
    assert await g1.live_gateways() == ["gw0", "gw1"]
    assert await g1.count_address("10.0.0.1", 1, ["gw0", "gw1"]) == 1
    assert await g2.count_address("10.0.0.1", 1, ["gw0", "gw1"]) == 2
    assert await g2.count_address("10.0.0.1", 1, ["gw0"]) == 3  # this gateway counts itself
    assert await g2.count_address("10.0.0.1", -1, ["gw0", "gw1"]) == 2
    await g2.gateway_gone()
    assert await g1.live_gateways() == ["gw0"]
    assert await g1.count_address("10.0.0.1", 1, ["gw0"]) == 2
    assert await g1.count_address("10.0.0.1", -5, ["gw0", "gw1"]) == 1  # never below 0


async def test_reassert_writes_back_memberships(store: Any) -> None:
    """After the store lost its data, a gateway writes back what its users were in."""
    await store.reassert({"ann": {"rust": "Rust", GENERAL: "general"}}, {"ann": {"bob"}})
    assert await store.is_member("ann", "rust")
    state = await user_state(store, "ann")
    assert state.chats == {"rust": "Rust", GENERAL: "general"}
    assert state.peers == {"bob"}
    chats = await store.active_chats_bounded(10, 1000)
    assert sorted((c.name, c.members) for c in chats.chats) == [("Rust", 1), ("general", 1)]


async def test_notices_and_client_tags_are_stored_and_published(
    make_store: MakeStore, backend: Backend
) -> None:
    g1, g2 = await make_store(), await make_store()
    await register(g1, "ann", "bob")
    tags = "+draft/reply=1-0-ab;+draft/react=l😃l"
    async with listening(g2) as (links, events):
        await links.add(chats=[GENERAL], users=["bob"])
        sent = await g1.post_chat("ann", "ANN", GENERAL, "general", ["a", "b"], Kind.NOTICE)
        assert [r.status for r in sent] == [OK, OK]
        await post(g1, "ann", GENERAL, "plain")
        dm = await g1.post_private("ann", "ANN", "bob", "psst", Kind.MESSAGE, tags)
        assert dm.status is OK
        await backend.until(lambda: len(events) >= 3)
        live = [m for e in events if isinstance(e, ChatPosts) for m in e.messages]
        assert [(m.text, m.kind, m.tags) for m in live] == [
            ("a", Kind.NOTICE, ""),
            ("b", Kind.NOTICE, ""),
            ("plain", Kind.MESSAGE, ""),
        ]
        (private,) = [e.message for e in events if isinstance(e, PrivatePost)]
        assert (private.text, private.kind, private.tags) == ("psst", Kind.MESSAGE, tags)
    stored = await g2.read_range(GEN, Range(10))
    assert [(m.text, m.kind) for m in stored] == [
        ("a", Kind.NOTICE),
        ("b", Kind.NOTICE),
        ("plain", Kind.MESSAGE),
    ]
    (back,) = await g2.read_range(Conv.private("ann", "bob"), Range(10))
    assert (back.kind, back.tags) == (Kind.MESSAGE, tags)
    assert [m.kind for m in await g2.history(GENERAL, "general", 10)] == [
        Kind.NOTICE,
        Kind.NOTICE,
        Kind.MESSAGE,
    ]
    backlog = await g2.backlog("bob", await user_state(g2, "bob"), 10)
    assert (backlog.messages[-1].text, backlog.messages[-1].tags) == ("psst", tags)


async def test_client_tags_and_presence_are_published_not_stored(
    make_store: MakeStore, backend: Backend
) -> None:
    g1, g2 = await make_store(), await make_store()
    await register(g1, "ann", "bob", "cid")
    await g1.join("ann", "small", "Small", "s")
    await g1.join("bob", "small", "Small", "s")
    async with listening(g2) as (links, events):
        await links.add(chats=[GENERAL, "small"], users=["bob"])
        tid = await g1.send_tags("ann", "ANN", Conv.of_chat("small"), "Small", "+typing=active")
        dm = await g1.send_tags("ann", "ANN", Conv.private("ann", "bob"), "BOB", "+typing=done")
        await g1.announce(["small", GENERAL], "cid", "CID", Change.QUIT, "gone", 7, 2)
        await g1.announce([GENERAL], "cid", "CID", Change.CAME, "", 8, 3)
        await backend.until(lambda: len(events) >= 4)
        await asyncio.sleep(0.05)
        tagged = [e for e in events if isinstance(e, TagsSent)]
        assert [(e.user, e.conv, e.sender, e.where, e.tags, e.id) for e in tagged] == [
            ("", Conv.of_chat("small"), "ANN", "Small", "+typing=active", tid),
            ("bob", Conv.private("ann", "bob"), "ANN", "BOB", "+typing=done", dm),
        ]
        assert tid != dm and all(abs(e.ms - backend.now_ms()) < 10_000 for e in tagged)
        told = [e for e in events if isinstance(e, ChatPresence)]
        assert told == [  # #general has 3 members: above 2, so only the small chat's
            ChatPresence("small", "cid", "CID", Change.QUIT, "gone", 7),
            ChatPresence(GENERAL, "cid", "CID", Change.CAME, "", 8),
        ]
    assert await g2.read_range(Conv.of_chat("small"), Range(10)) == []
    assert await g2.read_range(Conv.private("ann", "bob"), Range(10)) == []
    await g1.set_online("ann", True)
    assert await g2.online_on("ann", ["gw0"])
    assert not await g2.online_on("ann", ["gw1"])
    assert not await g2.online_on("bob", ["gw0", "gw1"])
    assert not await g2.online_on("ann", [])
