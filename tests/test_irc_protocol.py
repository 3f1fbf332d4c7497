"""The IRC door's pure wire format: parsing, tags, the 512-byte rule, splitting, numerics."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.core import events as ev
from gateway.doors.irc import protocol as irc
from store.contract import Conv, Message, Position


def test_parse_tags_source_and_trailing() -> None:
    m = irc.parse(r"@label=a\sb;+draft/x :nick!u@h PRIVMSG #chan :hello :world")
    assert m is not None
    assert m.command == "PRIVMSG" and m.params == ("#chan", "hello :world")
    assert m.tags == {"label": "a b", "+draft/x": ""} and m.source == "nick!u@h"
    assert irc.parse("nick  alice") == irc.IrcMessage("NICK", ("alice",))
    assert irc.parse("   ") is None


def test_tag_escaping_round_trips() -> None:
    for value in ("a;b c\\d", "\r\n", "plain"):
        assert irc.unescape_tag(irc.escape_tag(value)) == value


def test_format_line_puts_a_trailing_colon_only_when_needed() -> None:
    assert irc.format_line("PRIVMSG", "#a", "hi", source="x") == ":x PRIVMSG #a hi"
    assert irc.format_line("PRIVMSG", "#a", "hi there", source="x") == ":x PRIVMSG #a :hi there"
    assert irc.format_line("PING", ":x", source="") == "PING ::x"


def test_time_and_msgid() -> None:
    ms = 1_700_000_000_123
    assert irc.iso_time(ms) == "2023-11-14T22:13:20.123Z"
    assert irc.parse_time(irc.iso_time(ms)) == ms
    general, pos = Conv.of_chat("general"), Position(1700000000123, 4)
    mid = irc.msgid(general, pos)
    assert mid == "1700000000123-4~c:general"  # the wire form clients already hold
    assert irc.parse_msgid(mid) == (general, pos)
    assert irc.parse_msgid(mid + "~2") == (general, pos)  # a split piece
    assert irc.parse_msgid("garbage") is None
    assert irc.parse_msgid("1-0~p:amy|tom") == (Conv.private("tom", "amy"), Position(1, 0))
    # the same id in two conversations: two msgids
    first = Position(1, 0)
    assert irc.msgid(Conv.of_chat("a"), first) != irc.msgid(Conv.of_chat("b"), first)


def test_long_messages_are_split_into_512_byte_lines_losing_nothing() -> None:
    text = " ".join(f"wörd{i}" for i in range(600))  # about 4 KB, multi-byte characters
    m = Message(Position(5, 0), Conv.of_chat("general"), "tom", "general", text)
    lines = irc.message_lines(ev.ChatConv("general", "general"), [m], "amy", irc.Wants())
    assert len(lines) > 7
    assert all(len(line.encode()) + 2 <= irc.MAX_LINE for line in lines)
    assert " ".join(line.split(" :", 1)[1] for line in lines) == text
    tagged = irc.message_lines(
        ev.ChatConv("general", "general"), [m], "amy", irc.Wants(time=True, tags=True)
    )
    ids = [line.split("msgid=")[1].split(" ")[0] for line in tagged]
    assert ids[0] == "5-0~c:general" and ids[1] == "5-0~c:general~2" and len(set(ids)) == len(ids)
    # no space at all: cut at a character boundary
    assert "".join(irc.split_text("é" * 400, 101)) == "é" * 400


def test_private_messages_are_addressed_from_the_readers_side() -> None:
    m = Message(Position(5, 0), Conv.private("amy", "tom"), "tom", "amy", "psst")
    (line,) = irc.message_lines(ev.PrivateConv("tom", "tom"), [m], "amy", irc.Wants())
    assert line == ":tom!tom@chat.gateway PRIVMSG amy psst"
    mine = Message(Position(6, 0), Conv.private("amy", "tom"), "amy", "tom", "hi")
    (line,) = irc.message_lines(ev.PrivateConv("tom", "tom"), [mine], "amy", irc.Wants())
    assert line == ":amy!amy@chat.gateway PRIVMSG tom hi"


def test_errors_become_numerics() -> None:
    def reply(code: ev.ErrorCode, context: str, target: str) -> str:
        return irc.error_numeric(ev.Error(code, "why"), "amy", context, target)

    assert reply(ev.ErrorCode.BANNED, "PRIVMSG", "#general").split()[1] == "404"
    assert reply(ev.ErrorCode.NO_SUCH_USER, "PRIVMSG", "zed").split()[1] == "401"
    assert reply(ev.ErrorCode.NOT_MEMBER, "PART", "#x").split()[1] == "442"
    assert reply(ev.ErrorCode.RATE_LIMITED, "PRIVMSG", "#general").startswith(
        ":chat.gateway FAIL PRIVMSG RATE_LIMITED"
    )


@given(st.text(max_size=600))
def test_parse_takes_any_line_without_raising(line: str) -> None:
    m = irc.parse(line)
    assert m is None or (m.command and m.command == m.command.upper())


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
        .map(lambda t: t.replace(" ", "_").lstrip(":"))
        .filter(bool),
        max_size=5,
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=100),
)
def test_format_then_parse_gives_the_parameters_back(middle: list[str], last: str) -> None:
    m = irc.parse(irc.format_line("PRIVMSG", *middle, last, tags={"msgid": "a b;c"}))
    assert m is not None
    assert m.params == (*middle, last) and m.tags == {"msgid": "a b;c"}


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=3000))
def test_split_pieces_fit_and_lose_only_the_spaces_at_cuts(text: str) -> None:
    pieces = irc.split_text(text, 100)
    assert all(len(p.encode()) <= 100 for p in pieces)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")  # only cut spaces go
