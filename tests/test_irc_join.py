"""The IRC door's JOIN, by the codec alone (no sockets): what a connection has shown
decides, not the user's membership. tests/e2e/test_irc.py has the end-to-end half."""

from __future__ import annotations

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.doors.irc.codec import IrcCodec, IrcShared
from gateway.doors.irc.registration import Stage
from gateway.kit.lines import Line
from store.contract import Conv, Message


def registered(nick: str, *chats: str) -> IrcCodec:
    c = IrcCodec(IrcShared(1 << 20))
    c.reg.stage = Stage.REGISTERED
    c.encode(ev.Ready(nick, chats[0], chats))
    c.release()
    c.take()
    return c


def run(c: IrcCodec, line: str, answers: dict[type, list[ev.Event]]) -> tuple[list, bytes]:
    """Handle `line`, answering each core command with its events; (commands, bytes out)."""
    asked, out = [], b""
    for step in c.decode(Line(line), None):
        if isinstance(step, bytes):
            out += step
            continue
        asked.append(step)
        for event in answers.get(type(step), []):
            out += c.encode(event) if not isinstance(event, ev.Messages) else c.show(event)
    return asked, out + c.take()


def history(*texts: str) -> ev.Messages:
    items = tuple(
        Message((i + 1, 0), Conv.of_chat("den"), "bob", "den", t) for i, t in enumerate(texts)
    )
    return ev.Messages(ev.ChatConv("den", "den"), items)


def test_a_chat_the_user_is_in_but_this_connection_has_not_shown_gets_its_join_burst() -> None:
    """The core says `already` (joined on another device, whose JOIN has not reached this
    connection yet): this connection still shows the JOIN, NAMES and history."""
    c = registered("ann", "general")
    answers = {
        cmd.Join: [ev.Joined("den", already=True), history("before")],
        cmd.Who: [ev.Online("den", ("ann", "bob"), 2)],
    }
    asked, out = run(c, "JOIN #den", answers)
    assert asked == [cmd.Join("den"), cmd.Who("den")]
    assert out.decode().split("\r\n")[:-1] == [
        ":ann!ann@chat.gateway JOIN #den",
        ":chat.gateway 353 ann = #den :ann bob",
        ":chat.gateway 366 ann #den :End of /NAMES list.",
        ":bob!bob@chat.gateway PRIVMSG #den before",
    ]
    # the other device's JOIN arriving now shows nothing more; a JOIN again asks nothing
    assert c.encode(ev.Joined("den")) == b""
    assert run(c, "JOIN #den,#DEN,#general", answers) == ([], b"")


def test_a_chat_shown_at_the_welcome_is_not_joined_again() -> None:
    c = registered("ann", "general", "den")
    assert run(c, "JOIN #den", {cmd.Join: [ev.Joined("den", already=True)]}) == ([], b"")
