"""First-day client bugs: Tab completion of nicknames and chats, reconnect backoff."""

from __future__ import annotations

import asyncio

from prompt_toolkit.application import create_app_session
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.shortcuts import PromptSession

from chatclient.lines import ChatState
from chatclient.tui import ChatCompleter


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
            for chunk in keys:  # as typed: Tab's completion runs before the next keys
                await asyncio.sleep(0.3)
                pipe.send_text(chunk)
            assert await asyncio.wait_for(answer, 5) == want
