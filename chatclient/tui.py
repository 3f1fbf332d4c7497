"""The interactive terminal UI (prompt_toolkit).

Incoming lines are printed above the input line, which prompt_toolkit redraws intact, so
nothing the user is typing is broken up. The prompt shows the current chat; the toolbar
shows the server and the connection state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import print_formatted_text

from chatclient.lines import (
    COMMANDS,
    LOCAL_HELP,
    ChatState,
    Error,
    Message,
    ServerLine,
    nick_colour,
)
from chatclient.link import ChatLink

__all__ = ["CHAT_COMMANDS", "ChatCompleter", "format_line", "run_tui"]

#: Commands whose first argument is a chat (its # optional): Tab completes chats there.
CHAT_COMMANDS = ("/chats", "/leave", "/who")


class ChatCompleter(Completer):
    """Commands first word; then nicknames and #chats seen so far. Every completion ends
    with a space, so typing on after Tab starts the next word (`/send b<Tab>hey` sends
    `/send bob hey`, not `/send bobhey`)."""

    def __init__(self, state: ChatState) -> None:
        self.state = state

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        word = document.get_word_before_cursor(WORD=True)
        before = document.text_before_cursor
        if before.startswith("/") and " " not in before:
            for c in COMMANDS:
                if c.startswith(word.lower()):
                    yield Completion(c + " ", start_position=-len(word))
            return
        head = before[: len(before) - len(word)].split()  # the words before this one
        chat_arg = len(head) == 1 and head[0].lower() in CHAT_COMMANDS
        if word.startswith("#") or chat_arg:  # `/chats ru<Tab>` too: the # is optional
            hash_ = "#" if word.startswith("#") else ""
            for chat in sorted(self.state.chats, key=str.casefold):
                if chat.casefold().startswith(word.removeprefix("#").casefold()):
                    yield Completion(
                        hash_ + chat + " ", start_position=-len(word), display="#" + chat
                    )
            return
        for nick in sorted(self.state.nicks, key=str.casefold):
            if word and nick.casefold().startswith(word.casefold()):
                yield Completion(nick + " ", start_position=-len(word), display=nick)


def format_line(line: ServerLine) -> FormattedText:
    if isinstance(line, Message):
        where_style = "ansimagenta bold" if line.private else "ansibrightblack"
        return FormattedText(
            [
                ("ansibrightblack", f"[{line.time}] "),
                (where_style, line.where + " "),
                (nick_colour(line.nick) + " bold", f"<{line.nick}>"),
                ("ansimagenta" if line.private else "", " " + line.text),
            ]
        )
    if isinstance(line, Error):
        return FormattedText([("ansired bold", line.raw)])
    return FormattedText([("ansibrightblack italic", line.raw)])


class Question:
    """What the link asks the user (nickname, password, yes/no), answered on the prompt:
    while one is open the prompt shows it, the typed line is its answer (hidden for a
    password, never sent, never in the input history)."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.secret = False
        self._answer: asyncio.Future[str | None] | None = None

    async def ask(self, text: str, secret: bool) -> str | None:
        self.text, self.secret = text, secret
        self._answer = asyncio.get_running_loop().create_future()
        with contextlib.suppress(Exception):
            get_app().invalidate()
        try:
            return await self._answer
        finally:
            self.text, self.secret, self._answer = None, False, None

    @property
    def open(self) -> bool:
        return self._answer is not None and not self._answer.done()

    def answer(self, text: str | None) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(text)


async def run_tui(link: ChatLink) -> int:
    """One prompt for the whole session: Enter sends and clears the line but never leaves
    the prompt, so the terminal stays in raw mode and no keystroke is ever echoed raw.
    The client connects first; the nickname and password are asked on this same prompt
    when the server wants them."""
    state = link.state
    bindings = KeyBindings()
    pending: set[asyncio.Task[None]] = set()
    question = Question()
    link.ask = question.ask

    async def handle(text: str) -> None:
        if text.lower() == "/help":
            for line in LOCAL_HELP:
                print_formatted_text(FormattedText([("ansibrightblack", "  " + line)]))
        elif text.lower() == "/quit":
            get_app().exit()
        else:
            await link.send(text)

    @bindings.add("enter", eager=True)
    def _send(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if question.open:  # an answer: taken as typed, never sent nor kept in the history
            answer = buffer.text
            buffer.reset(append_to_history=False)
            shown = "" if question.secret else answer.strip()  # a password stays hidden
            print_formatted_text(FormattedText([("", f"{question.text}{shown}")]))
            question.answer(answer)
            return
        text = buffer.text.strip()
        buffer.reset(append_to_history=bool(text))
        if text:
            task = asyncio.get_running_loop().create_task(handle(text))
            pending.add(task)
            task.add_done_callback(pending.discard)

    @bindings.add("c-d")
    def _eof(event: KeyPressEvent) -> None:
        if event.current_buffer.text:
            event.current_buffer.delete()
        else:
            event.app.exit()

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        event.app.exit()

    session: PromptSession[str] = PromptSession(
        lambda: (
            FormattedText([("bold", question.text)])
            if question.text
            else FormattedText([("bold", f"#{state.current}"), ("", "> ")])
        ),
        is_password=Condition(lambda: question.secret),
        history=InMemoryHistory(),
        completer=ChatCompleter(state),
        complete_while_typing=False,
        bottom_toolbar=lambda: _toolbar(link),
        refresh_interval=0.5,
        key_bindings=bindings,
    )
    link.show = lambda line: print_formatted_text(format_line(line))
    link.status = lambda text: print_formatted_text(FormattedText([("ansiyellow", f"-- {text}")]))
    with patch_stdout(raw=True):
        runner = asyncio.create_task(link.run())
        runner.add_done_callback(lambda _: session.app.is_running and session.app.exit())
        try:
            await session.prompt_async()
        except (EOFError, KeyboardInterrupt):
            pass
        finally:
            left = not runner.done()  # the user left (rather than the link ending)
            await link.quit()
            question.answer(None)
            runner.cancel()
    if left:
        print("bye")
        return 0
    if link.ended:
        print(f"{link.ended}; not reconnecting (run client.py again to log in)")
        return 1
    if link.fatal:
        print(f"login refused: {link.fatal}")
        return 1
    print("bye")
    return 0


def _toolbar(link: ChatLink) -> FormattedText:
    server = f"{link.server[0]}:{link.server[1]}" if link.server else "-"
    up = link.ready.is_set()
    if up:
        state = " connected "
    elif link.logins:
        state = " reconnecting "
    else:
        state = " logging in " if link.server else " connecting "
    return FormattedText(
        [
            ("", f" {link.state.nick or link.nick or ''} @ {server}  "),
            ("bg:ansigreen ansiblack" if up else "bg:ansired ansiwhite", state),
            ("", f"  current chat #{link.state.current}  Tab completes, /help"),
        ]
    )
