"""The operator's tool (`python3 -m gateway.admin`) against a real Redis with real
gateways, and moderators in the chat: what an operator and a moderator would notice."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from tests.helpers import ROOT, Client, free_port


async def admin(redis_url: str | None, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """Run the tool; returns (exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["CHAT_SCRYPT_LOG_N"] = "10"
    url = ["--redis-url", redis_url] if redis_url else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.admin",
        *url,
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_users_reset_password_delete_and_errors(shared_url, gateways, clients) -> None:
    gw = gateways(shared_url)
    alice, bob = await clients(gw.port), await clients(gw.port)
    await alice.login("alice")
    await bob.login("Bob")
    await bob.send("/token")
    token = (await bob.expect("^\\* token: ")).split()[2]
    await bob.send("/send alice psst")
    await alice.expect("psst")

    code, out, err = await admin(shared_url, "users")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["Bob", "alice"]
    assert "last seen 2" in out  # a date
    assert err == f"admin: 2 users in {shared_url}\n"  # which store was read
    code, out, err = await admin(shared_url, "users", "--limit", "1")
    assert out.split()[0] == "Bob"
    assert err == f"admin: 1 user (the most recently seen; --limit for more) in {shared_url}\n"

    # reset-password: the new password works, the old one and the token do not
    code, out, _ = await admin(shared_url, "reset-password", "bob", stdin="newpass99\n")
    assert (code, out.strip()) == (0, "password of Bob reset; every resume token revoked")
    c = await clients(gw.port)
    await c.expect("nickname")
    await c.send(f"bob {token}")
    assert await c.line() == "! invalid or expired token"
    await c.expect("nickname")
    await c.send("bob")
    await c.expect("Password")
    await c.send("secret123")
    assert await c.line() == "! wrong password"
    await c.send("newpass99")
    await c.expect("^\\* ready")

    # delete-user: the account, its private history and memberships go; its sessions close
    await bob.send("/chats den")
    await bob.expect("joined #den")
    code, out, _ = await admin(shared_url, "delete-user", "bob")
    assert code == 0, out
    assert await bob.closed() and await c.closed()
    code, out, _ = await admin(shared_url, "users")
    assert [line.split()[0] for line in out.splitlines()] == ["alice"]
    await alice.send("/get_chats")
    assert "#den" not in await alice.expect("^\\* chats:")
    await alice.send("/send bob hi")
    assert await alice.line() == "! not sent: no such user bob"
    d = await clients(gw.port)  # the nickname is free again, with no old private history
    assert "psst" not in " ".join(await d.login("bob", "another1"))

    # clear one-line errors
    code, _, err = await admin(shared_url, "unban", "nobody")
    assert (code, err) == (1, "admin: no such user nobody\n")
    # an argument that cannot be read is a usage error (2), as a missing one is
    for args in (("ban", "alice", "31d"), ("audit", "--since", "garbage")):
        code, _, err = await admin(shared_url, *args)
        assert code == 2 and err.startswith("admin: bad ") and "--help" in err, (args, err)
        assert len(err.splitlines()) == 1
    code, _, err = await admin(f"redis://127.0.0.1:{free_port()}", "users")
    assert code == 2 and err.startswith("admin: cannot reach Redis at redis://127.0.0.1:")
    assert len(err.splitlines()) == 1
    code, _, err = await admin(None, "users")
    assert code == 2 and "embedded store" in err


async def test_moderators_ban_unban_kick_on_two_gateways(shared_url, gateways, clients) -> None:
    g1, g2 = gateways(shared_url), gateways(shared_url)
    mod, bob, carol = await clients(g1.port), await clients(g2.port), await clients(g1.port)
    await mod.login("mod")
    await bob.login("bob")
    await carol.login("carol")
    bob2 = await clients(g1.port)  # bob on both gateways
    await bob2.login("bob")

    # not a moderator yet: /ban is a complaint, /unban and /kick are refused
    await mod.send("/ban bob")
    assert await mod.line() == "* complaint about bob recorded (1/3)"
    await mod.send("/kick bob")
    assert await mod.line() == "! only moderators can kick"
    await mod.send("/unban bob")
    assert await mod.line() == "! only moderators can unban"
    await carol.send("/ban bob 2h")
    assert (await carol.line()).startswith("! only moderators can ban for a set time")

    code, out, _ = await admin(shared_url, "complaints", "bob")
    assert code == 0 and out.startswith("bob  complaint by mod at ")
    code, out, _ = await admin(shared_url, "complaints", "carol")
    assert (code, out.strip()) == (0, "no pending complaints about carol")
    code, _, err = await admin(shared_url, "ban", "bob", "31d")
    assert code == 2 and "at most 30d" in err  # a usage error

    code, out, _ = await admin(shared_url, "unmod", "mod")
    assert (code, out.strip()) == (0, "mod is not a moderator")
    code, out, _ = await admin(shared_url, "mod", "mod")
    assert (code, out.strip()) == (0, "mod is now a moderator")
    code, out, _ = await admin(shared_url, "mod", "mod")  # it said "now" again, audited twice
    assert (code, out.strip()) == (0, "mod is already a moderator")
    code, out, _ = await admin(shared_url, "users")
    assert "mod  last seen" in out and "(moderator)" in out

    # a moderator's /ban bans at once, on every gateway
    await mod.send("/ban bob 2h")
    assert (await mod.line()).startswith("* bob is banned until ")
    for b in (bob, bob2):
        assert "by a moderator" in await b.expect("^\\* you are banned until")
    await bob.send("hello")
    assert "banned" in await bob.line()
    code, out, _ = await admin(shared_url, "bans")
    assert out.startswith("bob  banned until ")
    code, out, _ = await admin(shared_url, "unban", "bob")
    assert (code, out.strip()) == (0, "bob is no longer banned")
    for b in (bob, bob2):  # told at once, on both gateways
        assert await b.expect("^\\* your ban") == "* your ban was lifted: you can send again"
    code, out, _ = await admin(shared_url, "bans")
    assert out == ""
    await bob.send("free again")
    await bob.expect("free again")
    await mod.expect("free again")

    await mod.send("/ban bob")  # without a time: the ban duration
    assert (await mod.line()).startswith("* bob is banned until ")
    await mod.send("/unban bob")
    assert await mod.line() == "* bob is no longer banned"

    # /kick closes every session of bob, on both gateways, with a clear line
    await mod.send("/kick bob")
    assert await mod.line() == "* bob was disconnected (every session)"
    for b in (bob, bob2):
        assert await b.expect("^!") == "! you were disconnected by a moderator"
        assert await b.closed()
    # and the admin tool's kick does the same for a new session
    bob3 = await clients(g2.port)
    await bob3.login("bob")
    code, _, _ = await admin(shared_url, "kick", "bob")
    assert code == 0
    assert await bob3.expect("^!") == "! you were disconnected by a moderator"
    assert await bob3.closed()
    await carol.send("still here")
    await carol.expect("<carol> still here")  # nobody else was touched

    # the audit trail lists it all: who, whom, when, through which gateway or tool
    code, out, _ = await admin(shared_url, "audit", "--since", "1h")
    lines = out.splitlines()
    actions = [line.split("action=")[1].split()[0] for line in lines]
    assert actions == ["complaint", "mod", "ban", "unban", "ban", "unban", "kick", "kick"]
    assert "by=mod target=bob via=gateway:" in lines[0]
    assert "by=admin:" in lines[1] and "via=tool:" in lines[1]
    tomorrow = str(int(time.time() * 1000) + 86_400_000)
    code, out, _ = await admin(shared_url, "audit", "--since", tomorrow)
    assert (code, out) == (0, "no audit entries in that time\n")  # not silence
    code, out, _ = await admin(shared_url, "complaints")
    assert out.startswith("bob  complaint by mod at ")
    # the same entries are key=value log lines of the gateway that took them
    assert "event=audit action=kick by=mod target=bob via=gateway:" in g1.output()


async def test_where_and_current_chat_named_on_join(backend, gateways, clients) -> None:
    gw = gateways(backend)
    a: Client = await clients(gw.port)
    await a.login("alice")
    await a.send("/where")
    assert await a.line() == "* current chat is #general (you are in #general)"
    await a.send("/chats Den")
    assert await a.line() == "* joined #Den"
    assert await a.line() == "* current chat is now #Den"
    await a.send("/chats den")
    assert await a.line() == "* you are in #Den"  # already current: nothing more to say
    await a.send("/where")
    assert await a.line() == "* current chat is #Den (you are in #general, #Den)"
