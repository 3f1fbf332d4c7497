"""First-day client bugs: Tab completion of nicknames and chats, reconnect backoff."""

from __future__ import annotations

import asyncio
import itertools
import time

from prompt_toolkit.application import create_app_session
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.shortcuts import PromptSession

from chatclient.lines import ChatState
from chatclient.link import Backoff, ChatLink
from chatclient.tui import ChatCompleter
from tests.helpers import eventually


def _state() -> ChatState:
    state = ChatState()
    state.nicks.update({"bob", "carol"})
    state.chats.add("random")
    return state


def test_completed_nick_and_chat_get_a_trailing_space() -> None:
    completer = ChatCompleter(_state())

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]

    assert complete("/send b") == ["bob "]
    assert complete("/send #ra") == ["#random "]
    assert complete("/who #ge") == ["#general "]
    assert complete("/se") == ["/send "]


async def test_tab_then_typing_separates_nick_from_text() -> None:
    """`/send b<Tab>hey` through a real prompt_toolkit prompt sends `/send bob hey`."""
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        session: PromptSession[str] = PromptSession(
            completer=ChatCompleter(_state()), complete_while_typing=False
        )
        for keys, want in (
            (("/send b\t", "hey\r"), "/send bob hey"),
            (("/chats #ra\t", "now\r"), "/chats #random now"),
        ):
            answer = asyncio.ensure_future(session.prompt_async())
            await eventually(lambda: session.app.is_running, "the prompt running")
            typed, completed = keys
            head = want.rsplit(" ", 1)[0]
            pipe.send_text(typed)
            await eventually(  # as typed: Tab's completion runs before the next keys
                lambda head=head: session.default_buffer.text.startswith(head),
                f"{typed!r} completed",
            )
            pipe.send_text(completed)
            assert await asyncio.wait_for(answer, 5) == want


# --- reconnect backoff with jitter, over real sockets ----------------------------------


class FakeGateway:
    """A loopback TCP server speaking just the login of the contract. `drop_all()` closes
    every connection at once, as a dying gateway does; with `refuse_login` it closes each
    connection right after the welcome line, as a gateway whose Redis is down does."""

    def __init__(self, refuse_login: bool = False) -> None:
        self.refuse_login = refuse_login
        self.accepted: list[float] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> FakeGateway:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(time.monotonic())
        self.writers.append(writer)
        try:
            writer.write(b"* Welcome to chat. Enter your nickname:\r\n")
            if self.refuse_login:
                await reader.readline()
                writer.write(b"! chat store unavailable, try again later\r\n")
                await writer.drain()
                writer.close()
                return
            nick = (await reader.readline()).decode().strip()
            writer.write(f"* Password for {nick}:\r\n".encode())
            await reader.readline()
            ready = f"* ready: logged in as {nick}, current chat #general (/help for commands)"
            writer.write(ready.encode() + b"\r\n")
            await writer.drain()
            while await reader.readline():
                pass
        except ConnectionError:
            pass

    def drop_all(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.drop_all()
        assert self.server is not None
        self.server.close()


def _link(port: int, nick: str) -> ChatLink:
    return ChatLink([("127.0.0.1", port)], nick, "secret123", lambda _: None, lambda _: None)


def test_backoff_waits_stay_inside_the_envelope_and_are_random() -> None:
    for attempt, top in enumerate((0.5, 1, 2, 4, 8, 10, 10, 10)):
        waits = []
        for _ in range(200):
            b = Backoff()
            b.attempt = attempt
            waits.append(b.next())
        assert all(top / 2 <= w <= top for w in waits), (top, min(waits), max(waits))
        assert max(waits) - min(waits) > top / 4  # spread out, not one value
    b = Backoff()
    b.next(), b.next(), b.next()
    b.reset()
    assert b.next() <= 0.5


def test_after_a_drop_the_first_wait_spreads_over_two_seconds() -> None:
    """A gateway's death sends all its clients back at once: the first wait is drawn from
    all of [0, 2 s] so they arrive spread out, then the envelope continues from 1 s."""
    waits = []
    for _ in range(400):
        b = Backoff()
        b.next(), b.next()
        waits.append(b.after_drop())
        assert b.next() <= 1.0
    assert all(0 <= w <= 2.0 for w in waits)
    assert min(waits) < 0.2 and max(waits) > 1.8  # the whole window is used


async def test_a_server_that_drops_before_login_is_retried_ever_more_slowly() -> None:
    """Old client: every connection that the server dropped reset the wait to 0.5 s, so a
    gateway whose Redis was down got a reconnect from every client every half second."""
    gw = await FakeGateway(refuse_login=True).start()
    link = _link(gw.port, "alice")
    runner = asyncio.create_task(link.run())
    try:  # waits at most 0.5, 1, 2 s, at least half that: four connections in 4.2 s
        await eventually(lambda: len(gw.accepted) >= 4, "four connections", timeout=4.2)
    finally:
        link.closing = True
        runner.cancel()
        await gw.close()
    gaps = [b - a for a, b in itertools.pairwise(gw.accepted)]
    assert len(gw.accepted) in (4, 5), gaps
    for k, gap in enumerate(gaps):
        top = min(0.5 * 2**k, 10)
        assert top / 2 - 0.05 <= gap <= top + 0.3, (k, gaps)


async def test_clients_dropped_together_do_not_reconnect_in_lockstep() -> None:
    gw = await FakeGateway().start()
    links = [_link(gw.port, f"user{i}") for i in range(30)]
    runners = [asyncio.create_task(link.run()) for link in links]
    try:
        await asyncio.wait_for(asyncio.gather(*(link.ready.wait() for link in links)), 10)
        gw.accepted.clear()
        dropped = time.monotonic()
        gw.drop_all()  # the gateway dies under all of them at once
        await eventually(lambda: len(gw.accepted) >= 30, "all 30 back", timeout=2.3)
        back = sorted(t - dropped for t in gw.accepted)
        assert len(back) == 30, back
        assert all(0 <= t <= 2.15 for t in back), back  # inside the 2 s window
        assert back[-1] - back[0] > 0.8, back  # spread over the window ...
        assert max(b - a for a, b in itertools.pairwise(back)) < 0.6, back
    finally:
        for link in links:
            link.closing = True
        for r in runners:
            r.cancel()
        await gw.close()


# --- a line longer than the reader's limit, and errors of any kind ------------------------


async def test_an_overlong_server_line_is_skipped_and_the_link_lives() -> None:
    """A 400 KB line (the old /get_chats reply) used to end the link task for good."""
    from chatclient.link import LINE_LIMIT

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* Welcome to chat. Enter your nickname:\r\n")
        await reader.readline()
        writer.write(b"* Password for ann:\r\n")
        await reader.readline()
        writer.write(b"* ready: logged in as ann, current chat #general\r\n")
        writer.write(b"* chats: " + b"#x (1 members, 0 online), " * (2 * LINE_LIMIT // 25))
        writer.write(b"\r\n[12:00:00] #general <bob> after the long line\r\n")
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    shown: list[str] = []
    status: list[str] = []
    link = ChatLink(
        [("127.0.0.1", port)], "ann", "secret123", lambda ln: shown.append(str(ln)), status.append
    )
    task = asyncio.create_task(link.run())
    await eventually(
        lambda: any("after the long line" in s for s in shown), "the line after the long one"
    )
    assert any("skipped a server line longer than" in s for s in status)
    assert not task.done()
    await link.quit()
    task.cancel()
    server.close()
