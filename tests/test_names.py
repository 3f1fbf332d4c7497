from hypothesis import given
from hypothesis import strategies as st

from gateway.core.names import name_error, name_key, password_error, sanitize


def test_valid_names() -> None:
    for name in ("alice", "Bob_2", "a.b-c", "Борис", "x" * 32, "李"):
        assert name_error(name) is None, name


def test_invalid_names() -> None:
    for name in ("", "x" * 33, "a b", "a#b", "a:b", "a|b", "<a>", "a\x1b", "a@b"):
        assert name_error(name) is not None, name


def test_names_compare_case_insensitively() -> None:
    assert name_key("Alice") == name_key("alice") == name_key("ALICE")
    assert name_key("Борис") == name_key("борис")


def test_sanitize_removes_terminal_controls_but_keeps_tab() -> None:
    assert sanitize("a\x1b[2Jb\tc\x07\x00d\x7f\x9be") == "a[2Jb\tcde"


def test_sanitize_removes_bidi_overrides() -> None:
    assert sanitize("abc\u202edef") == "abcdef"


def test_passwords() -> None:
    assert password_error("12345") is not None
    assert password_error("123456") is None
    assert password_error("x" * 129) is not None


@given(st.text())
def test_sanitized_text_has_no_control_characters(text: str) -> None:
    out = sanitize(text)
    assert all(ch == "\t" or not (ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F) for ch in out)
