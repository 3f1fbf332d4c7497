from hypothesis import given
from hypothesis import strategies as st

from gateway import commands as c


def test_plain_text_is_a_message() -> None:
    assert c.parse("  hello there ") == c.Say("hello there")


def test_empty_is_nothing() -> None:
    assert c.parse("   ") is None


def test_send_private_and_to_chat() -> None:
    assert c.parse("/send bob hi there") == c.SendPrivate("bob", "hi there")
    assert c.parse("/send #random  hi") == c.SendChat("random", "hi")


def test_send_without_text_is_an_error() -> None:
    assert isinstance(c.parse("/send bob"), c.CommandError)
    assert isinstance(c.parse("/send"), c.CommandError)


def test_chats_leave_who_history() -> None:
    assert c.parse("/chats random") == c.Join("random")
    assert c.parse("/chats #Random") == c.Join("Random")
    assert c.parse("/leave #random") == c.Leave("random")
    assert c.parse("/who") == c.Who(None)
    assert c.parse("/who #x") == c.Who("x")
    assert c.parse("/history") == c.History(None)
    assert c.parse("/history 5") == c.History(5)


def test_bad_arguments() -> None:
    for line in (
        "/chats",
        "/chats a b",
        "/chats bad!name",
        "/history 0",
        "/history x",
        "/history 100000",
        "/ban",
        "/leave",
        "/who a b",
        "/send b@d hi",
    ):
        assert isinstance(c.parse(line), c.CommandError), line


def test_unknown_command_names_itself() -> None:
    err = c.parse("/foo bar")
    assert isinstance(err, c.CommandError)
    assert err.message == "unknown command /foo (try /help)"


def test_commands_are_case_insensitive() -> None:
    assert c.parse("/HELP") == c.Help()
    assert c.parse("/Get_Chats") == c.GetChats()
    assert c.parse("/quit") == c.Quit()
    assert c.parse("/ban Bob") == c.Ban("Bob")


@given(st.text(max_size=200))
def test_parse_never_raises(line: str) -> None:
    result = c.parse(line)
    assert result is None or isinstance(
        result,
        c.CommandError
        | c.Say
        | c.SendPrivate
        | c.SendChat
        | c.Join
        | c.GetChats
        | c.Ban
        | c.Leave
        | c.Who
        | c.History
        | c.Help
        | c.Quit,
    )
