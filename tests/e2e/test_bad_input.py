"""Every bad input the contract names gets an error line and changes nothing else."""

from __future__ import annotations

from tests.helpers import messages


async def test_bad_nicknames_get_an_error_and_the_prompt_again(backend, gateways, clients) -> None:
    gw = gateways(backend)
    c = await clients(gw.port)
    await c.expect("nickname")
    for bad in ("has space", "x" * 33, "semi;colon", "<tag>", "#chan"):
        await c.send(bad)
        assert (await c.line()).startswith("! bad nickname")
        assert "nickname" in await c.line()
    await c.send("good_nick")
    assert "password" in (await c.line()).lower()


async def test_short_password_is_refused_at_registration(backend, gateways, clients) -> None:
    gw = gateways(backend)
    c = await clients(gw.port)
    await c.expect("nickname")
    await c.send("alice")
    await c.expect("password")
    await c.send("12345")
    assert (await c.line()).startswith("! bad password")
    assert "password" in await c.line()
    await c.send("123456")
    assert (await c.line()).startswith("* ready")


async def test_too_long_line_is_refused_and_the_connection_still_works(two_users) -> None:
    _, a, b = await two_users("--max-line", "100")
    await a.send("x" * 5000)
    assert (await a.line()).startswith("! line too long")
    await a.send("y" * 100)
    await b.expect("y" * 100)
    await a.send("after")
    assert messages([await b.expect("after")]) == [("#general", "alice", "after")]


async def test_invalid_utf8_is_refused(two_users) -> None:
    _, a, b = await two_users()
    await a.send(b"bad \xc3\x28 \xfe\x80 bytes\r\n")
    assert (await a.line()) == "! line is not valid UTF-8, discarded"
    await a.send("good")
    assert messages([await b.expect("good")]) == [("#general", "alice", "good")]


async def test_control_characters_never_reach_other_users(two_users) -> None:
    _, a, b = await two_users()
    await a.send("\x1b[2J\x1b]0;pwned\x07clear\tscreen\x9b\x00!")
    line = await b.expect("clear")
    assert messages([line]) == [("#general", "alice", "[2J]0;pwnedclear\tscreen!")]


async def test_telnet_negotiation_is_stripped(backend, gateways, clients) -> None:
    gw = gateways(backend)
    a = await clients(gw.port)
    b = await clients(gw.port)
    await b.login("bob")
    await a.expect("nickname")
    await a.send(b"\xff\xfd\x03\xff\xfb\x18ali\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0ce\r\n")
    assert (await a.line()).startswith("* New nickname alice.")
    await a.send("secret123")
    await a.expect("ready")
    await a.send(b"hel\xff\xfb\x01lo\r\n")
    assert messages([await b.expect("lo")]) == [("#general", "alice", "hello")]


async def test_lf_only_and_empty_lines(two_users) -> None:
    _, a, b = await two_users()
    await a.send(b"\n\r\n   \r\nlf only\n")
    assert messages([await b.line()]) == [("#general", "alice", "lf only")]
    assert messages([await a.line()]) == [("#general", "alice", "lf only")]


async def test_bad_commands_get_errors_and_change_nothing(two_users) -> None:
    _, a, b = await two_users()
    cases = {
        "/foo": "! unknown command /foo (try /help)",
        "/send": "! usage",
        "/send bob": "! usage",
        "/send nobody hi": "! not sent: no such user nobody",
        "/send #nowhere hi": "! not sent: you are not in #nowhere",
        "/chats": "! usage",
        "/chats bad!name": "! bad chat name",
        "/leave": "! usage",
        "/ban": "! usage",
        "/ban nobody": "! no such user nobody",
        "/history abc": "! usage",
        "/send alice me": "! you cannot send a private message to yourself",
    }
    for line, reply in cases.items():
        await a.send(line)
        assert (await a.line()).startswith(reply), line
    assert await b.lines(quiet=0.3) == []
    await a.send("/get_chats")
    assert await a.line() == "* chats: #general (2 members, 2 online)"
