from hypothesis import given
from hypothesis import strategies as st

from gateway.core import commands as c
from gateway.core.slash import CHAT_RULES, HELP_LINES, parse


def test_plain_text_is_a_message() -> None:
    assert parse("  hello there ") == c.Say(("hello there",))


def test_empty_is_nothing() -> None:
    assert parse("   ") is None


def test_send_private_and_to_chat() -> None:
    assert parse("/send bob hi there") == c.SendPrivate("bob", "hi there")
    assert parse("/send #random  hi") == c.SendChat("random", "hi")


def test_send_without_text_is_an_error() -> None:
    assert isinstance(parse("/send bob"), c.Rejected)
    assert isinstance(parse("/send"), c.Rejected)


def test_chats_leave_who_history() -> None:
    assert parse("/chats random") == c.Join("random")
    assert parse("/chats #Random") == c.Join("Random")
    assert parse("/leave #random") == c.Leave("random")
    assert parse("/who") == c.Who(None)
    assert parse("/who #x") == c.Who("x")
    assert parse("/history") == c.History(None)
    assert parse("/history 5") == c.History(5)


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
        assert isinstance(parse(line), c.Rejected), line


def test_unknown_command_names_itself() -> None:
    err = parse("/foo bar")
    assert isinstance(err, c.Rejected)
    assert err.text == "unknown command /foo (try /help)"


def test_commands_are_case_insensitive() -> None:
    assert parse("/HELP") == c.Help()
    assert parse("/Get_Chats") == c.GetChats()
    assert parse("/quit") == c.Quit()
    assert parse("/ban Bob") == c.Ban("Bob")


@given(st.text(max_size=200))
def test_parse_never_raises(line: str) -> None:
    result = parse(line)
    assert result is None or isinstance(
        result,
        c.Rejected
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


def test_help_and_usage_errors_name_the_same_syntax() -> None:
    """A newcomer who gets a usage error finds the same words in /help, and back."""
    help_text = "\n".join(HELP_LINES)
    for line in ("/chats", "/leave", "/send", "/ban", "/unban", "/kick", "/password x"):
        got = parse(line)
        assert isinstance(got, c.Rejected), line
        syntax = got.text.removeprefix("usage: ").split(" (")[0].split(" or ")[0]
        assert syntax in help_text, (line, got.text)
    assert "/chats <name>" in help_text and "/chats <#chat>" not in help_text


def test_a_bad_chat_name_says_the_rules() -> None:
    for line in ("/chats bad!name", "/chats my chat", "/leave #a/b"):
        got = parse(line)
        assert isinstance(got, c.Rejected) and CHAT_RULES in got.text, line


def test_moderator_commands_and_where() -> None:
    assert parse("/ban bob 2h") == c.Ban("bob", 7200)
    assert parse("/ban bob 90") == c.Ban("bob", 90)
    assert parse("/ban bob") == c.Ban("bob")
    assert isinstance(parse("/ban bob forever"), c.Rejected)
    assert isinstance(parse("/ban bob 99d"), c.Rejected)  # longer than a moderator may
    assert parse("/unban Bob") == c.Unban("Bob")
    assert parse("/kick bob") == c.Kick("bob")
    assert parse("/where") == c.Where()
