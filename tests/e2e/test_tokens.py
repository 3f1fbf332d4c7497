"""Resume tokens, /logout and /password over the wire, on real gateway processes."""

from __future__ import annotations

import asyncio
import hashlib
import re

import redis

from tests.e2e.test_client import PlainClient
from tests.helpers import Client, eventually

TOKEN_RE = re.compile(r"^\* token: ([0-9a-f]{64}) \(valid for (.+); /logout revokes it\)$")


async def _token(c: Client) -> str:
    await c.send("/token")
    m = TOKEN_RE.match(await c.expect(r"^\* token: "))
    assert m, c.seen[-1]
    return m.group(1)


async def _resume(c: Client, nick: str, token: str) -> str:
    """Send `nick token` at the prompt; the first line that is not backlog."""
    await c.expect("nickname")
    await c.send(f"{nick} {token}")
    while True:
        line = await c.line()
        if not line.startswith("["):
            return line


def _logins(log: str, user: str) -> list[str]:
    return re.findall(rf"event=login .*user={user} method=(\w+)", log)


async def test_a_token_logs_in_without_the_password(backend, gateways, clients) -> None:
    gw = gateways(backend)
    a = await clients(gw.port)
    await a.login("alice")
    token = await _token(a)
    assert TOKEN_RE.match(a.seen[-1]).group(2) == "30 days"  # type: ignore[union-attr]
    await a.send("while you were away")
    b = await clients(gw.port)
    assert await _resume(b, "Alice", token) == (
        "* ready: logged in as alice, current chat #general (/help for commands)"
    )
    assert not any("password" in line.lower() for line in b.seen)
    await b.send("/help")
    helped = await b.lines()
    assert any("/token" in x for x in helped) and any("/logout" in x for x in helped)
    log = gw.output()
    assert _logins(log, "alice") == ["register", "token"]  # the second hashed no password
    assert token not in log


async def test_wrong_tokens_are_refused_and_count_towards_the_lockout(
    backend, gateways, clients
) -> None:
    gw = gateways(backend, "--max-login-failures", "2")
    a = await clients(gw.port)
    await a.login("bob")
    token = await _token(a)
    c = await clients(gw.port)
    for _ in range(2):
        assert await _resume(c, "bob", "0" * 64) == "! invalid or expired token"
    assert await _resume(c, "bob", "1" * 64) == (
        "! too many failed logins for bob from your address; try again in 15 min"
    )
    assert await c.closed()
    assert "event=bad_token" in gw.output() and token not in gw.output()
    # the password is locked from here for the window...
    e = await clients(gw.port)
    await e.expect("nickname")
    await e.send("bob")
    assert "too many failed logins for bob" in await e.line()
    # ...but the owner's valid token still logs in (256 random bits are not guessed),
    # without reopening the password guessing from this address
    d = await clients(gw.port)
    assert (await _resume(d, "bob", token)).startswith("* ready")
    f = await clients(gw.port)
    await f.expect("nickname")
    await f.send("bob")
    assert "too many failed logins for bob" in await f.line()


async def test_an_expired_token_is_refused(backend, gateways, clients) -> None:
    gw = gateways(backend, "--token-ttl", "1")
    a = await clients(gw.port)
    await a.login("carol")
    token = await _token(a)
    assert TOKEN_RE.match(a.seen[-1]).group(2) == "1 second"  # type: ignore[union-attr]
    await asyncio.sleep(1.2)  # past the token's 1 s lifetime: only time expires it
    b = await clients(gw.port)
    assert await _resume(b, "carol", token) == "! invalid or expired token"
    assert (await b.line()).endswith("Enter your nickname:")
    await b.send("carol")  # the password still works
    await b.expect("Password for carol")


async def test_logout_revokes_only_that_devices_token(backend, gateways, clients) -> None:
    gw = gateways(backend)
    laptop, phone = await clients(gw.port), await clients(gw.port)
    await laptop.login("dave")
    await phone.login("dave")
    laptop_token, phone_token = await _token(laptop), await _token(phone)
    again = await _token(laptop)  # asking twice: the first one is revoked
    resumed = await clients(gw.port)
    assert (await _resume(resumed, "dave", laptop_token)).startswith("! invalid")
    assert (await _resume(resumed, "dave", again)).startswith("* ready")
    await resumed.send("/logout")
    assert await resumed.expect("bye") == "* bye"
    assert await resumed.closed()
    late = await clients(gw.port)
    assert (await _resume(late, "dave", again)).startswith("! invalid")
    assert (await _resume(late, "dave", phone_token)).startswith("* ready")


async def test_password_change_revokes_every_token(backend, gateways, clients) -> None:
    gw = gateways(backend)
    a, b = await clients(gw.port), await clients(gw.port)
    await a.login("erin", "first-pass")
    await b.login("erin", "first-pass")
    tokens = [await _token(a), await _token(b)]
    await a.send("/password wrong-pass second-pass")
    assert await a.expect("^!") == "! wrong password"
    await a.send("/password first-pass second-pass")
    assert await a.expect(r"^[*!] ") == "* password changed"
    for token in tokens:
        c = await clients(gw.port)
        assert await _resume(c, "erin", token) == "! invalid or expired token"
    old = await clients(gw.port)
    await old.expect("nickname")
    await old.send("erin")
    await old.expect("Password")
    await old.send("first-pass")
    assert await old.expect("^!") == "! wrong password"
    await (await clients(gw.port)).login("erin", "second-pass")
    log = gw.output()
    assert "first-pass" not in log and "second-pass" not in log
    assert not any(t in log for t in tokens)


async def test_tokens_are_stored_hashed_and_work_on_every_gateway(
    redis_url, gateways, clients
) -> None:
    g1, g2 = gateways(redis_url), gateways(redis_url)
    a = await clients(g1.port)
    await a.login("frank")
    token = await _token(a)
    b = await clients(g2.port)
    assert (await _resume(b, "frank", token)).startswith("* ready: logged in as frank")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stored = r.hgetall("chat:{u:frank}:tokens")
        assert list(stored) == [hashlib.sha256(token.encode()).hexdigest()]
        assert 0 < r.pttl("chat:{u:frank}:tokens") <= 30 * 86400 * 1000
        for key in r.scan_iter("chat:*"):  # the token itself is nowhere
            kind = r.type(key)
            dump = {"hash": r.hgetall, "string": r.get, "set": r.smembers}.get(kind)
            if dump is not None:
                assert token not in repr(dump(key)), key
    finally:
        r.close()
    assert _logins(g2.output(), "frank") == ["token"]
    assert token not in g1.output() + g2.output()


async def test_client_reconnects_to_another_gateway_with_its_token(
    redis_url, gateways, clients
) -> None:
    g1, g2 = gateways(redis_url), gateways(redis_url)
    client = PlainClient(f"127.0.0.1:{g1.port},127.0.0.1:{g2.port}", "gina")
    try:
        await client.expect("* ready")
        await g1.logged("event=token_issued")  # asked for right after ready
        g1.kill()
        watcher = await clients(g2.port)
        await watcher.login("watcher")
        # back after its backoff (0.5 s, then 1 s), on g2, with its token
        await g2.logged("user=gina method=token", timeout=10)
        client.send("back again")
        await watcher.expect("<gina> back again", timeout=10)
        assert _logins(g2.output(), "gina") == ["token"]  # no scrypt on the reconnect
        assert "* token:" not in "\n".join(client.lines)  # never printed
    finally:
        client.close()
    assert client.proc.stderr is not None
    err = client.proc.stderr.read().decode()
    token_lines = [x for x in err.splitlines() if re.search(r"[0-9a-f]{64}", x)]
    assert not token_lines


async def test_client_falls_back_to_the_password_when_its_token_is_refused(
    backend, gateways
) -> None:
    from chatclient.link import ChatLink

    gw = gateways(backend)
    link = ChatLink([("127.0.0.1", gw.port)], "hank", "secret123", lambda _: None, print)
    link.token = "ab" * 32  # revoked, say, by a password change on another device
    runner = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.ready.wait(), 10)
        await eventually(  # the client then asks for a fresh token
            lambda: link.token not in (None, "ab" * 32), "a fresh token", timeout=2.5
        )
        assert link.logins == ["password"] and link.fatal is None
        assert link.token is not None and re.fullmatch("[0-9a-f]{64}", link.token)
    finally:
        await link.quit()
        runner.cancel()
