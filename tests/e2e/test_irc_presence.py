"""What IRC users see of each other beyond messages, against real gateways over one
redis-server: NOTICE stays a notice (and is a plain message on telnet and the page),
client-only tags and TAGMSG reach those who asked for message-tags and are never stored,
other users' JOIN, PART and QUIT reach small chats across gateways (closing one of two
devices is no QUIT; #general and chats over --presence-members are never told), and
notes to yourself come back as on an IRC server.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.e2e.test_irc import IN_CI, Irc, irc, parts, privmsgs
from tests.e2e.test_irc import irc_clients as irc_clients  # a fixture
from tests.helpers import Gateway, RedisProcess, WebClient, free_port, messages

#: Chats of at most this many members are told who comes and goes here.
SMALL = 3


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway]]:
    """Two gateways with IRC and web doors over one redis-server."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is needed")
        pytest.skip("redis-server not installed")
    tmp = tmp_path_factory.mktemp("presence")
    redis = RedisProcess(tmp / "redis")
    redis.start()
    env = {"CHAT_PRESENCE_MEMBERS": str(SMALL), "CHAT_TAGS_PER_MINUTE": "20"}
    gws = [
        Gateway(
            redis.url, tmp, CHAT_IRC_PORT=str(free_port()), CHAT_WEB_PORT=str(free_port()), **env
        ).start()
        for _ in range(2)
    ]
    try:
        yield gws[0], gws[1]
    finally:
        for gw in gws:
            gw.kill()
        redis.stop()


async def synced(c: Irc, token: str = "sync") -> list[str]:
    """Every line up to the PONG of a PING sent now (what the server had for `c`)."""
    await c.send(f"PING :{token}")
    out = []
    while True:
        line = await c.line()
        if f"PONG chat.gateway {token}" in line or line.endswith(f"PONG chat.gateway :{token}"):
            return out
        out.append(line)


async def test_a_notice_stays_a_notice_on_irc_and_is_a_message_elsewhere(
    pair, irc_clients, clients
) -> None:
    g1, g2 = pair
    amy = await irc(irc_clients, g1.irc_port)
    await amy.login("nia1", "message-tags server-time echo-message batch draft/chathistory")
    bob = await irc(irc_clients, g2.irc_port)
    await bob.login("nib1")
    tom = await clients(g2.port)
    await tom.login("nit1")
    web = await WebClient.connect(g2.web_port)
    await web.login("niw1")
    await amy.send("NOTICE #general :build passed", "PRIVMSG #general :build failed")
    for text, command in (("build passed", "NOTICE"), ("build failed", "PRIVMSG")):
        _, src, cmd, rest = parts(await bob.expect(text))
        assert (src, cmd, rest) == ("nia1", command, f" #general :{text}")
        _, _, echoed, _ = parts(await amy.expect(text))  # echo-message: as it was sent
        assert echoed == command
    # telnet and the page: exactly as a message (the same line, the same frame)
    lines = [await tom.expect("build passed"), await tom.expect("build failed")]
    assert messages(lines) == [
        ("#general", "nia1", "build passed"),
        ("#general", "nia1", "build failed"),
    ]
    items: list[dict[str, object]] = []
    while len(items) < 2:
        items += (await web.expect("messages"))["items"]
    assert [i["text"] for i in items] == ["build passed", "build failed"]
    assert [sorted(i) for i in items] == [["from", "id", "text", "ts"]] * 2
    # stored as a notice: history gives it back as one; a private notice too
    await amy.send("CHATHISTORY LATEST #general * 2")
    history = [line for line in await synced(amy) if "build" in line]
    assert [parts(line)[2] for line in history] == ["NOTICE", "PRIVMSG"]
    await amy.send("NOTICE nib1 :away for lunch")
    _, src, cmd, rest = parts(await bob.expect("away for lunch"))
    assert (src, cmd, rest) == ("nia1", "NOTICE", " nib1 :away for lunch")
    await web.close()


async def test_client_tags_and_tagmsg_reach_only_message_tags_clients_and_are_not_stored(
    pair, irc_clients
) -> None:
    g1, g2 = pair
    amy = await irc(irc_clients, g1.irc_port)
    await amy.login("tga1", "message-tags echo-message batch draft/chathistory")
    bob = await irc(irc_clients, g2.irc_port)
    await bob.login("tgb1", "message-tags server-time")
    cy = await irc(irc_clients, g2.irc_port)
    await cy.login("tgc1")
    for c in (amy, bob, cy):
        await c.send("JOIN #tags1")
        await c.expect(" 366 \\S+ #tags1 ")
    await synced(amy)
    await synced(bob)
    await synced(cy)
    await amy.send(r"@+draft/reply=1-0-ab;+draft/react=l\sl;fizz=buzz PRIVMSG #tags1 :hi")
    tags, _, _, rest = parts(await bob.expect("PRIVMSG #tags1"))
    assert rest == " #tags1 hi"
    assert tags["+draft/reply"] == "1-0-ab" and tags["+draft/react"] == r"l\sl"
    assert "fizz" not in tags and "msgid" in tags and "time" in tags
    assert parts(await cy.expect("PRIVMSG #tags1"))[0] == {}  # no message-tags: no tags
    echo_tags = parts(await amy.expect("PRIVMSG #tags1"))[0]
    assert echo_tags["+draft/reply"] == "1-0-ab" and echo_tags["msgid"] == tags["msgid"]
    # TAGMSG: to message-tags clients only (its sender with echo-message), same msgid
    await amy.send("@+typing=active;fizz=1 TAGMSG #tags1")
    relayed = await bob.expect("TAGMSG #tags1")
    tags, src, _, _ = parts(relayed)
    assert src == "tga1" and tags["+typing"] == "active" and "fizz" not in tags
    assert parts(await amy.expect("TAGMSG #tags1"))[0]["msgid"] == tags["msgid"]
    assert not [line for line in await synced(cy) if "TAGMSG" in line]
    # never stored: history has the message, not the TAGMSG
    await amy.send("CHATHISTORY LATEST #tags1 * 10")
    history = await synced(amy)
    assert [parts(line)[2] for line in history if "tga1!" in line] == ["PRIVMSG"]
    # a private TAGMSG; client tags past 4094 bytes: 417, nothing relayed
    await amy.send("@+typing=paused TAGMSG tgb1")
    assert parts(await bob.expect("TAGMSG tgb1"))[0]["+typing"] == "paused"
    await amy.send("@+big=" + "a" * 4090 + " TAGMSG #tags1")
    assert " 417 " in await amy.expect(" 417 ")
    assert not [line for line in await synced(bob) if "+big" in line]
    # its own budget (--tags-per-minute 20 here): past it, refused and said
    for _ in range(25):
        await amy.send("@+typing=active TAGMSG #tags1")
    said = await synced(amy)
    assert any("RATE_LIMITED" in line or "slow down" in line for line in said), said
    relayed = [line for line in await synced(bob) if "TAGMSG #tags1" in line]
    assert len(relayed) <= 20


async def test_join_part_and_quit_of_others_across_gateways_and_devices(
    pair, irc_clients, clients
) -> None:
    g1, g2 = pair
    amy = await irc(irc_clients, g1.irc_port)
    await amy.login("jpa1")
    await amy.send("JOIN #jp1")
    await amy.expect(" 366 jpa1 #jp1 ")
    bob = await irc(irc_clients, g2.irc_port)
    await bob.login("jpb1")
    await bob.send("JOIN #jp1")
    await bob.expect(" 366 jpb1 #jp1 ")
    assert await amy.expect("JOIN #jp1") == ":jpb1!jpb1@chat.gateway JOIN #jp1"
    await bob.send("PART #jp1 :see you later")
    await bob.expect("PART #jp1")
    assert await amy.expect("PART") == ":jpb1!jpb1@chat.gateway PART #jp1 :see you later"
    await bob.send("JOIN #jp1")
    await amy.expect("jpb1!\\S+ JOIN #jp1")
    # bob on a second device (another gateway): closing one of the two is no QUIT
    phone = await irc(irc_clients, g1.irc_port)
    await phone.login("jpb1")
    await bob.send("QUIT :switching to my phone")
    assert await bob.closed()
    assert not [line for line in await synced(amy) if "QUIT" in line]
    # a telnet user joining is shown on IRC too; telnet shows nothing of it
    tom = await clients(g2.port)
    await tom.login("jpt1")
    await tom.send("/chats jp1")
    await tom.expect("joined #jp1")
    await amy.expect("jpt1!\\S+ JOIN #jp1")
    # the last device goes: QUIT, once, with what was said
    await phone.send("QUIT :bye now")
    assert await amy.expect(" QUIT ") == ":jpb1!jpb1@chat.gateway QUIT :Quit: bye now"
    assert not [line for line in await synced(amy) if "QUIT" in line]
    assert not [line for line in tom.seen if "jpb1" in line]  # telnet: nothing of it
    # coming back online is a JOIN of every small chat; #general is never told
    back = await irc(irc_clients, g2.irc_port)
    await back.login("jpb1")
    assert await amy.expect("jpb1!\\S+ JOIN") == ":jpb1!jpb1@chat.gateway JOIN #jp1"
    assert not [line for line in await synced(amy) if "JOIN #general" in line]


async def test_chats_over_the_presence_size_are_not_told(pair, irc_clients) -> None:
    g1, g2 = pair
    users = []
    for i, gw in enumerate((g1, g2, g1, g2, g1)):
        c = await irc(irc_clients, gw.irc_port)
        await c.login(f"big{i}")
        await c.send("JOIN #big1")
        await c.expect(" 366 \\S+ #big1 ")
        users.append(c)
    first = await synced(users[0])
    # the 2nd and 3rd were told (3 members at most), the 4th made it 4: not told, nor
    # a part or a quit that leaves 4
    assert [parts(line)[1] for line in first if " JOIN #big1" in line] == ["big1", "big2"]
    await users[4].send("PART #big1 :bye")
    await users[4].expect("PART #big1")
    await users[1].send("QUIT :gone")
    assert await users[1].closed()
    said = await synced(users[0])
    assert not [line for line in said if " PART " in line or " QUIT " in line], said


async def test_notes_to_yourself_come_back_as_on_an_irc_server(pair, irc_clients, clients) -> None:
    g1, _ = pair
    plain = await irc(irc_clients, g1.irc_port)
    await plain.login("self1")
    await plain.send("PRIVMSG self1 :remember the milk")
    got = [line for line in await synced(plain) if "milk" in line]
    assert privmsgs(got) == [("self1", "self1", "remember the milk")]  # once: delivered
    echo = await irc(irc_clients, g1.irc_port)
    await echo.login("self1", "echo-message labeled-response batch draft/chathistory")
    await synced(plain)
    await echo.send("@label=n1 NOTICE self1 :and eggs")
    got = [line for line in await synced(echo) if "eggs" in line]
    assert [parts(line)[2] for line in got] == ["NOTICE", "NOTICE"]  # echo, delivery
    assert sum("label=n1" in line for line in got) == 1
    assert [parts(line)[2] for line in await synced(plain) if "eggs" in line] == ["NOTICE"]
    await echo.send("CHATHISTORY LATEST self1 * 10")
    texts = [t for _, _, t in privmsgs(await synced(echo))]
    assert texts == ["remember the milk"]
    # the line protocol still refuses them, as it always did
    tom = await clients(g1.port)
    await tom.login("selft1")
    await tom.send("/send selft1 hi me")
    assert "yourself" in await tom.expect("yourself")
