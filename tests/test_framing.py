from hypothesis import given
from hypothesis import strategies as st

from gateway.kit.lines import BadEncoding, Line, LineFramer, LineTooLong


def feed_all(framer: LineFramer, *chunks: bytes) -> list:
    out = []
    for c in chunks:
        out += framer.feed(c)
    return out


def test_lf_and_crlf_both_end_lines() -> None:
    assert LineFramer().feed(b"one\ntwo\r\nthree") == [Line("one"), Line("two")]


def test_a_line_split_across_reads_is_joined() -> None:
    f = LineFramer()
    assert feed_all(f, b"hel", b"lo wo", b"rld\r", b"\n") == [Line("hello world")]


def test_empty_lines_are_reported_as_empty() -> None:
    assert LineFramer().feed(b"\r\n\n") == []


def test_too_long_line_is_dropped_once_and_the_next_line_works() -> None:
    f = LineFramer(max_line=10)
    events = feed_all(f, b"x" * 6, b"y" * 6, b"z" * 100, b"\nok\n")
    assert events == [LineTooLong(10), Line("ok")]


def test_too_long_line_is_never_buffered_whole() -> None:
    f = LineFramer(max_line=100)
    for _ in range(1000):
        f.feed(b"a" * 1000)
    assert not f._buf  # dropped as it arrives


def test_line_of_exactly_the_limit_passes_with_crlf() -> None:
    f = LineFramer(max_line=5)
    assert feed_all(f, b"12345\r", b"\n") == [Line("12345")]
    assert f.feed(b"123456\r\n") == [LineTooLong(5)]


def test_invalid_utf8_is_reported_and_the_stream_continues() -> None:
    assert LineFramer().feed(b"bad \xfe\x80\nfine\n") == [BadEncoding(), Line("fine")]
    assert LineFramer().feed(b"\xc3\n") == [BadEncoding()]


def test_telnet_negotiation_is_removed_even_when_split() -> None:
    f = LineFramer()
    # IAC DO ECHO, IAC SB NAWS ... IAC SE, IAC WILL split across reads
    events = feed_all(
        f,
        b"\xff\xfd\x01he",
        b"l\xff\xfa\x1f\x00\x50",
        b"\x00\x18\xff\xf0lo\xff",
        b"\xfb",
        b"\x03\r\n",
    )
    assert events == [Line("hello")]


def test_escaped_iac_is_a_data_byte() -> None:
    # IAC IAC is a literal 0xFF, which alone is not UTF-8
    assert LineFramer().feed(b"a\xff\xffb\n") == [BadEncoding()]


def test_utf8_multibyte_split_across_reads() -> None:
    data = "привет".encode()
    assert feed_all(LineFramer(), data[:3], data[3:], b"\n") == [Line("привет")]


@given(st.lists(st.binary(max_size=300), max_size=30), st.integers(min_value=8, max_value=200))
def test_any_bytes_give_bounded_lines_and_bounded_memory(chunks: list[bytes], limit: int) -> None:
    f = LineFramer(max_line=limit)
    for chunk in chunks:
        for ev in f.feed(chunk):
            if isinstance(ev, Line):
                assert len(ev.text.encode()) <= limit
                assert "\n" not in ev.text
        assert len(f._buf or b"") <= limit + 1


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
            max_size=50,
        ),
        max_size=20,
    ),
    st.data(),
)
def test_lines_survive_any_chunking(lines: list[str], data: st.DataObject) -> None:
    stream = b"".join(line.encode() + b"\r\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    f = LineFramer(max_line=10_000)
    events = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        events += f.feed(stream[prev:cut])
        prev = cut
    assert events == [Line(line) for line in lines if line]  # empty lines are dropped


def _reference_strip(chunks: list[bytes]) -> bytes:
    """The telnet state machine, one byte at a time: what the fast stripper must equal."""
    out = bytearray()
    state = "data"
    for b in b"".join(chunks):
        if state == "data":
            if b == 255:
                state = "iac"
            else:
                out.append(b)
        elif state == "iac":
            if b == 255:
                out.append(b)
                state = "data"
            elif b in (251, 252, 253, 254):
                state = "option"
            elif b == 250:
                state = "sub"
            else:
                state = "data"
        elif state == "option":
            state = "data"
        elif state == "sub":
            if b == 255:
                state = "sub_iac"
        else:
            state = "data" if b == 240 else "sub"
    return bytes(out)


_TELNET_PIECES = st.sampled_from(
    [b"\xff", b"\xff\xff", b"\xff\xf1", b"\xff\xfb\x01", b"\xff\xfa", b"\xff\xf0", b"\xfa", b"a"]
)


@given(st.lists(st.one_of(_TELNET_PIECES, st.binary(max_size=8)), max_size=60), st.data())
def test_fast_telnet_stripping_equals_the_byte_state_machine(
    pieces: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    f = LineFramer()
    got = b"".join(f._strip_telnet(c) for c in chunks)
    assert got == _reference_strip(chunks)
