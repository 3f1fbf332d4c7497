import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.shortcuts import PromptSession

from chatclient.lines import (
    ChatState,
    Error,
    Message,
    Notice,
    ReplayFilter,
    classify,
    nick_colour,
    parse_servers,
)
from chatclient.tui import ChatCompleter


def test_classify_the_three_kinds() -> None:
    m = classify("[21:40:05] #general <alice> hello <b> there")
    assert isinstance(m, Message)
    assert (m.time, m.where, m.nick, m.text) == ("21:40:05", "#general", "alice", "hello <b> there")
    assert classify("[21:40:05] @bob <alice> hi").private
    assert classify("* joined #x") == Notice("* joined #x", "joined #x")
    assert classify("! nope") == Error("! nope", "nope")


def test_state_follows_current_chat_only_when_this_session_asked() -> None:
    s = ChatState()
    s.seen(classify("* ready: logged in as Alice, current chat #general (/help for commands)"))
    assert (s.nick, s.current) == ("Alice", "general")
    s.seen(classify("* joined #elsewhere"))  # another device joined: not current here
    assert s.current == "general" and "elsewhere" in s.chats
    s.typed("/chats Games")
    s.seen(classify("* joined #games"))
    assert s.current == "games"
    s.seen(classify("* left #games"))
    s.seen(classify("* current chat is now #general"))
    assert s.current == "general" and "games" not in s.chats


def test_state_collects_nicks_and_chats_for_completion() -> None:
    s = ChatState()
    s.seen(classify("[1] #random <bob> hi"))
    s.seen(classify("[1] @carol <dave> psst"))
    s.seen(classify("* online in #general (2): erin, frank"))
    s.seen(classify("* chats: #general (2 members, 1 online), #ops (1 members, 1 online)"))
    assert {"bob", "carol", "dave", "erin", "frank"} <= s.nicks
    assert {"random", "general", "ops"} <= s.chats


def test_replay_filter_drops_only_repeated_lines_while_replaying() -> None:
    f = ReplayFilter()
    a, b = classify("[1] #g <x> a"), classify("[1] #g <x> b")
    assert f.show(a)
    assert f.show(a)  # live: the user may see identical lines twice
    f.replaying = True
    assert not f.show(a)
    assert f.show(b)
    assert f.show(classify("* notice"))


def test_servers_from_flags_lists_and_environment() -> None:
    assert parse_servers(None, None) == [("127.0.0.1", 8000)]
    assert parse_servers(["a:1", "b:2,c:3"], None) == [("a", 1), ("b", 2), ("c", 3)]
    assert parse_servers(None, "h:9") == [("h", 9)]


def test_a_port_out_of_range_is_refused_not_tried() -> None:
    """`--server 127.0.0.1:99999` exited 0 saying nothing (the port wrapped in the OS)."""
    for bad in ("h:99999", "h:0", "h:65536"):
        with pytest.raises(ValueError, match="1-65535"):
            parse_servers([bad], None)


def test_nick_colours_are_stable_and_case_insensitive() -> None:
    assert nick_colour("Alice") == nick_colour("alice")


def _complete(state: ChatState, text: str) -> list[str]:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    return [c.text for c in ChatCompleter(state).get_completions(Document(text), CompleteEvent())]


def test_completer_offers_commands_nicks_and_chats() -> None:
    state = ChatState()
    state.nicks.update({"Borislav", "bob", "carol"})
    state.chats.add("random")
    assert _complete(state, "/se") == ["/send "]
    assert _complete(state, "/send bo") == ["bob ", "Borislav "]
    assert _complete(state, "/chats #ra") == ["#random "]
    assert _complete(state, "hello ") == []


def test_up_arrow_walks_the_input_history() -> None:
    from prompt_toolkit.history import InMemoryHistory

    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        session: PromptSession[str] = PromptSession(history=InMemoryHistory())
        pipe.send_text("first\r")
        assert session.prompt() == "first"
        pipe.send_text("\x1b[A\r")  # Up, Enter
        assert session.prompt() == "first"
