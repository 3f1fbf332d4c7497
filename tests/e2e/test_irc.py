"""The IRC door against real gateways: a raw IRC socket (every byte checked), the `irc`
library from PyPI, and irssi in tmux, beside telnet and web users on another gateway.

Two gateways over one redis-server are shared by the module's tests (each test uses its
own nicknames and chats, so they stay independent); the test that kills a gateway starts
its own.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_admin import admin
from tests.e2e.test_client import Terminal
from tests.e2e.test_tls_acl import certs  # noqa: F401  # a fixture: a CA and a certificate
from tests.helpers import (
    Client,
    Gateway,
    RedisProcess,
    WebClient,
    assert_quiet,
    eventually,
    free_port,
    messages,
    not_online,
    shown_recorded,
    wait_port,
    web_texts,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PASSWORD = "secret123"
LINE = re.compile(r"^(?:@(\S+) )?(?::(\S+) )?(\S+)(.*)$")


class Irc:
    """A raw IRC client: lines in, lines out, tags parsed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.seen: list[str] = []

    @classmethod
    async def connect(cls, port: int) -> Irc:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, *lines: str) -> None:
        self.writer.write(b"".join(line.encode() + b"\r\n" for line in lines))
        await self.writer.drain()

    async def line(self, timeout: float = 5.0) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        if not raw:
            raise EOFError("connection closed")
        assert raw.endswith(b"\r\n"), raw
        text = raw[:-2].decode()
        self.seen.append(text)
        return text

    async def expect(self, pattern: str, timeout: float = 5.0) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        skipped = []
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                if left <= 0:
                    raise TimeoutError
                text = await self.line(left)
            except TimeoutError:
                raise AssertionError(f"no line matching {pattern!r}; got {skipped!r}") from None
            if re.search(pattern, text):
                return text
            skipped.append(text)

    async def lines(self, quiet: float = 0.5) -> list[str]:
        out = []
        while True:
            try:
                out.append(await self.line(quiet))
            except TimeoutError:
                return out

    async def login(self, nick: str, caps: str = "", sasl: bool = False) -> list[str]:
        """Register; returns every line up to the end of the welcome (the last NAMES)."""
        if caps or sasl:
            await self.send("CAP LS 302")
            await self.expect(" CAP \\* LS ")
            want = (caps + (" sasl" if sasl else "")).strip()
            await self.send(f"CAP REQ :{want}")
            await self.expect(" CAP \\* ACK ")
        if sasl:
            await self.send("AUTHENTICATE PLAIN")
            await self.expect("^AUTHENTICATE \\+")
            blob = base64.b64encode(f"{nick}\0{nick}\0{PASSWORD}".encode()).decode()
            await self.send(f"AUTHENTICATE {blob}")
            await self.expect(" 903 ")
        else:
            await self.send(f"PASS {PASSWORD}")
        await self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
        if caps or sasl:
            await self.send("CAP END")
        before = []
        while True:
            text = await self.line(10)
            before.append(text)
            if " 366 " in text and "#general" in text:
                return before

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            while True:
                await self.line(timeout)
        except EOFError:
            return True
        except (TimeoutError, ConnectionError):
            return False

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def parts(line: str) -> tuple[dict[str, str], str, str, str]:
    """(tags, source nick, command, the rest) of a server line."""
    m = LINE.match(line)
    assert m, line
    tags = dict(t.partition("=")[::2] for t in (m.group(1) or "").split(";") if t)
    return tags, (m.group(2) or "").split("!")[0], m.group(3), m.group(4)


def privmsgs(lines: list[str]) -> list[tuple[str, str, str]]:
    """(target, sender, text) of every PRIVMSG line."""
    out = []
    for line in lines:
        _, src, command, rest = parts(line)
        if command == "PRIVMSG":
            target, _, text = rest.strip().partition(" ")
            out.append((target, src, text[1:] if text.startswith(":") else text))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway, str]]:
    """Two gateways with IRC and web doors over one redis-server, for the whole module."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is needed")
        pytest.skip("redis-server not installed")
    tmp = tmp_path_factory.mktemp("irc")
    redis = RedisProcess(tmp / "redis")
    redis.start()
    env = {"CHAT_BAN_THRESHOLD": "1", "CHAT_BAN_ADDRESS_MEMORY": "0", "CHAT_CURSOR_FLUSH": "0.2"}
    gws = [
        Gateway(
            redis.url, tmp, CHAT_IRC_PORT=str(free_port()), CHAT_WEB_PORT=str(free_port()), **env
        ).start()
        for _ in range(2)
    ]
    try:
        yield gws[0], gws[1], redis.url
    finally:
        for gw in gws:
            gw.kill()
        redis.stop()


@pytest.fixture
async def irc_clients() -> Iterator[list[Irc]]:  # type: ignore[misc]
    opened: list[Irc] = []
    yield opened  # type: ignore[misc]
    for c in opened:
        await c.close()


async def irc(opened: list[Irc], port: int) -> Irc:
    c = await Irc.connect(port)
    opened.append(c)
    return c


async def test_registration_caps_numerics_and_a_chat_with_telnet_and_web_on_another_gateway(
    world, irc_clients, clients
) -> None:
    g1, g2, _ = world
    amy = await irc(irc_clients, g1.irc_port)
    welcome = await amy.login(
        "amy1", "server-time message-tags echo-message account-tag labeled-response", sasl=True
    )
    commands = [parts(line)[2] for line in welcome]
    for numeric in ("001", "005", "375", "376", "JOIN", "353", "366"):
        assert numeric in commands, welcome
    tom = await clients(g2.port)
    await tom.login("tom1")
    web = await WebClient.connect(g2.web_port)
    await web.login("wes1")
    await tom.send("hello from telnet")
    tags, src, _, rest = parts(await amy.expect("hello from telnet"))
    assert src == "tom1" and rest == " #general :hello from telnet"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", tags["time"])
    # opaque: a position and a digest of the conversation, never the store's id
    assert re.fullmatch(r"\d+-\d+-[0-9a-f]{8}", tags["msgid"]) and tags["account"] == "tom1"
    assert "general" not in tags["msgid"]
    await web.send({"type": "say", "text": "hello from the web"})
    assert privmsgs([await amy.expect("hello from the web")]) == [
        ("#general", "wes1", "hello from the web")
    ]
    await amy.send("@label=p1 PRIVMSG #general :hello from irc")
    assert messages([await tom.expect("hello from irc")]) == [
        ("#general", "amy1", "hello from irc")
    ]
    assert ("#general", "amy1", "hello from irc") in await web.texts()
    echo = await amy.expect("hello from irc")  # echo-message: the copy comes back once
    assert parts(echo)[1] == "amy1"
    # labeled-response: the echo carries the label when it comes back while the PRIVMSG is
    # being handled, else the command gets an ACK
    await amy.lines(0.3)
    assert "@label=p1 :chat.gateway ACK" in amy.seen or "label=p1" in echo.split(" ")[0]
    # private messages both ways; an unknown nick is ERR_NOSUCHNICK
    await tom.send("/send amy1 psst from telnet")
    assert privmsgs([await amy.expect("psst")]) == [("amy1", "tom1", "psst from telnet")]
    await amy.send("PRIVMSG tom1 :psst from irc")
    assert messages([await tom.expect("psst from irc")]) == [("@amy1", "amy1", "psst from irc")]
    await amy.send("PRIVMSG nobody-here :hi")
    assert " 401 amy1 nobody-here " in await amy.expect(" 401 ")
    # a long message from telnet: split into lines of at most 512 bytes, nothing lost
    long = " ".join(f"word{i}" for i in range(400))
    await tom.send(long)
    got = []
    while " ".join(got) != long:
        line = await amy.expect("PRIVMSG #general")
        assert len(line.split(" ", 1)[1].encode()) + 2 <= 512
        got.append(privmsgs([line])[0][2])
    # the everyday commands common clients send
    await amy.send("PING :x1", "LIST", "WHO #general", "ISON tom1 nobody", "USERHOST tom1")
    await amy.send("MOTD", "TOPIC #general", "AWAY :lunch", "AWAY", "MODE #general", "FOO")
    for numeric in (
        " PONG ",
        " 322 amy1 #general ",
        " 323 ",
        " 352 ",
        " 315 ",
        " 303 amy1 :?tom1$",
    ):
        await amy.expect(numeric)
    for numeric in (" 302 ", " 376 ", " 331 ", " 306 ", " 305 ", " 324 ", " 421 amy1 FOO "):
        await amy.expect(numeric)
    await amy.send("HELP")
    await amy.expect("NOTICE amy1 :/quote COMPLAIN nick")
    # a complaint (the threshold is 1 here) bans: the banned user's post is 404 with the end
    await amy.send("COMPLAIN tom1")
    await amy.expect("complaint about tom1 recorded")
    await tom.expect("banned until")
    bad = await irc(irc_clients, g2.irc_port)
    await bad.login("tom1")
    await bad.send("PRIVMSG #general :still here?")
    assert re.search(
        r" 404 tom1 #general :not sent: you are banned until \d{4}-", await bad.expect(" 404 ")
    )
    await web.close()


async def test_wrong_password_and_missing_password_are_refused(world, irc_clients) -> None:
    g1, _, _ = world
    first = await irc(irc_clients, g1.irc_port)
    await first.login("kim1")
    wrong = await irc(irc_clients, g1.irc_port)
    await wrong.send("PASS not-the-one", "NICK kim1", "USER k 0 * :k")
    assert " 464 kim1 :wrong password" in await wrong.expect(" 464 ")
    assert await wrong.closed()
    none = await irc(irc_clients, g1.irc_port)
    await none.send("NICK kim2", "USER k 0 * :k")
    await none.expect(" 464 ")
    assert await none.closed()
    sasl = await irc(irc_clients, g1.irc_port)
    await sasl.send("CAP LS 302", "CAP REQ :sasl", "AUTHENTICATE PLAIN")
    await sasl.expect("^AUTHENTICATE")
    blob = base64.b64encode(b"kim1\0kim1\0not-the-one").decode()
    await sasl.send(f"AUTHENTICATE {blob}")
    assert " 904 " in await sasl.expect(" 904 ")


async def test_setting_the_invisible_mode_every_user_has_is_not_an_error(
    world, irc_clients
) -> None:
    """irssi (and HexChat) send `MODE <nick> +i` on every connect: it used to get `501
    Unknown MODE flag`, printed in every irssi user's status window."""
    g1, _, _ = world
    ula = await irc(irc_clients, g1.irc_port)
    await ula.login("ula1")
    await ula.send("MODE ula1 +i", "PING :after-plus-i")
    before = []
    while "after-plus-i" not in (line := await ula.line()):
        before.append(line)
    assert not [x for x in before if " 501 " in x], before
    await ula.send("MODE ula1")
    assert (await ula.expect(" 221 ")).endswith(" 221 ula1 +i")
    await ula.send("MODE ula1 +w")  # a mode this server does not have is still refused
    assert " 501 ula1 :Unknown MODE flag" in await ula.expect(" 501 ")
    await ula.send("MODE ula1 -i")  # nor can anyone become visible
    await ula.expect(" 501 ")


async def test_history_on_join_chathistory_and_resume_token(world, irc_clients, clients) -> None:
    g1, g2, _ = world
    tom = await clients(g2.port)
    await tom.login("tom2")
    await tom.send("/join hist2")
    for i in range(6):
        await tom.send(f"h{i}")
    await tom.expect("h5")
    ann = await irc(irc_clients, g1.irc_port)
    await ann.login("ann2", "server-time message-tags batch draft/chathistory")
    await ann.send("JOIN #hist2")
    lines = [await ann.expect("JOIN #hist2")]
    await ann.expect(" 366 ann2 #hist2 ")  # NAMES first, then the history, as servers do
    lines += [await ann.expect(f" #hist2 :?h{i}$") for i in range(6)]
    tags = parts(lines[1])[0]
    assert "batch" in tags  # history on join comes as a chathistory batch
    ids = [parts(line)[0]["msgid"] for line in lines[1:]]
    await ann.expect("BATCH -")
    await ann.send(f"CHATHISTORY BEFORE #hist2 msgid={ids[3]} 2")
    got = await ann.lines()
    assert [t for _, _, t in privmsgs(got)] == ["h1", "h2"]
    assert got[0].startswith(":chat.gateway BATCH +") and " chathistory #hist2" in got[0]
    await ann.send(f"CHATHISTORY AFTER #hist2 msgid={ids[3]} 5")
    assert [t for _, _, t in privmsgs(await ann.lines())] == ["h4", "h5"]
    await ann.send(f"CHATHISTORY AROUND #hist2 msgid={ids[2]} 3")
    assert [t for _, _, t in privmsgs(await ann.lines())] == ["h1", "h2", "h3"]
    await ann.send(f"CHATHISTORY BETWEEN #hist2 msgid={ids[0]} msgid={ids[4]} 10")
    assert [t for _, _, t in privmsgs(await ann.lines())] == ["h1", "h2", "h3"]
    await ann.send("CHATHISTORY LATEST #hist2 * 2")
    assert [t for _, _, t in privmsgs(await ann.lines())] == ["h4", "h5"]
    await ann.send(
        "CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z"
        " timestamp=2100-01-01T00:00:00.000Z 10"
    )
    targets = [line for line in await ann.lines() if " TARGETS " in line]
    assert any(" #hist2 " in t for t in targets)
    await ann.send("CHATHISTORY LATEST #not-mine * 5")
    assert "INVALID_TARGET" in (await ann.lines())[0] or "no such conversation" in ann.seen[-1]
    # a resume token works as the password
    await ann.send("TOKEN")
    token = re.search(r"token: ([0-9a-f]+)", await ann.expect("token:")).group(1)  # type: ignore[union-attr]
    again = await irc(irc_clients, g2.irc_port)
    await again.send(f"PASS {token}", "NICK ann2", "USER a 0 * :a")
    await again.expect(" 001 ann2 ")


async def test_unread_replay_once_read_markers_and_other_devices(
    world, irc_clients, clients
) -> None:
    g1, g2, url = world
    caps = "server-time message-tags batch draft/chathistory draft/read-marker"
    rita = await irc(irc_clients, g1.irc_port)
    await rita.login("rita3", caps)
    await rita.close()
    tom = await clients(g2.port)
    await tom.login("tom3")
    await eventually(lambda: not_online(tom, "rita3"), "rita away: what follows is unread")
    for i in range(3):
        await tom.send(f"unread {i}")
    await tom.expect("unread 2")
    back = await irc(irc_clients, g2.irc_port)  # the other gateway
    welcome = await back.login("rita3", caps) + await back.lines()
    replay = [m for m in privmsgs(welcome) if m[2].startswith("unread")]
    assert replay == [("#general", "tom3", f"unread {i}") for i in range(3)]
    first = next(line for line in welcome if "unread 0" in line)
    assert "batch" in parts(first)[0] and "time" in parts(first)[0]
    marker = next(line for line in welcome if " MARKREAD #general " in line)
    assert "timestamp=" in marker
    await back.close()
    await shown_recorded(url, "rita3", "c:general")  # written when the last session closes
    once = await irc(irc_clients, g1.irc_port)
    assert not [m for m in privmsgs(await once.login("rita3", caps) + await once.lines())
                if m[2].startswith("unread")]  # fmt: skip
    # read on another device (the web) while no IRC client is connected: not replayed, and
    # MARKREAD says where it was read
    await once.close()
    await eventually(lambda: not_online(tom, "rita3"), "rita away from IRC")
    phone = await WebClient.connect(g2.web_port)
    await phone.login("rita3")
    await tom.send("read on the phone")
    assert ("#general", "tom3", "read on the phone") in await phone.texts(quiet=0.5)
    await phone.close()
    await shown_recorded(url, "rita3", "c:general")
    desk = await irc(irc_clients, g1.irc_port)
    welcome = await desk.login("rita3", caps) + await desk.lines()
    assert "read on the phone" not in " ".join(welcome)
    await desk.send("MARKREAD #general")
    marker = await desk.expect(" MARKREAD #general ")
    await desk.send("CHATHISTORY LATEST #general * 1")
    latest = next(line for line in await desk.lines() if "read on the phone" in line)
    assert marker.endswith("timestamp=" + parts(latest)[0]["time"])
    await desk.send("MARKREAD #general timestamp=2001-01-01T00:00:00.000Z")  # never back
    assert await desk.expect(" MARKREAD #general ") == marker
    # joins and leaves on another device are JOIN and PART here
    phone = await WebClient.connect(g2.web_port)
    await phone.login("rita3")
    await phone.send({"type": "join", "chat": "side3"})
    await desk.expect(r"^:rita3!\S+ JOIN #side3$")
    await phone.send({"type": "leave", "chat": "side3"})
    await desk.expect(r"^:rita3!\S+ PART #side3$")
    await phone.close()


async def test_line_web_and_irc_doors_see_one_conversation_identically(
    world, irc_clients, clients
) -> None:
    g1, g2, _ = world
    tel = await clients(g1.port)
    await tel.login("tel4")
    await tel.send("/join same4")
    web = await WebClient.connect(g2.web_port)
    await web.login("web4")
    await web.send({"type": "join", "chat": "same4"})
    ircc = await irc(irc_clients, g2.irc_port)
    await ircc.login("irc4", "echo-message")
    await ircc.send("JOIN #same4")
    await ircc.expect(" 366 irc4 #same4 ")
    await tel.expect("joined #same4")
    await web.texts(quiet=0.3)
    await tel.lines(quiet=0.3)
    senders = [
        lambda i: tel.send(f"t{i}"),
        lambda i: web.send({"type": "say", "chat": "#same4", "text": f"w{i}"}),
        lambda i: ircc.send(f"PRIVMSG #same4 :i{i}"),
    ]
    for i in range(3):
        for send in senders:
            await send(i)

    async def nine(read, pick) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
        got: list[tuple[str, str]] = []
        while len(got) < 9:
            got += [(s, t) for w, s, t in pick([await read()]) if w == "#same4"]
        return got

    seen_tel = await nine(tel.line, messages)
    seen_web = await nine(web.frame, web_texts)
    seen_irc = await nine(ircc.line, privmsgs)
    why = "a message shown twice would follow the ninth"
    twice, *_ = await asyncio.gather(
        ircc.lines(quiet=0.5), assert_quiet(tel, 0.5, why), assert_quiet(web, 0.5, why)
    )
    assert not [m for m in privmsgs(twice) if m[0] == "#same4"], twice
    assert len(seen_tel) == 9 and len(set(seen_tel)) == 9
    assert seen_tel == seen_web == seen_irc
    await web.close()


async def test_a_gateway_killed_under_the_client(world, irc_clients, clients, tmp_path) -> None:
    g1, _, url = world
    g3 = Gateway(url, tmp_path, CHAT_IRC_PORT=str(free_port())).start()
    try:
        kay = await irc(irc_clients, g3.irc_port)
        await kay.login("kay5")
        g3.kill()
        assert await kay.closed(5)
        tom = await clients(g1.port)
        await tom.login("tom5")
        await tom.send("while you were away")
        again = await irc(irc_clients, g1.irc_port)
        welcome = await again.login("kay5") + await again.lines()
        assert ("#general", "tom5", "while you were away") in privmsgs(welcome)
    finally:
        g3.kill()


async def test_own_messages_without_echo_message_show_only_on_other_devices(
    world, irc_clients
) -> None:
    g1, g2, _ = world
    desk = await irc(irc_clients, g1.irc_port)
    await desk.login("dev9")
    phone = await irc(irc_clients, g2.irc_port)
    await phone.login("dev9")
    await desk.send("PRIVMSG #general :from the desk 1", "PRIVMSG #general :from the desk 2")
    mine = [m for m in privmsgs(await phone.lines(0.8)) if m[1] == "dev9"]
    assert mine == [("#general", "dev9", f"from the desk {i}") for i in (1, 2)]
    assert "from the desk" not in " ".join(await desk.lines(0.3))
    await desk.send("JOIN #leave9", "PART #leave9", "PART #general")
    await desk.expect(r"^:dev9!\S+ PART #leave9$")
    await desk.expect("you cannot leave #general")
    await phone.expect(r"^:dev9!\S+ JOIN #leave9$")  # done on the desk: shown on the phone
    await phone.expect(r"^:dev9!\S+ PART #leave9$")
    await desk.send("QUIT :bye")
    await desk.expect("^ERROR ")
    assert await desk.closed()


async def until_pong(c: Irc, token: str) -> list[str]:
    """Every line before the PONG of `PING :token` (sent here), less other tests' live
    messages to #general (the module's gateways are shared)."""
    await c.send(f"PING :{token}")
    before = []
    while token not in (line := await c.line()):
        if " PRIVMSG #general " not in line:
            before.append(line)
    return before


async def test_a_join_of_a_channel_already_shown_is_ignored(world, irc_clients, clients) -> None:
    """irssi rejoins its channels after a reconnect (`JOIN #general,#den`) once the welcome
    has joined them: each JOIN was answered with the chat's last messages again, printed
    as new lines. IRC servers ignore a JOIN of a channel the client is in; so does the door,
    per connection: what this connection has shown counts, not the user's membership."""
    g1, g2, _ = world
    tom = await clients(g2.port)
    await tom.login("tom11")
    await tom.send("/join den11")
    await tom.send("said in den")
    await tom.expect("said in den")
    ann = await irc(irc_clients, g1.irc_port)
    await ann.login("ann11", "server-time")
    await ann.send("JOIN #den11")
    await ann.expect(r"^:ann11!\S+ JOIN #den11$")
    await ann.expect(" 366 ann11 #den11 ")
    assert "said in den" in await ann.expect("said in den")  # the history, once
    await ann.lines(0.3)
    await ann.send("JOIN #den11", "JOIN #DEN11,#general")
    assert await until_pong(ann, "after-joins") == []  # no JOIN, NAMES nor history again
    # a new connection (irssi reconnecting): the welcome joins both; its own JOIN of them,
    # sent as irssi does after 001, changes nothing
    back = await irc(irc_clients, g2.irc_port)
    welcome = await back.login("ann11", "server-time") + await back.lines(0.5)
    assert [x for x in welcome if " JOIN " in x] == [
        ":ann11!ann11@chat.gateway JOIN #general",
        ":ann11!ann11@chat.gateway JOIN #den11",
    ]
    await back.send("JOIN #general,#den11")
    assert await until_pong(back, "after-rejoin") == []
    await tom.send("after the rejoin")  # and the chat goes on, shown once
    assert privmsgs([await back.expect("after the rejoin")]) == [
        ("#den11", "tom11", "after the rejoin")
    ]
    assert "after the rejoin" not in " ".join(await back.lines(0.3))
    # a chat joined on another device is a JOIN here: a JOIN of it then is ignored too
    await ann.send("JOIN #side11")
    await ann.expect(" 366 ann11 #side11 ")
    await back.expect(r"^:ann11!\S+ JOIN #side11$")
    await back.send("JOIN #side11")
    assert await until_pong(back, "after-side") == []
    # a chat not shown here is joined as before: JOIN, NAMES, history
    await back.send("JOIN #new11")
    await back.expect(r"^:ann11!\S+ JOIN #new11$")
    await back.expect(" 366 ann11 #new11 ")


async def test_kick_is_the_chats_moderator_kick(world, irc_clients, clients) -> None:
    """irssi's `/kick #general cara bye` sends `KICK #general cara :bye`: it was `421
    Unknown command`. It is the chat's moderator kick (every session of the user, on every
    gateway), with a server's numerics for what goes wrong."""
    g1, g2, url = world
    mod = await irc(irc_clients, g1.irc_port)
    await mod.login("mod12")
    cara = await irc(irc_clients, g2.irc_port)
    await cara.login("cara12")
    phone = await clients(g1.port)  # cara on telnet too, on the other gateway
    await phone.login("cara12")
    await mod.send("KICK #general cara12 :bye")
    assert await until_pong(mod, "p1") == [
        ":chat.gateway 482 mod12 #general :You're not channel operator"
    ]
    code, out, _ = await admin(url, "mod", "mod12")
    assert (code, out.strip()) == (0, "mod12 is now a moderator")
    await mod.send("KICK #general", "KICK general cara12", "KICK #a:b cara12")
    await mod.send("KICK #elsewhere12 cara12", "KICK #general nobody12")
    errors = await until_pong(mod, "p2")
    assert errors[:4] == [
        ":chat.gateway 461 mod12 KICK :Not enough parameters",
        ":chat.gateway 403 mod12 general :No such channel",
        ":chat.gateway 403 mod12 #a:b :No such channel",
        ":chat.gateway 442 mod12 #elsewhere12 :You're not on that channel",
    ]
    assert len(errors) == 5 and errors[4].startswith(":chat.gateway 401 mod12 nobody12 :")
    assert await until_pong(cara, "not-kicked-yet") == []  # none of that reached cara
    await mod.send("KICK #general cara12 :bye")
    assert await until_pong(mod, "p3") == [
        ":chat.gateway NOTICE mod12 :cara12 was disconnected (every session)"
    ]
    assert await cara.expect("^ERROR ") == "ERROR :you were disconnected by a moderator"
    assert await cara.closed()
    assert await phone.expect("^!") == "! you were disconnected by a moderator"
    assert await phone.closed()
    await mod.send("HELP")
    assert "disconnects nick everywhere" in await mod.expect("NOTICE mod12 :/kick ")


async def test_the_welcome_says_where_the_state_is_kept(world, irc_clients, tmp_path) -> None:
    """003 said `This server keeps its state in Redis` on a gateway without --redis-url."""
    g1, _, _ = world
    red = await irc(irc_clients, g1.irc_port)
    created = [x for x in await red.login("vic13") if " 003 " in x]
    assert created == [":chat.gateway 003 vic13 :This server keeps its state in Redis"]
    alone = Gateway(None, tmp_path, CHAT_IRC_PORT=str(free_port())).start()  # embedded
    try:
        emb = await irc(irc_clients, alone.irc_port)
        created = [x for x in await emb.login("vic13") if " 003 " in x]
        assert created == [
            ":chat.gateway 003 vic13 :This server keeps its state in its embedded store"
        ]
    finally:
        alone.kill()


async def test_irc_over_websocket_on_the_web_port(world, clients) -> None:
    """IRCv3 WebSocket (`text.ircv3.net`): one line per text frame, no CRLF."""
    from websockets.asyncio.client import connect

    g1, g2, _ = world
    ws = await connect(
        f"ws://127.0.0.1:{g1.web_port}/ws",
        subprotocols=["text.ircv3.net"],  # type: ignore[list-item]
        origin=f"http://127.0.0.1:{g1.web_port}",  # type: ignore[arg-type]
        open_timeout=10,
    )
    try:
        assert ws.subprotocol == "text.ircv3.net"
        for line in (f"PASS {PASSWORD}", "NICK webirc10", "USER w 0 * :w"):
            await ws.send(line)
        got: list[str] = []
        while not any(" 366 webirc10 #general " in g for g in got):
            got.append(str(await asyncio.wait_for(ws.recv(), 10)))
        assert all(not g.endswith("\r\n") for g in got) and " 001 webirc10 " in got[0]
        tom = await clients(g2.port)
        await tom.login("tom10")
        await tom.send("to the web irc client")
        while "to the web irc client" not in got[-1]:
            got.append(str(await asyncio.wait_for(ws.recv(), 10)))
        await ws.send("PRIVMSG #general :from a web irc client")
        assert messages([await tom.expect("from a web irc client")]) == [
            ("#general", "webirc10", "from a web irc client")
        ]
    finally:
        await ws.close()


async def test_irc_over_tls_and_slow_down(world, certs, irc_clients, tmp_path) -> None:  # noqa: F811
    _, _, url = world
    tls_port = free_port()
    gw = Gateway(
        url,
        tmp_path,
        "--irc-tls-port",
        str(tls_port),
        "--tls-cert",
        str(certs / "server.pem"),
        "--tls-key",
        str(certs / "server.key"),
        CHAT_RATE="1",
        CHAT_BURST="1",
    ).start()
    try:
        wait_port(tls_port, proc=gw.proc)
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        reader, writer = await asyncio.open_connection("localhost", tls_port, ssl=ctx)
        sam = Irc(reader, writer)
        irc_clients.append(sam)
        await sam.login("sam8", "standard-replies")
        await sam.send("PRIVMSG #general :one", "PRIVMSG #general :two")
        fail = await sam.expect(" FAIL ")
        assert " FAIL PRIVMSG RATE_LIMITED #general :slow down" in fail
    finally:
        gw.kill()


def test_the_irc_library_logs_in_and_chats(world) -> None:
    """jaraco's `irc` client (PyPI), as a bot would use it, against the door."""
    import irc.client

    g1, g2, _ = world
    reactor = irc.client.Reactor()
    got: list[tuple[str, str, str]] = []
    welcomed, joined = threading.Event(), threading.Event()
    conn = reactor.server().connect("127.0.0.1", g1.irc_port, "lib6", password=PASSWORD)
    conn.add_global_handler("welcome", lambda c, e: welcomed.set())
    conn.add_global_handler("join", lambda c, e: joined.set())  # its #general
    reactor.add_global_handler(
        "pubmsg", lambda c, e: got.append((e.target, e.source.nick, e.arguments[0]))
    )
    reactor.add_global_handler(
        "privmsg", lambda c, e: got.append((e.target, e.source.nick, e.arguments[0]))
    )

    async def telnet_side() -> list[str]:
        tom = await Client.connect(g2.port)
        await tom.login("tom6")
        assert await asyncio.to_thread(joined.wait, 10), "the bot never joined #general"
        await tom.send("to the bot")
        await tom.send("/send lib6 private to the bot")
        line = await tom.expect("from the bot")
        await tom.close()
        return [line]

    def pump(until: threading.Event, seconds: float) -> None:
        for _ in range(int(seconds / 0.05)):
            reactor.process_once(0.05)
            if until.is_set():
                return

    pump(welcomed, 10)
    assert welcomed.is_set()
    result: list[list[str]] = []
    done = threading.Event()

    def run_telnet() -> None:
        result.append(asyncio.run(telnet_side()))
        done.set()

    t = threading.Thread(target=run_telnet)
    t.start()
    for _ in range(200):
        reactor.process_once(0.05)
        if ("lib6", "tom6", "private to the bot") in got:
            break
    conn.privmsg("#general", "from the bot")
    pump(done, 10)
    t.join(10)
    conn.close()
    assert ("#general", "tom6", "to the bot") in got
    assert ("lib6", "tom6", "private to the bot") in got
    assert messages(result[0]) == [("#general", "lib6", "from the bot")]


async def test_irssi_in_tmux(world, clients, tmp_path: Path) -> None:
    exe = shutil.which("irssi")
    if exe is None:
        if IN_CI:
            pytest.fail("irssi is needed (apt-get install irssi)")
        pytest.skip("irssi not installed")
    g1, g2, _ = world
    home = tmp_path / "irssi"
    home.mkdir()
    term = Terminal(
        tmp_path,
        f"{exe} --home={home} -c 127.0.0.1 -p {g1.irc_port} -w {PASSWORD} -n ivy7",
        name="irssi",
    )
    try:
        await term.wait("End of /MOTD", 15)
        term.keys("/window goto #general", "Enter")
        tom = await clients(g2.port)
        await tom.login("tom7")
        await tom.send("hello irssi")
        await term.wait("hello irssi")
        term.keys("hello from irssi", "Enter")
        assert messages([await tom.expect("hello from irssi")]) == [
            ("#general", "ivy7", "hello from irssi")
        ]
        await tom.send("/send ivy7 a private word")  # irssi opens a query window for it
        term.keys("/window goto tom7", "Enter")
        await term.wait("a private word")
        term.keys("/msg tom7 a private answer", "Enter")
        assert messages([await tom.expect("a private answer")]) == [
            ("@ivy7", "ivy7", "a private answer")
        ]
        await tom.send("/join irssi7")  # history on join, shown in the new window
        await tom.send("said before ivy joined")
        await tom.expect("said before ivy joined")
        term.keys("/join #irssi7", "Enter")
        await term.wait("said before ivy joined")
    finally:
        term.close()
