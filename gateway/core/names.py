"""Nickname and chat-name rules, and the text sanitiser.

Pure functions: the same rules decide who is who (case-insensitive keys) and what other
users' terminals are allowed to receive.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "MAX_NAME",
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "chat_arg",
    "name_error",
    "name_key",
    "password_error",
    "sanitize",
]

MAX_NAME = 32
MIN_PASSWORD = 6
MAX_PASSWORD = 128

_NAME_PUNCT = frozenset("_-.")
# Invisible characters that reorder text: a user could make their line look like someone
# else's. Removed together with the C0/C1 controls.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c")
_LINE_BREAKS = frozenset("\u2028\u2029\x85")


def _name_char_ok(ch: str) -> bool:
    return (
        ch in _NAME_PUNCT or unicodedata.category(ch)[0] == "L" or unicodedata.category(ch) == "Nd"
    )


def name_error(name: str) -> str | None:
    """Why `name` is not a valid nickname or chat name, or None when it is."""
    if not name:
        return "a name needs at least 1 character"
    if len(name) > MAX_NAME:
        return f"a name has at most {MAX_NAME} characters"
    if not all(_name_char_ok(ch) for ch in name):
        return "a name may contain only letters, digits, '_', '-' and '.'"
    return None


def name_key(name: str) -> str:
    """The identity of a name: `Alice`, `alice` and full-width `ａｌｉｃｅ` are one user."""
    return unicodedata.normalize("NFKC", name).casefold()


def chat_arg(arg: str) -> str:
    """A chat name as typed in a command: the leading `#` is optional."""
    return arg[1:] if arg.startswith("#") else arg


def sanitize(text: str) -> str:
    """Remove what could drive another user's terminal: C0/C1 controls (TAB kept), DEL,
    Unicode line separators and bidi overrides."""
    if text.isprintable() and text.isascii():
        return text
    return "".join(
        ch
        for ch in text
        if ch == "\t" or not (unicodedata.category(ch) == "Cc" or ch in _BIDI or ch in _LINE_BREAKS)
    )


def password_error(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    return None
