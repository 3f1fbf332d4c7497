"""The contract over TCP against one real gateway process, on Redis and on the embedded store."""

from __future__ import annotations

import re

from tests.helpers import MESSAGE_RE, eventually, messages, redis_client


async def test_login_registers_then_asks_for_the_password(backend, gateways, clients) -> None:
    gw = gateways(backend)
    c = await clients(gw.port)
    assert "nickname" in await c.line()
    await c.send("alice")
    assert re.match(r"^\* New nickname alice\. .*password", await c.line())
    await c.send("secret123")
    assert (await c.line()).startswith("* ready: logged in as alice, current chat #general")
    await c.send("/quit")
    assert await c.line() == "* bye"
    assert await c.closed()
    c2 = await clients(gw.port)
    await c2.line()
    await c2.send("ALICE")
    assert re.match(r"^\* Password for alice:", await c2.line())


async def test_plain_text_reaches_every_member_and_the_sender(two_users) -> None:
    _, a, b = await two_users()
    await a.send("hello everyone")
    for c in (a, b):
        line = await c.expect("hello everyone")
        assert MESSAGE_RE.match(line).groups() == ("#general", "alice", "hello everyone")


async def test_newcomer_sees_last_20_of_general_in_order(backend, gateways, clients) -> None:
    gw = gateways(backend)
    a = await clients(gw.port)
    await a.login("alice")
    for i in range(25):
        await a.send(f"message {i}")
    await a.expect("message 24")
    b = await clients(gw.port)
    backlog = await b.login("bob")
    assert [t for _, _, t in messages(backlog)] == [f"message {i}" for i in range(5, 25)]
    assert all(w == "#general" and n == "alice" for w, n, _ in messages(backlog))


async def test_history_option_changes_the_newcomer_backlog(backend, gateways, clients) -> None:
    gw = gateways(backend, "--history", "3")
    a = await clients(gw.port)
    await a.login("alice")
    for i in range(5):
        await a.send(f"m{i}")
    await a.expect("m4")
    b = await clients(gw.port)
    assert [t for *_, t in messages(await b.login("bob"))] == ["m2", "m3", "m4"]


async def test_unread_messages_on_reconnect_exactly_once(two_users, clients) -> None:
    gw, a, b = await two_users()
    await b.send("/chats random")
    await b.expect("joined #random")
    await b.send("/quit")
    await b.expect("bye")
    await a.send("public one")
    await a.send("/send bob private one")
    await a.send("/chats random")
    await a.send("in random")
    await a.send("/send #general public two")
    await a.expect("public two")
    b2 = await clients(gw.port)
    backlog = messages(await b2.login("bob"))
    assert backlog == [
        ("#general", "alice", "public one"),
        ("@alice", "alice", "private one"),
        ("#random", "alice", "in random"),
        ("#general", "alice", "public two"),
    ]
    await b2.send("/quit")
    await b2.expect("bye")
    b3 = await clients(gw.port)
    assert messages(await b3.login("bob")) == []


async def test_private_message_is_shown_to_both_with_peer_names(two_users, clients) -> None:
    gw, a, b = await two_users()
    c = await clients(gw.port)
    await c.login("carol")
    await a.send("/send Bob psst")
    assert messages([await a.expect("psst")]) == [("@bob", "alice", "psst")]
    assert messages([await b.expect("psst")]) == [("@alice", "alice", "psst")]
    await c.send("/who")
    assert "psst" not in " ".join(await c.lines())


async def test_chats_join_list_who_history_leave(two_users) -> None:
    _, a, b = await two_users()
    await a.send("/chats Random")
    assert await a.line() == "* joined #Random"
    await a.send("first in random")
    await a.expect("first in random")
    await b.send("/chats #random")
    lines = await b.lines()
    assert lines[0] == "* joined #Random"
    assert messages(lines[1:]) == [("#Random", "alice", "first in random")]
    await b.send("/chats random")
    assert await b.line() == "* you are in #Random"
    await b.send("/get_chats")
    chats = await b.expect("^\\* chats:")
    assert chats == "* chats: #general (2 members, 2 online), #Random (2 members, 2 online)"
    await b.send("/who")
    assert await b.expect("online") == "* online in #Random (2): alice, bob"
    await b.send("/history 1")
    assert messages([await b.line()]) == [("#Random", "alice", "first in random")]
    await b.send("/leave #random")
    assert await b.line() == "* left #Random"
    assert await b.line() == "* current chat is now #general"
    await b.send("/get_chats")
    assert (await b.expect("chats:")).endswith("#Random (1 member, 1 online)")
    await a.send("only alice now")
    await a.expect("only alice now")
    await b.send("/history")
    assert "only alice now" not in " ".join(await b.lines())


async def test_leaving_general_and_foreign_chats_is_refused(backend, gateways, clients) -> None:
    gw = gateways(backend)
    a = await clients(gw.port)
    await a.login("alice")
    await a.send("/leave #general")
    assert (await a.line()).startswith("! ")
    await a.send("/leave #nowhere")
    assert (await a.line()).startswith("! ")
    await a.send("/send #nowhere hi")
    assert (await a.line()).startswith("! not sent")
    await a.send("/who #nowhere")
    assert (await a.line()).startswith("! ")


async def test_help_lists_commands(backend, gateways, clients) -> None:
    gw = gateways(backend)
    a = await clients(gw.port)
    await a.login("alice")
    await a.send("/help")
    text = "\n".join(await a.lines())
    for command in ("/send", "/chats", "/get_chats", "/ban", "/leave", "/who", "/history", "/quit"):
        assert command in text


async def test_wrong_password_three_times_closes(backend, gateways, clients) -> None:
    gw = gateways(backend)
    a = await clients(gw.port)
    await a.login("alice", "right-password")
    b = await clients(gw.port)
    await b.expect("nickname")
    await b.send("Alice")
    for _ in range(3):
        await b.expect("Password for alice")
        await b.send("wrong-password")
        assert await b.line() == "! wrong password"
    assert await b.closed()
    c = await clients(gw.port)
    await c.login("ALICE", "right-password")


async def test_cyrillic_nicknames_are_case_insensitive(backend, gateways, clients) -> None:
    gw = gateways(backend)
    a, b = await clients(gw.port), await clients(gw.port)
    await a.login("Борис")
    await b.login("alice")
    await b.send("/send борис привет")
    assert messages([await a.expect("привет")]) == [("@alice", "alice", "привет")]
    c = await clients(gw.port)
    await c.expect("nickname")
    await c.send("БОРИС")
    assert await c.line() == "* Password for Борис:"


async def test_message_lifetime(backend, gateways, clients) -> None:
    gw = gateways(backend, "--message-ttl", "2")
    a = await clients(gw.port)
    await a.login("alice")
    await a.send("short lived")
    await a.expect("short lived")

    async def expired() -> bool:
        await a.send("/history")
        return "no messages" in await a.expect("short lived|no messages in #general")

    await eventually(expired, "the message gone after its 2 s lifetime", timeout=2.5)
    b = await clients(gw.port)
    assert messages(await b.login("bob")) == []
    if backend is not None:  # the stream itself is trimmed exactly, not just filtered
        r = redis_client(backend)
        await a.send("fresh")
        await a.expect("fresh")
        assert [f["t"] for _, f in r.xrange("chat:{c:general}:msgs")] == ["fresh"]
        r.close()


async def test_complaints_ban_and_expire(backend, gateways, clients) -> None:
    gw = gateways(backend, "--ban-duration", "3")
    bob = await clients(gw.port)
    await bob.login("bob")
    others = []
    for n, nick in enumerate(("alice", "carol", "dave")):  # three people: three addresses
        c = await clients(gw.port, f"127.0.0.{n + 2}")
        await c.login(nick)
        others.append(c)
    alice, carol, dave = others
    await alice.send("/ban bob")
    assert await alice.line() == "* complaint about bob recorded (1/3)"
    for _ in range(2):  # one user complaining three times is still one complaint
        await alice.send("/ban bob")
        assert (await alice.line()).startswith("! you already complained about bob (1/3)")
    await alice.send("/ban alice")
    assert await alice.line() == "! you cannot complain about yourself"
    await bob.send("still free")
    await bob.expect("still free")
    await carol.send("/ban BOB")
    assert await carol.expect("complaint") == "* complaint about bob recorded (2/3)"
    await dave.send("/ban bob")
    assert (await dave.expect("complaint")).startswith("* complaint about bob recorded (3/3)")
    await bob.expect("banned")
    await bob.send("am I banned")
    refused = await bob.expect("^! ")
    assert "banned" in refused and re.search(r"\d\d:\d\d:\d\d", refused)
    await bob.send("/send alice hello")
    assert "banned" in await bob.expect("^! ")
    await bob.send("/who")
    assert (await bob.expect("online")).startswith("* online in #general")

    async def free() -> bool:
        await bob.send("free again")
        return not (await bob.expect("free again|^! ")).startswith("!")

    await eventually(free, "bob's 3 s ban over", timeout=3.2)
    await alice.expect("free again")


async def test_ban_threshold_option(two_users) -> None:
    _, a, b = await two_users("--ban-threshold", "1")
    await a.send("/ban bob")
    assert (await a.line()).startswith("* complaint about bob recorded (1/1): bob is banned")
    await b.send("hi")
    assert "banned" in await b.expect("^! ")


async def test_one_user_on_two_connections_sees_everything_on_both(
    backend, gateways, clients
) -> None:
    gw = gateways(backend)
    a1, a2, b = await clients(gw.port), await clients(gw.port), await clients(gw.port)
    await a1.login("alice")
    await a2.login("alice")
    await b.login("bob")
    await b.send("/send alice to both")
    await a1.send("from device one")
    for c in (a1, a2):  # two senders, two conversations: either may come first
        got = [await c.expect("to both|from device one") for _ in range(2)]
        assert {"to both" in g for g in got} == {True, False}, got
    await a1.send("/chats games")
    assert await a1.line() == "* joined #games"
    assert await a2.expect("joined") == "* joined #games"
    await b.send("/chats games")
    await b.send("game on")
    await a1.expect("game on")
    await a2.expect("game on")
    await a2.send("/leave games")
    assert await a2.line() == "* left #games"
    assert await a1.expect("left") == "* left #games"
    assert await a1.line() == "* current chat is now #general"
