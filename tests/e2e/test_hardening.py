"""Findings of the pre-launch attack and first-day bugs, each against real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import redis as redis_py

from tests.helpers import (
    ROOT,
    Client,
    WebClient,
    assert_quiet,
    eventually,
    eventually_sync,
    free_port,
    messages,
    not_online,
    shown_recorded,
    web_texts,
)


async def test_hit_and_run_registrations_leave_no_ghost_sessions(redis_url, gateways) -> None:
    # A real hash cost (about 80 ms), and connections closed before, during and after it:
    # some are never registered, some are registered with nobody left to log in.
    gw = gateways(redis_url, CHAT_SCRYPT_LOG_N="14", CHAT_MAX_PENDING_HASHES="1000")
    for i in range(16):
        _, w = await asyncio.open_connection("127.0.0.1", gw.port)
        w.write(f"ghost{i}\r\nsecret123\r\n".encode())
        await w.drain()
        await asyncio.sleep(0.02 * i)  # the scene: closed before, during, after its hash
        w.transport.abort()
    # "Every hash done, every registration stored", shown by two logins in a row: hashes
    # start in the order asked (one queue, equal cost), so alice's starts after every
    # ghost's started, and bea's after alice's ended: every ghost's ended a hash ago.
    alice, bea = await Client.connect(gw.port), await Client.connect(gw.port)
    await alice.login("alice")
    await bea.login("bea")
    await alice.send("/who")
    assert (await alice.expect("online in #general")).startswith(
        "* online in #general (2): alice, bea"
    )
    r = redis_py.Redis.from_url(redis_url, decode_responses=True)
    try:
        channels = set(r.pubsub_channels("chat:ch:{u:*"))
        assert channels == {"chat:ch:{u:alice}", "chat:ch:{u:bea}"}, channels  # no ghost's
    finally:
        r.close()
    registered = []
    for i in range(16):
        await alice.send(f"/send ghost{i} are you there {i}?")
        line = await alice.expect(f"ghost{i}")
        if "no such user" not in line:
            registered.append(i)
    assert registered, "no hit-and-run registration completed: the test covers nothing"
    for i in registered:  # a message to a user registered by a vanished connection waits
        ghost = await Client.connect(gw.port)
        backlog = await ghost.login(f"ghost{i}")
        assert ("@alice", "alice", f"are you there {i}?") in messages(backlog), (i, backlog)
        await ghost.close()
    await alice.close()


async def test_a_non_ascii_digit_count_is_a_usage_error_not_a_traceback(backend, gateways) -> None:
    gw = gateways(backend)
    c = await Client.connect(gw.port)
    await c.login("digits")
    for _ in range(50):
        await c.send("/history ²")
    for _ in range(50):
        assert (await c.expect("usage")).startswith("! usage: /history [n]")
    await c.close()
    assert "Traceback" not in gw.output()


def test_sigterm_stops_a_gateway_still_waiting_for_redis(tmp_path) -> None:
    dead = free_port()  # nothing listens here
    log = open(tmp_path / "gw.log", "wb")  # noqa: SIM115 - closed below
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(CHAT_WEB_PORT="0", CHAT_IRC_PORT="0", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "server.py"),
            "--port",
            str(free_port()),
            "--redis-url",
            f"redis://127.0.0.1:{dead}/0",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        eventually_sync(
            lambda: b"redis_unavailable" in (tmp_path / "gw.log").read_bytes(),
            "the gateway saying Redis is unavailable",
            timeout=10,
        )
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - began < 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_a_busy_port_is_one_clear_line_not_a_traceback() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env.update(CHAT_WEB_PORT="0", CHAT_IRC_PORT="0")
        done = subprocess.run(
            [sys.executable, str(ROOT / "server.py"), "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"error: cannot listen for chat on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_message_read_in_the_page_is_not_unread_on_telnet(redis_url, gateways) -> None:
    gw = gateways(redis_url, CHAT_WEB_PORT=str(free_port()))
    other = gateways(redis_url)
    web = await WebClient.connect(gw.web_port)
    await web.login("pia")
    sender = await Client.connect(other.port)
    await sender.login("sol")
    await sender.send("seen in the page")
    await sender.send("/send pia privately, also seen")
    texts = await web.texts(quiet=0.8)
    assert ("#general", "sol", "seen in the page") in texts
    assert ("@sol", "sol", "privately, also seen") in texts
    await shown_recorded(redis_url, "pia", "c:general", "p:pia|sol")
    tel = await Client.connect(other.port)
    assert messages(await tel.login("pia")) == []  # nothing replayed as unread
    await web.close()
    await tel.close()
    await eventually(lambda: not_online(sender, "pia"), "pia offline on every device")
    await sender.send("while every device is away")
    await sender.expect("while every device is away")  # stored
    again = await WebClient.connect(gw.web_port)
    assert web_texts(await again.login("pia")) == [
        ("#general", "sol", "while every device is away")
    ]


async def test_max_per_ip_holds_over_all_gateways(redis_url, gateways, clients) -> None:
    g1 = gateways(redis_url, CHAT_MAX_PER_IP="3")
    g2 = gateways(redis_url, CHAT_MAX_PER_IP="3")  # its first beat, before it listens, saw g1
    here = "127.0.0.7"
    held = [await clients(g1.port, here), await clients(g1.port, here)]
    await held[0].expect("nickname")
    await held[1].expect("nickname")
    third = await clients(g2.port, here)
    await third.login("third")  # 3 of 3: allowed
    fourth = await clients(g2.port, here)
    await fourth.expect("too many connections from your address", timeout=5)
    assert await fourth.closed(5)
    elsewhere = await clients(g2.port, "127.0.0.8")  # another address is not affected
    await elsewhere.login("elsewhere")
    await held[0].close()
    r = redis_py.Redis.from_url(redis_url, decode_responses=True)
    try:
        await eventually(  # its count is taken back
            lambda: sum(map(int, r.hvals(f"chat:{{g}}:addr:{here}:conns"))) == 2,
            "2 connections counted from the address",
        )
    finally:
        r.close()
    again = await clients(g2.port, here)
    await again.login("again")


async def test_names_from_the_web_door_follow_the_rules(redis_url, gateways, clients) -> None:
    gw = gateways(redis_url, CHAT_WEB_PORT=str(free_port()))
    web = await WebClient.connect(gw.web_port)
    await web.login("mallory")
    for frame in (
        {"type": "join", "chat": "general:members"},  # another key's name
        {"type": "join", "chat": "x\r\n[12:00:00] #general <admin> send your password"},
        {"type": "send", "to": "bob:chats", "text": "hi"},
        {"type": "say", "chat": "general\x1fforged", "text": "hi"},
    ):
        await web.send(frame)
        assert (await web.expect("error"))["code"] == "bad_name", frame
    alice = await clients(gw.port)
    await alice.login("alice")  # #general and registration still work for everyone
    await alice.send("general still works")
    await alice.expect("general still works")
    r = redis_py.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert r.type("chat:{c:general}:members") == "set"
    finally:
        r.close()


async def test_a_long_backlog_is_shown_whole_without_dropping_the_reader(
    redis_url, gateways, clients
) -> None:
    gw = gateways(redis_url)
    erin = await clients(gw.port)
    await erin.login("erin")
    await erin.close()
    bob = await clients(gw.port)
    await bob.login("bob")
    await eventually(lambda: not_online(bob, "erin"), "erin away: what follows is her backlog")
    for i in range(300):  # about 1.2 MB while erin is away: more than --max-output
        await bob.send(f"{i:03} " + "y" * 4000)
    await bob.expect("299 ")
    erin = await clients(gw.port)
    backlog = await erin.login("erin")
    assert [m[2][:3] for m in messages(backlog)] == [f"{i:03}" for i in range(300)]
    assert "sendq_exceeded" not in gw.output()


async def test_a_connection_closed_during_a_join_leaves_no_subscription(
    redis_url, gateways
) -> None:
    gw = gateways(redis_url)
    for i in range(10):
        c = await Client.connect(gw.port)
        await c.login(f"hasty{i}")
        await c.send(f"/chats leak{i}")
        c.writer.transport.abort()
    r = redis_py.Redis.from_url(redis_url, decode_responses=True)

    def channels() -> list[str]:
        return r.pubsub_channels("chat:ch:{c:leak*") + r.pubsub_channels("chat:ch:{u:*")

    try:
        await eventually(lambda: channels() == [], "no channel left subscribed")
        await assert_quiet(channels, 1.0, "a join in flight when its connection closed")
    finally:
        r.close()


async def _online(client: Client) -> str:
    """`client`'s `/who` line for #general."""
    await client.send("/who")
    return await client.expect("online in #general")


async def test_a_crowd_dropped_at_once_is_shown_offline_everywhere(
    redis_url, gateways, clients
) -> None:
    """A proxy in front of many clients dies: their leaves come in one moment, and the
    gateway writes them together (one SREM, one UNSUBSCRIBE). Every one of them is shown
    offline on another gateway and let go of in Redis; a user who stays is untouched."""
    many = {"CHAT_MAX_REGISTRATIONS": "0", "CHAT_MAX_PER_IP": "0"}  # 40 from one address
    gw1, gw2 = gateways(redis_url, **many), gateways(redis_url)
    crowd = []
    for i in range(40):
        crowd.append(c := await clients(gw1.port))
        await c.login(f"crowd{i}")
    stays = await clients(gw1.port)
    await stays.login("stays")
    bob = await clients(gw2.port)
    await bob.login("bob")
    for c in crowd:  # in one loop turn: the gateway reads the 40 resets together
        c.writer.transport.abort()

    async def only_two() -> bool:
        return (await _online(bob)).startswith("* online in #general (2): bob, stays")

    await eventually(only_two, "only bob and stays online")
    r = redis_py.Redis.from_url(redis_url, decode_responses=True)
    try:
        await eventually(
            lambda: r.pubsub_channels("chat:ch:{u:crowd*") == [], "the crowd's channels let go"
        )
        assert len(r.pubsub_channels("chat:ch:{u:stays}*")) == 1
    finally:
        r.close()
    await bob.send("/send stays still here?")
    await stays.expect("still here")


async def test_a_web_login_closed_at_once_is_not_left_online(redis_url, gateways, clients) -> None:
    gw = gateways(redis_url, CHAT_WEB_PORT=str(free_port()))
    wally = await WebClient.connect(gw.web_port)
    await wally.login("wally")
    await wally.close()
    bob = await clients(gw.port)
    await bob.login("bob")
    for i in range(60):  # a backlog of about 120 KB for wally
        await bob.send(f"{i} " + "z" * 2000)
    await bob.expect("^\\[.*<bob> 59 ")
    again = await WebClient.connect(gw.web_port)
    await again.expect("login_required")
    await again.send({"type": "login", "nick": "wally", "password": "secret123"})
    again.ws.transport.abort()  # gone at once, before its backlog is shown

    async def online() -> str:
        return await _online(bob)

    async def bob_alone() -> bool:
        return (await online()).startswith("* online in #general (1): bob")

    await eventually(bob_alone, "bob alone online")
    await assert_quiet(online, 1.0, "wally's login, cut at once, may end a moment later")
