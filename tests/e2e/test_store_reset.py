"""Redis lost its data, or refuses writes: connected users keep going, told what happened."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import redis as redis_py

from tests.helpers import assert_quiet, free_port, messages

RESET = "* the chat store was reset; recent history may be missing"


async def test_redis_restarted_empty_users_keep_chatting_without_reconnecting(
    private_redis, gateways, clients
) -> None:
    redis = private_redis()  # no persistence: a restart comes back empty
    g1, g2 = gateways(redis.url), gateways(redis.url)
    a, b = await clients(g1.port), await clients(g2.port)
    await a.login("alice")
    await b.login("bob")
    await a.send("/chats room")
    await a.expect("joined #room")
    await b.send("/chats room")
    await b.expect("joined #room")
    await a.send("before reset")
    await b.expect("before reset")
    await b.send("/send alice private before")
    await a.expect("private before")

    redis.stop()
    redis.start()
    assert await a.expect("reset", timeout=10) == RESET
    assert await b.expect("reset", timeout=10) == RESET

    # Same connections: the current chat and #general still work (private messages need
    # the peer's account, which is not re-created: see docs/REDIS.md).
    await a.send("after reset in room")
    assert await b.expect("after reset in room")
    await b.send("/send #general after reset in general")
    assert "after reset in general" in await a.expect("after reset in general")
    await a.send("/who #room")
    assert "(2)" in await a.expect("online in #room")
    await b.expect("after reset in general")  # its own echo
    why = "a heartbeat or reconnect check that would say the reset again"
    await asyncio.gather(assert_quiet(a, 1.5, why), assert_quiet(b, 1.5, why))
    await a.send("/help")
    await b.send("/help")
    rest = await a.lines() + await b.lines()
    assert not any(line.startswith("! ") for line in a.seen + b.seen), a.seen + b.seen
    assert (a.seen + b.seen).count(RESET) == 2 and RESET not in rest
    # Nothing that lets anyone in was re-created: the accounts are gone with the data.
    r = redis_py.Redis(port=redis.port, decode_responses=True)
    try:
        assert not r.exists("chat:{u:alice}") and not r.exists("chat:{u:bob}")
    finally:
        r.close()


def _health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def _until(probe, want, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if want(got) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.3)


async def test_redis_out_of_memory_is_said_clearly_and_everything_recovers(
    private_redis, gateways, clients
) -> None:
    redis = private_redis()
    metrics = free_port()
    gw = gateways(redis.url, "--metrics-port", str(metrics), "--cursor-flush", "0.3")
    a, b = await clients(gw.port), await clients(gw.port)
    await a.login("alice")
    await b.login("bob")
    await a.send("before full")
    await b.expect("before full")
    assert _health(metrics) == 200

    redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis.cli("CONFIG", "SET", "maxmemory", "1")  # every write is refused from now on
    await a.send("while full")
    refused = await a.expect("^! ")
    assert refused.startswith("! not sent: the chat store refused it"), refused
    await a.send("/chats elsewhere")
    refused = await a.expect("^! ")
    assert "the chat store refused it" in refused and "internal" not in refused
    loop = asyncio.get_running_loop()
    status = await _until(lambda: loop.run_in_executor(None, _health, metrics), lambda s: s == 503)
    assert status == 503  # the heartbeat fails: the load balancer should know

    redis.cli("CONFIG", "SET", "maxmemory", "0")  # what follows waits until it shows

    # The heartbeat was only failing, not dead: /who counts both users again.
    async def who() -> str:
        await b.send("/who")
        return await b.expect("online in")

    assert "(2)" in await _until(who, lambda line: "(2)" in line)
    assert (
        await _until(lambda: loop.run_in_executor(None, _health, metrics), lambda s: s == 200)
        == 200
    )
    # Cursor flushing was only failing too: what alice is shown now is recorded in seconds.
    await b.send("after recovery")
    await a.expect("after recovery")
    r = redis_py.Redis(port=redis.port, decode_responses=True)
    try:

        async def cursor() -> str | None:
            return await loop.run_in_executor(None, r.hget, "chat:{u:alice}:cursor", "c:general")

        last = r.xrevrange("chat:{c:general}:msgs", count=1)[0][0]
        assert await _until(cursor, lambda c: c == last, timeout=5) == last
    finally:
        r.close()
    assert not any("internal" in line for line in a.seen + b.seen)
    assert messages(a.seen)[-1][2] == "after recovery"
