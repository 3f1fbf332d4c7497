"""The IRC door's pure wire format: parsing, tags, the 512-byte rule, splitting, numerics."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.history import conv_tag
from gateway.doors.irc import protocol as irc
from store.contract import Conv, Kind, Message, Position


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
    assert irc.parse_time("not-a-timestamp") is None and irc.parse_time("*") is None
    m = Message(Position(1700000000123, 4), Conv.of_chat("general"), "tom", "general", "hi")
    tag = conv_tag(ev.ChatConv("general", "general"), "amy")
    mid = irc.msgid(m, tag)
    assert "general" not in mid  # opaque: never the store's conversation id
    assert irc.parse_msgid(mid) == cmd.MessageAt(1700000000123, 4, tag)
    assert irc.parse_msgid(mid + "~2") == cmd.MessageAt(1700000000123, 4, tag)  # a piece
    assert irc.parse_msgid("garbage") is None and irc.parse_msgid("1-2") is None
    # the same position in two conversations: two msgids; a private one alike both sides
    assert conv_tag(ev.ChatConv("a", "a"), "amy") != conv_tag(ev.ChatConv("b", "b"), "amy")
    assert conv_tag(ev.PrivateConv("tom", "tom"), "amy") == conv_tag(
        ev.PrivateConv("amy", "amy"), "tom"
    )


def test_timestamps_are_utc_whatever_the_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """mktime() - time.timezone was an hour off under daylight saving time."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        ms = irc.parse_time("2026-07-01T12:00:00.000Z")
        assert ms is not None and irc.iso_time(ms) == "2026-07-01T12:00:00.000Z"
        assert irc.parse_time("2026-01-01T12:00:00Z") == 1767268800000
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


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
    tag = conv_tag(ev.ChatConv("general", "general"), "amy")
    assert ids[0] == f"5-0-{tag}" and ids[1] == f"5-0-{tag}~2" and len(set(ids)) == len(ids)
    # no space at all: cut at a character boundary
    assert "".join(irc.split_text("é" * 400, 101)) == "é" * 400


def test_private_messages_are_addressed_from_the_readers_side() -> None:
    m = Message(Position(5, 0), Conv.private("amy", "tom"), "tom", "amy", "psst")
    (line,) = irc.message_lines(ev.PrivateConv("tom", "tom"), [m], "amy", irc.Wants())
    assert line == ":tom!tom@chat.gateway PRIVMSG amy psst"
    mine = Message(Position(6, 0), Conv.private("amy", "tom"), "amy", "tom", "hi")
    (line,) = irc.message_lines(ev.PrivateConv("tom", "tom"), [mine], "amy", irc.Wants())
    assert line == ":amy!amy@chat.gateway PRIVMSG tom hi"


def test_a_notice_renders_as_notice_and_client_tags_only_with_message_tags() -> None:
    chat = ev.ChatConv("rust", "Rust")
    m = Message(Position(7, 1), Conv.of_chat("rust"), "ann", "Rust", "hi", Kind.NOTICE, "+x=1")
    (plain,) = irc.message_lines(chat, [m], "bob", irc.Wants())
    assert plain == ":ann!ann@chat.gateway NOTICE #Rust hi"
    (tagged,) = irc.message_lines(chat, [m], "bob", irc.Wants(tags=True))
    tag = conv_tag(chat, "bob")
    assert tagged == f"@msgid=7-1-{tag};+x=1 :ann!ann@chat.gateway NOTICE #Rust hi"
    blocks = irc.message_blocks(chat, [m, m._replace(kind=Kind.MESSAGE)], "bob", irc.Wants())
    assert blocks == [plain + "\r\n", plain.replace("NOTICE", "PRIVMSG") + "\r\n"]


def test_client_tags_keep_only_well_formed_client_only_tags() -> None:
    m = irc.parse(r"@+draft/react=l\sl;+ok;fizz=buzz;+bad!name=1;+ctl=a TAGMSG #a")
    assert m is not None
    assert irc.client_tags({**m.tags, "+ctl": "a\x01"}) == r"+draft/react=l\sl;+ok"
    assert irc.client_tags({}) == ""


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


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ann", "bob", "Zoë"]),
            st.one_of(
                st.sampled_from(["", ":x", "a b", ":lead space", "é" * 300, "w " * 400]),
                st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=700),
            ),
            st.sampled_from([Kind.MESSAGE, Kind.MESSAGE, Kind.NOTICE]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_burst_reads_the_same_with_and_without_tags_apart_from_the_tags(
    burst: list[tuple[str, str, Kind]],
) -> None:
    """A reader without capabilities takes a shortcut through the renderer (one head per
    sender, no tag handling); its lines must be the tagged reader's, tags removed."""
    chat = ev.ChatConv("rust", "Rust")
    items = [
        Message(Position(9, i), Conv.of_chat("rust"), sender, "Rust", text, kind)
        for i, (sender, text, kind) in enumerate(burst)
    ]
    plain = irc.message_lines(chat, items, "bob", irc.Wants())
    timed = irc.message_lines(chat, items, "bob", irc.Wants(time=True))
    assert plain == [line.split(" ", 1)[1] for line in timed]
    assert all(len(line.encode()) + 2 <= irc.MAX_LINE for line in plain)
    for line in plain:
        m = irc.parse(line)
        assert m is not None and m.command in ("PRIVMSG", "NOTICE") and m.params[0] == "#Rust"
