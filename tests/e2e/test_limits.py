"""Limits against floods and abuse: rate, slow readers, logins, connections."""

from __future__ import annotations

import asyncio
import socket

from tests.helpers import Client, assert_quiet, eventually, messages, not_online


async def test_rate_limit_is_shared_by_all_devices(redis_url, gateways, clients) -> None:
    g1 = gateways(redis_url, CHAT_RATE="1", CHAT_BURST="3")
    g2 = gateways(redis_url, CHAT_RATE="1", CHAT_BURST="3")
    a1, a2, b = await clients(g1.port), await clients(g2.port), await clients(g1.port)
    await a1.login("alice")
    await a2.login("alice")
    await b.login("bob")
    await a1.send("one")
    await a2.send("two")
    await a1.send("three")
    await a2.send("four")
    got = [t for *_, t in messages(await b.lines(quiet=0.5))]
    assert len(got) == 3  # the burst of 3 is shared by both devices
    refused = [line for c in (a1, a2) for line in await c.lines(quiet=0.2) if line.startswith("!")]
    assert len(refused) == 1 and refused[0].startswith("! slow down")
    await asyncio.sleep(1.1)  # a second refills one message of the rate: only time does
    await a1.send("five")
    await b.expect("five")


async def test_slow_reader_is_disconnected_and_others_unaffected(
    backend, gateways, clients
) -> None:
    gw = gateways(backend, "--max-output", "262144")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", gw.port))
    slow.sendall(b"slowpoke\r\nsecret123\r\n")
    a, b = await clients(gw.port), await clients(gw.port)
    await a.login("alice")
    await b.login("bob")

    async def slowpoke_in() -> bool:
        return not await not_online(a, "slowpoke")

    await eventually(slowpoke_in, "slowpoke logged in: a reader of #general")
    payload = "x" * 2000
    total = 4000

    counts = {"a": 0, "b": 0}

    async def count(name: str, client) -> None:
        while True:
            chunk = await client.reader.read(1 << 16)
            if not chunk:
                return
            counts[name] += chunk.count(b"> ")

    readers = [asyncio.create_task(count(n, c)) for n, c in (("a", a), ("b", b))]
    for i in range(0, total, 20):
        await a.send("".join(f"{j} {payload}\r\n" for j in range(i, i + 20)).encode())
        await eventually(  # lockstep with a normal reader: only the slow one falls behind
            lambda n=i + 20: counts["b"] >= n, f"bob shown message {i + 19}"
        )
    await eventually(lambda: counts == {"a": total, "b": total}, "both got every message")
    for task in readers:
        task.cancel()
    assert counts == {"a": total, "b": total}  # normal readers get everything
    assert "event=sendq_exceeded" in gw.output()
    slow.settimeout(5)
    data = b""
    try:
        while chunk := slow.recv(1 << 20):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    slow.close()
    assert len(data) < total * 2000  # cut off, not buffered without end


async def test_login_timeout_closes_idle_unauthenticated_connections(
    backend, gateways, clients
) -> None:
    gw = gateways(backend, "--login-timeout", "1")
    idle = await clients(gw.port)
    logged = await clients(gw.port)
    await logged.login("alice")
    assert await idle.expect("timed out", timeout=5)
    assert await idle.closed()
    await assert_quiet(logged, 1.2, "the 1 s login timeout must not cut a logged-in user")
    await logged.send("still here")  # logged-in users may idle
    await logged.expect("still here")


async def test_failed_logins_are_limited_per_nickname(backend, gateways, clients) -> None:
    gw = gateways(backend, "--max-login-failures", "4")
    owner = await clients(gw.port)
    await owner.login("alice", "real-password")
    for _ in range(2):
        c = await clients(gw.port)
        await c.expect("nickname")
        await c.send("alice")
        for _ in range(2):
            await c.expect("Password")
            await c.send("guess-guess")
            await c.expect("wrong password")
        await c.close()
    c = await clients(gw.port)
    await c.expect("nickname")
    await c.send("alice")
    assert "too many failed logins" in await c.line()
    assert await c.closed()


async def test_connections_per_address_are_limited(backend, gateways, clients) -> None:
    gw = gateways(backend, "--max-per-ip", "3")
    # From an address of its own: the limit holds over every live gateway, and gateways of
    # earlier tests on this Redis, killed moments ago, still count their 127.0.0.1 peers.
    source = "127.0.0.113"
    kept = [await clients(gw.port, source) for _ in range(3)]
    for c in kept:
        await c.expect("nickname")
    extra = await clients(gw.port, source)
    assert "too many connections" in await extra.line()
    assert await extra.closed()


async def test_a_full_gateway_says_so_and_sends_clients_elsewhere(
    backend, gateways, clients
) -> None:
    """At --max-connections (by default the descriptor limit less a reserve) a connection is
    told the gateway is busy and closed, logged in or not; a closed one makes room."""
    gw = gateways(backend, "--max-connections", "2")
    a = await clients(gw.port)
    await a.login("alice")
    waiting = await clients(gw.port)
    await waiting.expect("nickname")
    extra = await clients(gw.port)
    assert await extra.line() == "! server busy: this gateway is full, try another one"
    assert await extra.closed()
    waiting.writer.close()

    async def room() -> Client | None:
        c = await clients(gw.port)
        if (await c.line()).startswith("! server busy"):
            return None
        return c

    late = await eventually(room, "a place freed by the closed connection")
    await late.send("bob")
    await late.expect("(?i)password")


async def test_connections_still_logging_in_are_limited(backend, gateways, clients) -> None:
    gw = gateways(backend, "--max-pending-logins", "2")
    # the start-up's port check was a connection too: it counts until its close is seen
    # (with several listening sockets, that close may be read after the next accepts)
    await gw.logged("event=disconnect")
    waiting = [await clients(gw.port) for _ in range(2)]
    for c in waiting:
        await c.expect("nickname")
    extra = await clients(gw.port)
    assert "too many logins in progress" in await extra.line()
    assert await extra.closed()
    await waiting[0].send("alice")
    await waiting[0].expect("password")
    await waiting[0].send("secret123")
    await waiting[0].expect("ready")
    late = await clients(gw.port)  # one login finished: room again
    await late.login("bob")


async def _fail(port: int, clients, source: str, nick: str, tries: int = 1) -> None:
    c = await clients(port, source)
    await c.expect("nickname")
    await c.send(nick)
    for _ in range(tries):
        await c.expect("Password")
        await c.send("wrong-password")
        await c.expect("wrong password")
    await c.close()


async def test_failed_logins_are_limited_per_address(backend, gateways, clients) -> None:
    # Distinct nicknames failing from one address are limited (two here), not failures:
    # one user's typos count once, and a user who logged in from there before still can.
    gw = gateways(backend, "--max-login-failures", "5", "--max-failed-nicks-per-ip", "2")
    for nick, source in (("a1", "127.0.0.2"), ("a2", "127.0.0.2"), ("a3", "127.0.0.2")):
        c = await clients(gw.port, source)
        await c.login(nick, "right-password")
        await c.close()
    regular = await clients(gw.port, "127.0.0.5")
    await regular.login("local", "right-password")
    await regular.close()
    await _fail(gw.port, clients, "127.0.0.5", "a1", tries=2)  # typos: a1 counts once
    await _fail(gw.port, clients, "127.0.0.5", "a1")
    await _fail(gw.port, clients, "127.0.0.5", "a2")
    c = await clients(gw.port, "127.0.0.5")  # a3 never failed, but two others did here
    await c.expect("nickname")
    await c.send("a3")
    assert "too many failed logins from your address" in await c.line()
    assert await c.closed()
    again = await clients(gw.port, "127.0.0.5")  # a1 is counted already: it may go on
    await again.login("a1", "right-password")
    here = await clients(gw.port, "127.0.0.5")  # a nickname at home here is not held back
    await here.login("local", "right-password")
    away = await clients(gw.port, "127.0.0.6")  # nor is a3 anywhere else
    await away.login("a3", "right-password")
