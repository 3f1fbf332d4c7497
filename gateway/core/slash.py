"""The slash commands users type: `/chats den`, `/send bob hi`, `/history 5`, ...

One language for every place a person types lines: the line protocol (telnet,
`client.py`) and the page's composer (its `command` frame). Pure: a sanitised line in,
a typed command (or `Rejected` with the usage) out; what a command means is the session's.
"""

from __future__ import annotations

from gateway.core.commands import (
    Ban,
    ChangePassword,
    Command,
    GetChats,
    Help,
    History,
    IssueToken,
    Join,
    Kick,
    Leave,
    Logout,
    Quit,
    Rejected,
    Say,
    SendChat,
    SendPrivate,
    Unban,
    Where,
    Who,
)
from gateway.core.names import MAX_NAME, chat_arg, name_error
from gateway.core.timefmt import MAX_BAN, parse_duration

__all__ = ["CHAT_RULES", "HELP_LINES", "MAX_HISTORY", "SYNTAX", "change_password", "parse"]

MAX_HISTORY = 1000

#: Each command's syntax, as /help lists it and as its usage error repeats it: one source.
SYNTAX = {
    "send": "/send <nick> <text>",
    "send_chat": "/send #<chat> <text>",
    "chats": "/chats <name>",
    "leave": "/leave <#chat>",
    "who": "/who [#chat]",
    "history": "/history [n]",
    "ban": "/ban <nick>",
    "mod_ban": "/ban <nick> [time]",
    "unban": "/unban <nick>",
    "kick": "/kick <nick>",
    "password": "/password <old> <new>",
}

#: What a chat name may be, said whenever one is refused.
CHAT_RULES = (
    f"chat names are 1 to {MAX_NAME} letters or digits (one script), '_', '-' or '.', "
    "no spaces; the leading # is optional"
)

HELP_LINES = (
    "commands:",
    "  <text>                 send to the current chat",
    f"  {SYNTAX['send']:<22} private message to nick",
    f"  {SYNTAX['send_chat']:<22} message to a chat you are in",
    f"  {SYNTAX['chats']:<22} join or create #name and make it current",
    "  /where                 which chat is current (where plain text goes)",
    "  /get_chats             list active chats",
    f"  {SYNTAX['leave']:<22} leave a chat (not #general)",
    f"  {SYNTAX['who']:<22} who is online in a chat",
    f"  {SYNTAX['history']:<22} last n messages of the current chat",
    f"  {SYNTAX['ban']:<22} complain about nick (enough complaints ban them)",
    "  /token                 a resume token: log in later with '<nick> <token>'",
    f"  {SYNTAX['password']:<22} change your password (revokes every resume token)",
    "  /logout                revoke this device's resume token and disconnect",
    "  /help                  this list",
    "  /quit                  disconnect",
    "moderators also:",
    f"  {SYNTAX['mod_ban']:<22} ban at once, for time like 30m, 2h, 1d (default: the ban",
    "                         duration); without a moderator it is a complaint",
    f"  {SYNTAX['unban']:<22} lift a ban",
    f"  {SYNTAX['kick']:<22} disconnect every session of nick",
)


def _name(arg: str, what: str, *, chat: bool) -> str | Rejected:
    name = chat_arg(arg) if chat else arg
    err = name_error(name)
    if err and chat:
        return Rejected(f"bad {what} {arg!r}: {err} ({CHAT_RULES})")
    return Rejected(f"bad {what} {arg!r}: {err}") if err else name


def _nick_arg(rest: str, syntax: str) -> str | Rejected:
    if not rest or " " in rest:
        return _usage(syntax)
    return _name(rest, "nickname", chat=False)


def _usage(usage: str) -> Rejected:
    return Rejected(f"usage: {usage}")


def change_password(line: str) -> Command:
    """`/password <old> <new>`, words split on spaces (so neither may contain one)."""
    words = [w for w in line.split(" ") if w]
    if len(words) != 3 or words[0].lower() != "/password":
        return _usage(f"{SYNTAX['password']} (passwords without spaces)")
    return ChangePassword(words[1], words[2])


def parse(line: str) -> Command | None:
    """Parse a sanitised line. None means nothing to do (an empty line)."""
    line = line.strip()
    if not line:
        return None
    if not line.startswith("/"):
        return Say((line,))
    word, _, rest = line.partition(" ")
    name = word[1:].lower()
    rest = rest.strip()
    if name == "send":
        target, _, text = rest.partition(" ")
        text = text.strip()
        if not target or not text:
            return _usage(f"{SYNTAX['send']} or {SYNTAX['send_chat']}")
        if target.startswith("#"):
            chat = _name(target, "chat name", chat=True)
            return chat if isinstance(chat, Rejected) else SendChat(chat, text)
        nick = _name(target, "nickname", chat=False)
        return nick if isinstance(nick, Rejected) else SendPrivate(nick, text)
    if name in ("chats", "join", "leave"):
        syntax = SYNTAX["leave" if name == "leave" else "chats"]
        if not rest:
            return _usage(syntax)
        if " " in rest:
            return Rejected(f"usage: {syntax} ({CHAT_RULES})")
        chat = _name(rest, "chat name", chat=True)
        if isinstance(chat, Rejected):
            return chat
        return Leave(chat) if name == "leave" else Join(chat)
    if name == "get_chats":
        return GetChats()
    if name == "ban":
        target, _, when = rest.partition(" ")
        when = when.strip()
        nick = _nick_arg(target, SYNTAX["ban"])
        if isinstance(nick, Rejected) or not when:
            return nick if isinstance(nick, Rejected) else Ban(nick)
        seconds = parse_duration(when)
        if seconds is None:
            return Rejected(
                f"usage: {SYNTAX['mod_ban']}, time like 90s, 30m, 2h or 7d "
                f"(at most {MAX_BAN // 86400}d)"
            )
        return Ban(nick, seconds)
    if name in ("unban", "kick"):
        nick = _nick_arg(rest, SYNTAX[name])
        if isinstance(nick, Rejected):
            return nick
        return Unban(nick) if name == "unban" else Kick(nick)
    if name == "where":
        return Where() if not rest else _usage("/where")
    if name == "who":
        if not rest:
            return Who(None)
        if " " in rest:
            return _usage(SYNTAX["who"])
        chat = _name(rest, "chat name", chat=True)
        return chat if isinstance(chat, Rejected) else Who(chat)
    if name == "history":
        if not rest:
            return History(None)
        if not rest.isascii() or not rest.isdigit() or not 1 <= int(rest) <= MAX_HISTORY:
            return Rejected(f"usage: {SYNTAX['history']}, n from 1 to {MAX_HISTORY}")
        return History(int(rest))
    if name == "help":
        return Help()
    if name == "quit":
        return Quit()
    if name == "token":
        return IssueToken() if not rest else _usage("/token")
    if name == "logout":
        return Logout() if not rest else _usage("/logout")
    if name == "password":
        return change_password(line)
    return Rejected(f"unknown command {word} (try /help)")
