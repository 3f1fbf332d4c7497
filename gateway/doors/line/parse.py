"""One input line -> one core command, by the session's phase.

In the login phases a line is a nickname or a password; logged in, it is a slash command
or a message (gateway/core/slash.py, the language the page's composer shares).
"""

from __future__ import annotations

from gateway.core.commands import Command, Nick, Password
from gateway.core.names import sanitize
from gateway.core.session import Phase
from gateway.core.slash import change_password, parse
from gateway.core.tokens import looks_like_token

__all__ = ["parse_line"]


def parse_line(text: str, phase: Phase) -> Command | None:
    """What a received line means in the session's phase. None: nothing to do."""
    if phase is Phase.READY:
        head = text.lstrip(" ")
        if head[:9].lower() == "/password" and head[9:10] in ("", " "):
            return change_password(text)  # raw, as the password prompt takes passwords
        return parse(sanitize(text))
    if phase is Phase.NICK:
        nick = sanitize(text).strip()
        name, _, token = nick.partition(" ")
        token = token.strip()
        if looks_like_token(token):  # `alice <token>`: nicknames never contain spaces
            return Nick(name, token)
        return Nick(nick) if nick else None
    if phase is Phase.PASSWORD:
        return Password(text) if text else None
    return None
