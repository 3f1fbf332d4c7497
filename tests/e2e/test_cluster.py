"""Several gateways on one Redis form one chat."""

from __future__ import annotations

import asyncio

from tests.helpers import eventually, messages


async def test_users_on_different_gateways_talk(shared_url, gateways, clients) -> None:
    g1, g2, g3 = (gateways(shared_url) for _ in range(3))
    a, b, c = await clients(g1.port), await clients(g2.port), await clients(g3.port)
    await a.login("alice")
    await b.login("bob")
    await c.login("carol")
    await a.send("hello from 1")
    await b.send("hello from 2")
    for client in (a, b, c):  # the two were sent at once: either order is right
        got = {t for *_, t in messages([await client.line(), await client.line()])}
        assert got == {"hello from 1", "hello from 2"}
    await c.send("/get_chats")
    assert await c.expect("chats") == "* chats: #general (3 members, 3 online)"
    await c.send("/who")
    assert await c.expect("online in") == "* online in #general (3): alice, bob, carol"


async def test_private_messages_reach_both_users_devices_and_nobody_else(
    shared_url, gateways, clients
) -> None:
    g1, g2 = gateways(shared_url), gateways(shared_url)
    a1, a2 = await clients(g1.port), await clients(g2.port)
    b1, b2 = await clients(g1.port), await clients(g2.port)
    c1, c2 = await clients(g1.port), await clients(g2.port)
    for client, nick in (
        (a1, "alice"),
        (a2, "alice"),
        (b1, "bob"),
        (b2, "bob"),
        (c1, "carol"),
        (c2, "carol"),
    ):
        await client.login(nick)
    await a1.send("/send bob secret plan")
    for client in (a1, a2):
        assert messages([await client.expect("secret plan")]) == [("@bob", "alice", "secret plan")]
    for client in (b1, b2):
        assert messages([await client.expect("secret plan")]) == [
            ("@alice", "alice", "secret plan")
        ]
    await a1.send("public marker")
    for client in (c1, c2):
        lines = []
        while not lines or "public marker" not in lines[-1]:
            lines.append(await client.line())
        assert not any("secret" in line for line in lines)


async def test_unread_through_another_gateway_exactly_once(shared_url, gateways, clients) -> None:
    g1, g2 = gateways(shared_url), gateways(shared_url)
    a, b = await clients(g1.port), await clients(g1.port)
    await a.login("alice")
    await b.login("bob")
    await b.send("/chats ops")
    await b.expect("joined")
    await b.send("seen live")
    await b.expect("seen live")
    await b.send("/quit")
    await b.expect("bye")
    await a.send("/chats ops")
    await a.send("ops news")
    await a.send("/send bob for your eyes")
    await a.send("/send #general general news")
    await a.expect("general news")
    b2 = await clients(g2.port)
    assert messages(await b2.login("bob")) == [
        ("#ops", "alice", "ops news"),
        ("@alice", "alice", "for your eyes"),
        ("#general", "alice", "general news"),
    ]
    await b2.send("/quit")
    await b2.expect("bye")
    b3 = await clients(g1.port)
    assert messages(await b3.login("bob")) == []


async def test_join_and_leave_sync_across_gateways(shared_url, gateways, clients) -> None:
    g1, g2 = gateways(shared_url), gateways(shared_url)
    a1, a2, b = await clients(g1.port), await clients(g2.port), await clients(g1.port)
    await a1.login("alice")
    await a2.login("alice")
    await b.login("bob")
    await a1.send("/chats lounge")
    assert await a1.line() == "* joined #lounge"
    assert await a2.expect("joined") == "* joined #lounge"
    await b.send("/chats lounge")
    await b.send("lounge talk")
    assert messages([await a2.expect("lounge talk")]) == [("#lounge", "bob", "lounge talk")]
    await a2.send("/send #lounge from device two")
    await a1.expect("from device two")
    await a2.send("/leave lounge")
    assert await a1.expect("left") == "* left #lounge"
    await b.send("after leave")
    await b.expect("after leave")
    await a1.send("/history 1")
    lines = await a1.lines()
    assert "after leave" not in " ".join(lines)


async def test_ban_holds_on_every_gateway_and_device(shared_url, gateways, clients) -> None:
    g1, g2, g3 = (gateways(shared_url, "--ban-duration", "30") for _ in range(3))
    bob1, bob2 = await clients(g1.port), await clients(g3.port)
    await bob1.login("bob")
    await bob2.login("bob")
    for n, (gw, nick) in enumerate(((g1, "alice"), (g2, "carol"), (g3, "dave"))):
        c = await clients(gw.port, f"127.0.0.{n + 2}")  # three people: three addresses
        await c.login(nick)
        await c.send("/ban bob")
        await c.expect("complaint about bob")
    for device in (bob1, bob2):
        await device.expect("you are banned")
        await device.send("let me speak")
        assert "banned" in await device.expect("^! ")


async def test_many_messages_across_gateways_arrive_in_order(shared_url, two_gateways) -> None:
    _, _, a, b = await two_gateways(shared_url)
    await a.send(b"".join(b"n%d\r\n" % i for i in range(300)))
    got = []
    while len(got) < 300:
        got += [t for *_, t in messages([await b.line()])]
    assert got == [f"n{i}" for i in range(300)]
    await asyncio.sleep(0)


async def test_one_resp2_pubsub_connection_per_gateway_with_only_needed_channels(
    redis_proc, redis_url, gateways, clients
) -> None:
    import redis as redis_sync

    r = redis_sync.Redis(port=redis_proc.port, decode_responses=True)
    g1, g2 = gateways(redis_url), gateways(redis_url)
    users = []
    for i, gw in enumerate((g1, g1, g1, g2, g2)):
        c = await clients(gw.port)
        await c.login(f"user{i}")
        users.append(c)
    pubsub = [c for c in r.client_list(_type="pubsub")]
    assert len(pubsub) == 2  # one per gateway, not one per user
    assert all(c["resp"] == "2" for c in pubsub)
    channels = set(r.pubsub_channels())
    assert channels == {"chat:ch:{c:general}"} | {f"chat:ch:{{u:user{i}}}" for i in range(5)}
    await users[0].send("/chats lonely")
    await users[0].expect("joined")
    assert "chat:ch:{c:lonely}" in set(r.pubsub_channels())
    await users[0].send("/leave lonely")
    await users[0].expect("left")
    await users[0].send("/quit")
    await users[0].expect("bye")
    await eventually(
        lambda: not {"chat:ch:{c:lonely}", "chat:ch:{u:user0}"} & set(r.pubsub_channels()),
        "user0's and #lonely's channels unsubscribed",
    )
    r.close()


async def test_history_refuses_a_chat_left_elsewhere_even_if_the_notice_was_lost(
    redis_proc, redis_url, gateways, clients
) -> None:
    g1 = gateways(redis_url)
    a = await clients(g1.port)
    await a.login("alice")
    await a.send("/chats secret")
    await a.expect("joined")
    await a.send("secret stuff")
    await a.expect("secret stuff")
    # Leave behind the gateway's back (as if the leave event never reached it).
    redis_proc.cli("SREM", "chat:{c:secret}:members", "alice")
    redis_proc.cli("SREM", "chat:{u:alice}:chats", "secret")
    await a.send("/history")
    assert await a.line() == "! you are not in #secret"
    assert await a.line() == "* current chat is now #general"
    await a.send("/who #secret")
    assert await a.line() == "! you are not in #secret"
