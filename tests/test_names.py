import string

from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.core.names import (
    name_error,
    name_key,
    name_skeleton,
    password_error,
    sanitize,
    scripts_of,
)


def test_valid_names() -> None:
    for name in ("alice", "Bob_2", "a.b-c", "Борис", "x" * 32, "李"):
        assert name_error(name) is None, name


def test_a_decomposed_name_is_the_composed_one() -> None:
    """`jose` + U+0301 (combining acute) is `josé`: valid, and the same identity."""
    assert name_error("jose\u0301") is None
    assert name_key("jose\u0301") == name_key("jos\u00e9") == name_key("JOS\u00c9")
    assert name_error("q\u0303") is not None  # a mark with no composed form stays a mark


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


# -- look-alike nicknames -------------------------------------------------------------------

LOOK_ALIKES_OF_ALICE = (
    "\u0410lice",  # Cyrillic capital A
    "\u0391lice",  # Greek capital Alpha
    "Al\u0456ce",  # Cyrillic i
    "Alice\u3164",  # Hangul filler: renders as nothing
)
INVISIBLE = "\u3164\u115f\u1160\uffa0\u200b\u200c\u200d\u2060\ufeff\ufe0f\u00ad\u034f"
LATIN_TO_CYRILLIC = str.maketrans("aceopxy", "\u0430\u0441\u0435\u043e\u0440\u0445\u0443")


def test_look_alikes_of_alice_are_refused_or_share_its_skeleton() -> None:
    for name in LOOK_ALIKES_OF_ALICE:
        assert name_error(name) is not None, name
    assert name_error("AIice") is None  # plain Latin: refused only when Alice exists
    assert name_skeleton("AIice") == name_skeleton("Alice") == name_skeleton("alice")
    assert name_skeleton("a1ice") == name_skeleton("alice")
    assert name_skeleton("rnary") == name_skeleton("mary")
    assert name_skeleton("bob") != name_skeleton("alice")


def test_fillers_and_invisible_characters_are_refused() -> None:
    for ch in INVISIBLE:
        assert name_error(ch) is not None, hex(ord(ch))
        assert name_error("bob" + ch) is not None, hex(ord(ch))


def test_one_script_per_name_but_digits_and_punctuation_are_neutral() -> None:
    for name in ("Борис", "Алиса", "Борис_2", "bob.smith-2", "日本語カタカナ", "한국어", "李"):
        assert name_error(name) is None, name
    assert scripts_of("Борис_2") == {"CYRILLIC"}
    for name in ("Бoрис", "bob\u03b1", "abc\u05d0"):  # Latin o in Cyrillic, Greek, Hebrew
        assert "mix scripts" in (name_error(name) or ""), name


@given(st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.", max_size=32))
def test_plain_ascii_names_are_still_valid(name: str) -> None:
    assert (name_error(name) is None) == (len(name) >= 1)


@given(
    st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=31),
    st.sampled_from(INVISIBLE),
    st.integers(0, 31),
)
def test_an_invisible_character_anywhere_is_refused(name: str, ch: str, at: int) -> None:
    assert name_error(name[:at] + ch + name[at:]) is not None


@given(st.text("aceopxy", min_size=1, max_size=32))
def test_cyrillic_spelled_latin_has_the_latin_skeleton(name: str) -> None:
    cyrillic = name.translate(LATIN_TO_CYRILLIC)
    assert name_error(cyrillic) is None  # all-Cyrillic is a valid name...
    assert name_skeleton(cyrillic) == name_skeleton(name)  # ...that cannot impersonate


@given(
    st.text(
        st.characters(categories=("Lu", "Ll", "Lo", "Nd"), include_characters="_-."),
        min_size=1,
        max_size=32,
    )
)
def test_a_skeleton_is_its_own_skeleton(name: str) -> None:
    # Only names that can exist are compared (arbitrary text such as '%' maps in steps).
    assume(name_error(name) is None)
    assert name_skeleton(name) == name_skeleton(name_skeleton(name))


def test_plain_names_pass_the_unicode_checks_they_skip() -> None:
    """name_error accepts ASCII letters, digits and `_-.` without the Unicode checks; each
    of those characters passes them, and a name of them is of one script at most."""
    from gateway.core import names

    plain = string.ascii_letters + string.digits + "_-."
    assert all(names._name_char_ok(ch) and not names._ignorable(ch) for ch in plain)
    assert names.scripts_of(plain) <= {"LATIN"}
