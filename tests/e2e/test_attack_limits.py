"""Findings of the pre-launch attack: chat floods, unbounded storage and backlogs, accounts
that never expire, and a "not sent" that was sent. Real gateways on real Redis."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import redis

from store import keys
from tests.helpers import Client, eventually, messages


async def _probe(client: Client, stop: asyncio.Event) -> list[float]:
    """/help round trips (ms) until stopped: how long this gateway keeps users waiting."""
    rtts = []
    while not stop.is_set():
        t0 = time.perf_counter()
        await client.send("/help")
        await client.expect("/quit", timeout=30)
        rtts.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.02)
    return rtts


def _stalled(port: int) -> bool:
    """Whether Redis leaves a PING unanswered for 50 ms (DEBUG SLEEP under way). A raw
    socket: redis-py would retry a timed-out command until the stall ends."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.settimeout(0.05)
        s.sendall(b"PING\r\n")
        try:
            return not s.recv(16)
        except TimeoutError:
            return True


def _flood_chats(url: str, chats: int, online: int) -> None:
    """Chats as a creation flood leaves them (3 members each), and `online` users online on
    another (live) gateway, written straight to Redis."""
    r = redis.Redis.from_url(url, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    for i in range(chats):
        c = f"flood{i}"
        pipe.hset(keys.chat(c), "name", c)
        pipe.sadd(keys.members(c), "mallory", f"m{i}a", f"m{i}b")
        pipe.sadd(keys.chats(), c)  # the layout before the fix
        pipe.zadd(keys.chat_sizes(), {c: 3})
        pipe.sadd(keys.user_chats("mallory"), c)
    users = [f"u{i}" for i in range(online)] + ["mallory"]
    pipe.sadd(keys.gateways(), "elsewhere")
    pipe.set(keys.gateway_alive("elsewhere"), "1", ex=60)
    pipe.sadd(keys.gateway_online("elsewhere"), *users)
    pipe.expire(keys.gateway_online("elsewhere"), 60)
    pipe.execute()
    r.close()


async def test_get_chats_after_a_chat_flood_is_short_and_stalls_nobody(
    redis_url, gateways, clients
) -> None:
    gw = gateways(redis_url)
    asker, probe = await clients(gw.port), await clients(gw.port)
    await asker.login("alice")
    await probe.login("bob")
    _flood_chats(redis_url, 5000, 2000)
    stop = asyncio.Event()
    rtts = asyncio.create_task(_probe(probe, stop))
    replies = []
    for _ in range(3):
        await asker.send("/get_chats")
        replies.append(await asker.expect(r"^\* chats:", timeout=60))
    stop.set()
    worst = max(await rtts)
    assert all(len(line) < 8192 for line in replies), [len(line) for line in replies]
    assert replies[-1].endswith(" and 4951 more"), replies[-1][-80:]  # 5000 + #general, 50 listed
    assert replies[-1].count(" (3 members, 1 online)") == 50  # the largest: mallory online
    assert worst < 200, f"/help took {worst:.0f} ms during /get_chats"


async def test_chat_creations_and_memberships_are_bounded(redis_url, gateways, clients) -> None:
    gw = gateways(redis_url, CHAT_CHAT_CREATIONS="3", CHAT_MAX_USER_CHATS="5", CHAT_MAX_CHATS="6")
    a, b = await clients(gw.port), await clients(gw.port)
    await a.login("alice")
    await b.login("bob")
    for i in range(3):
        await a.send(f"/chats #a{i}")
        await a.expect(f"joined #a{i}")
    await a.send("/chats #a3")
    assert "at most 3 new chats per hour" in await a.expect("^!")
    for i in range(3):  # joining an existing chat is no creation
        await b.send(f"/chats #a{i}")
        await b.expect(f"joined #a{i}")
    await b.send("/chats #b0")  # bob's first creation: 5 chats exist
    await b.expect("joined #b0")
    await b.send("/chats #b1")
    assert "in 5 chats, the most allowed" in await b.expect("^!")
    await b.send("/leave #a0")
    await b.expect("left #a0")
    await b.send("/chats #b1")  # the sixth chat
    await b.expect("joined #b1")
    await b.send("/leave #a1")
    await b.expect("left #a1")
    await b.send("/chats #b2")
    assert "as many chats as it allows (6)" in await b.expect("^!")
    await b.send("/get_chats")
    listing = await b.expect(r"^\* chats:")
    assert listing.startswith("* chats: #a2 (2 members, 2 online), #general (2 members"), listing


async def test_backlog_shows_the_newest_and_says_what_it_left_out(
    backend, gateways, clients
) -> None:
    gw = gateways(backend, CHAT_MAX_BACKLOG="50", CHAT_MAX_STORED="120")
    a, b = await clients(gw.port), await clients(gw.port)
    await a.login("alice")
    await a.send("/quit")
    await b.login("bob")
    await b.send("/send alice hi alice")
    for i in range(0, 200, 20):
        await b.send("".join(f"m{j}\r\n" for j in range(i, i + 20)).encode())
    await b.expect("m199", timeout=10)
    a2 = await clients(gw.port)
    backlog = await a2.login("alice")
    texts = [t for *_, t in messages(backlog)]
    assert texts == [f"m{j}" for j in range(150, 200)]  # the newest 50, oldest first
    cut = [line for line in backlog if line.startswith("* ")]
    assert any("older unread messages in #general were not shown" in c for c in cut), cut
    assert any("older unread messages in @bob" in c for c in cut), cut
    await a2.send("/history 500")
    shown = [t for *_, t in messages(await a2.lines(quiet=0.5))]
    assert shown == [f"m{j}" for j in range(80, 200)]  # 120 kept per conversation


async def test_a_stalled_store_says_may_have_been_delivered_not_not_sent(
    private_redis, gateways, clients
) -> None:
    store = private_redis()
    gw = gateways(store.url, CHAT_STORE_TIMEOUT="1")
    a, b = await clients(gw.port), await clients(gw.port)
    await a.login("alice")
    await b.login("bob")
    await a.send("before")
    await b.expect("before")
    stall = threading.Thread(target=store.cli, args=("DEBUG", "SLEEP", "3"))
    stall.start()  # Redis stalls 3 s, then carries on with what it was sent
    await eventually(lambda: _stalled(store.port), "Redis stalled by DEBUG SLEEP")
    await a.send("during the stall")
    answer = await a.expect("^!", timeout=5)
    assert "did not confirm your message in time; it may have been delivered" in answer
    assert "not sent" not in answer
    await b.expect("during the stall", timeout=15)  # it was delivered after all
    stall.join()


async def test_registrations_per_address_are_limited(redis_url, gateways, clients) -> None:
    gw = gateways(redis_url, CHAT_MAX_REGISTRATIONS="2")
    for nick in ("one", "two"):
        c = await clients(gw.port)
        await c.login(nick)
    c = await clients(gw.port)
    await c.expect("nickname")
    await c.send("three")
    await c.expect("New nickname")
    await c.send("secret123")
    assert "too many new nicknames from your address" in await c.expect("^!")
    await c.expect("nickname")  # asked again: an existing account still logs in
    await c.send("one")
    await c.expect("Password for one")
    await c.send("secret123")
    await c.expect(r"^\* ready")


async def test_unused_accounts_expire_with_their_keys_and_memberships(
    redis_url, gateways, clients
) -> None:
    gw = gateways(redis_url, CHAT_ACCOUNT_TTL="60")
    a, b = await clients(gw.port), await clients(gw.port)
    await a.login("alice")
    await a.send("/chats #alone")
    await a.expect("joined #alone")
    await a.send("/quit")
    await b.login("bob")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.zadd(keys.seen(), {"alice": int(time.time() * 1000) - 61_000})  # 61 s unused
    await eventually(  # the sweep runs on the 5 s heartbeat
        lambda: not r.exists(keys.user("alice")), "alice's account swept", timeout=8
    )
    assert not r.exists(keys.user("alice"), keys.user_chats("alice"))
    assert r.smembers(keys.members(keys.GENERAL)) == {"bob"}
    assert not r.exists(keys.members("alone"), keys.chat("alone"))
    assert r.zscore(keys.chat_sizes(), keys.GENERAL) == 1
    assert r.zscore(keys.seen(), "bob") is not None  # online: seen, kept
    r.close()
    c = await clients(gw.port)
    await c.expect("nickname")
    await c.send("alice")
    await c.expect("New nickname alice")


async def test_a_password_never_checked_does_not_count_toward_the_lockout(
    redis_url, gateways, clients
) -> None:
    """In a password storm clients give up while their password waits for the hasher; an
    attempt counted before its check but never checked is given back, so the owner is
    not locked out by their own retries. One slow hash at a time (scrypt N = 2^16)."""
    gw = gateways(redis_url, "--hash-threads", "1", "--scrypt-log-n", "16")
    owner = await clients(gw.port)
    await owner.login("slowpoke", "right-password")
    await owner.close()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    fails = keys.login_fails("slowpoke", "127.0.0.1")
    r.delete(fails)
    checked = await clients(gw.port)  # its wrong password is hashed first
    await checked.expect("nickname")
    await checked.send("slowpoke")
    await checked.expect("(?i)password")
    await checked.send("wrong-password-1")
    quitters = []
    for n in range(4):  # queued behind it, each counted, then gone before its turn
        c = await clients(gw.port)
        await c.expect("nickname")
        await c.send("slowpoke")
        await c.expect("(?i)password")
        await c.send(f"wrong-password-{n + 2}")
        quitters.append(c)
    await eventually(  # every attempt taken before its hash
        lambda: r.get(fails) == "5", "5 failed attempts counted", timeout=2
    )
    for c in quitters:
        await c.close()
    assert "wrong password" in await checked.expect("wrong password", timeout=20)
    await eventually(  # the queue drains: each quitter's turn finds it gone
        lambda: r.get(fails) == "1", "only the password that was checked counted", timeout=10
    )
    r.close()
