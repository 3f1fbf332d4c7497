"""One input line -> one command, or a `CommandError` that says what was wrong.

Pure: what a command *means* is decided by the session; this module only reads the words.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.names import chat_arg, name_error

__all__ = [
    "HELP_LINES",
    "MAX_HISTORY",
    "Ban",
    "Command",
    "CommandError",
    "GetChats",
    "Help",
    "History",
    "Join",
    "Leave",
    "Quit",
    "Say",
    "SendChat",
    "SendPrivate",
    "Who",
    "parse",
]

MAX_HISTORY = 1000


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class SendPrivate:
    nick: str
    text: str


@dataclass(frozen=True, slots=True)
class SendChat:
    chat: str
    text: str


@dataclass(frozen=True, slots=True)
class Join:
    chat: str


@dataclass(frozen=True, slots=True)
class GetChats:
    pass


@dataclass(frozen=True, slots=True)
class Ban:
    nick: str


@dataclass(frozen=True, slots=True)
class Leave:
    chat: str


@dataclass(frozen=True, slots=True)
class Who:
    chat: str | None


@dataclass(frozen=True, slots=True)
class History:
    count: int | None


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


Command = Say | SendPrivate | SendChat | Join | GetChats | Ban | Leave | Who | History | Help | Quit


@dataclass(frozen=True, slots=True)
class CommandError:
    message: str


HELP_LINES = (
    "commands:",
    "  <text>                 send to the current chat",
    "  /send <nick> <text>    private message to nick",
    "  /send #<chat> <text>   message to a chat you are in",
    "  /chats <name>          join or create #name and make it current",
    "  /get_chats             list active chats",
    "  /leave <#chat>         leave a chat (not #general)",
    "  /who [#chat]           who is online in a chat",
    "  /history [n]           last n messages of the current chat",
    "  /ban <nick>            complain about nick (enough complaints ban them)",
    "  /help                  this list",
    "  /quit                  disconnect",
)


def _name(arg: str, what: str, *, chat: bool) -> str | CommandError:
    name = chat_arg(arg) if chat else arg
    err = name_error(name)
    return CommandError(f"bad {what} {arg!r}: {err}") if err else name


def _usage(usage: str) -> CommandError:
    return CommandError(f"usage: {usage}")


def parse(line: str) -> Command | CommandError | None:
    """Parse a sanitised line. None means nothing to do (an empty line)."""
    line = line.strip()
    if not line:
        return None
    if not line.startswith("/"):
        return Say(line)
    word, _, rest = line.partition(" ")
    name = word[1:].lower()
    rest = rest.strip()
    if name == "send":
        target, _, text = rest.partition(" ")
        text = text.strip()
        if not target or not text:
            return _usage("/send <nick> <text> or /send #<chat> <text>")
        if target.startswith("#"):
            chat = _name(target, "chat name", chat=True)
            return chat if isinstance(chat, CommandError) else SendChat(chat, text)
        nick = _name(target, "nickname", chat=False)
        return nick if isinstance(nick, CommandError) else SendPrivate(nick, text)
    if name in ("chats", "join", "leave"):
        if not rest or " " in rest:
            return _usage(f"/{'chats' if name != 'leave' else 'leave'} <#chat>")
        chat = _name(rest, "chat name", chat=True)
        if isinstance(chat, CommandError):
            return chat
        return Leave(chat) if name == "leave" else Join(chat)
    if name == "get_chats":
        return GetChats()
    if name == "ban":
        if not rest or " " in rest:
            return _usage("/ban <nick>")
        nick = _name(rest, "nickname", chat=False)
        return nick if isinstance(nick, CommandError) else Ban(nick)
    if name == "who":
        if not rest:
            return Who(None)
        if " " in rest:
            return _usage("/who [#chat]")
        chat = _name(rest, "chat name", chat=True)
        return chat if isinstance(chat, CommandError) else Who(chat)
    if name == "history":
        if not rest:
            return History(None)
        if not rest.isdigit() or not 1 <= int(rest) <= MAX_HISTORY:
            return CommandError(f"usage: /history [n], n from 1 to {MAX_HISTORY}")
        return History(int(rest))
    if name == "help":
        return Help()
    if name == "quit":
        return Quit()
    return CommandError(f"unknown command {word} (try /help)")
