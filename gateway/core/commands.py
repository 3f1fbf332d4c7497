"""What a door hands the core: typed commands, already parsed and sanitised.

Login is two steps (`Nick`, then `Password`) because the line protocol asks for them one
at a time; a door that has both sends both. A `Nick` with a resume token is a whole login.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.contract import Kind

__all__ = [
    "Ban",
    "ChangePassword",
    "Command",
    "GetChats",
    "Help",
    "History",
    "IssueToken",
    "Join",
    "Kick",
    "Leave",
    "Logout",
    "MarkRead",
    "MessageAt",
    "Nick",
    "Password",
    "Point",
    "Quit",
    "ReadHistory",
    "RecentTargets",
    "Rejected",
    "Say",
    "SendChat",
    "SendChatMany",
    "SendPrivate",
    "SendTags",
    "TimeAt",
    "Unban",
    "Where",
    "Who",
]


@dataclass(frozen=True, slots=True)
class Nick:
    text: str  # as typed, sanitised; the core checks the rules
    #: A resume token (see `IssueToken`): it logs in instead of the password.
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Password:
    text: str


@dataclass(frozen=True, slots=True)
class Say:
    """Messages to the session's current chat, typed in a row: posted together."""

    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SendPrivate:
    nick: str
    text: str
    kind: Kind = Kind.MESSAGE
    #: Client tags for the other clients (`Message.tags`), as the door checked them.
    tags: str = ""
    #: A note to oneself is taken (IRC: a PRIVMSG to one's own nickname is delivered
    #: back, as IRC servers do); the line protocol and the page refuse it.
    to_self: bool = False


@dataclass(frozen=True, slots=True)
class SendChat:
    chat: str
    text: str
    kind: Kind = Kind.MESSAGE
    tags: str = ""

    @property
    def plain(self) -> bool:
        """A message without a kind or tags of its own: postable with the next ones."""
        return self.kind is Kind.MESSAGE and not self.tags


@dataclass(frozen=True, slots=True)
class SendTags:
    """Client tags without a message (IRC's TAGMSG: typing, reactions) to a chat or, with
    `private`, to the user `target`: published to whoever reads it now, never stored."""

    target: str
    tags: str
    private: bool = False


@dataclass(frozen=True, slots=True)
class SendChatMany:
    """Messages to one named chat, sent in a row (an IRC client's consecutive PRIVMSGs):
    posted together, like `Say`."""

    chat: str
    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Join:
    chat: str


@dataclass(frozen=True, slots=True)
class Leave:
    chat: str
    reason: str = ""  # told to the chat's other members (IRC's PART message)


@dataclass(frozen=True, slots=True)
class GetChats:
    pass


@dataclass(frozen=True, slots=True)
class Who:
    chat: str | None  # None: the current chat


@dataclass(frozen=True, slots=True)
class History:
    """The last `count` messages of a conversation: a named chat the user is in, the
    private conversation with `peer` (a nickname), or with neither the current chat."""

    count: int | None  # None: the configured default
    chat: str | None = None
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class Ban:
    """A complaint; a moderator's ban at once. `duration` (seconds) only from moderators."""

    nick: str
    duration: int | None = None


@dataclass(frozen=True, slots=True)
class Unban:
    """A moderator lifts a ban."""

    nick: str


@dataclass(frozen=True, slots=True)
class Kick:
    """A moderator disconnects every session of a user, on every gateway."""

    nick: str


@dataclass(frozen=True, slots=True)
class Where:
    """Which chat is this session's current one."""


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    reason: str = ""  # told to the members of small chats when it was the user's last session


@dataclass(frozen=True, slots=True)
class IssueToken:
    """A resume token for this device; it replaces (revokes) the one this session had."""


@dataclass(frozen=True, slots=True)
class Logout:
    """Revoke this session's resume token, then close."""


@dataclass(frozen=True, slots=True)
class ChangePassword:
    """Change the password (the old one proves it is the user); revokes every token."""

    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input the door could not take (too long, not UTF-8, a malformed command): the core
    says why, and asks again for what it was waiting for."""

    text: str


@dataclass(frozen=True, slots=True)
class MessageAt:
    """A message as a door showed it: its time (ms), its sequence within that ms, and the
    digest of its conversation (`history.conv_tag`), so a message of another conversation
    is never taken for it."""

    ms: int
    seq: int
    tag: str


@dataclass(frozen=True, slots=True)
class TimeAt:
    """A moment (ms since the epoch): a bound between the messages before and after it."""

    ms: int


Point = MessageAt | TimeAt


@dataclass(frozen=True, slots=True)
class ReadHistory:
    """Stored messages of one conversation (`#chat`, or a nickname: the private one)
    strictly between `after` and `before` (None: unbounded), at most `count`: the newest
    of that span when `newest`, else the oldest. With `around`, the messages nearest to
    it on both sides (about half before, the rest from it on). Answered by `HistoryPage`."""

    target: str
    count: int
    after: Point | None = None
    before: Point | None = None
    newest: bool = False
    around: Point | None = None


@dataclass(frozen=True, slots=True)
class RecentTargets:
    """The user's conversations whose newest message is strictly between two moments,
    at most `count`, from `after_ms` towards `before_ms` (earliest first when it is the
    earlier). Answered by `Targets`."""

    after_ms: int
    before_ms: int
    count: int


@dataclass(frozen=True, slots=True)
class MarkRead:
    """Where the user's read marker of a conversation is (`ReadMarker`); with `ms`,
    first move it to that moment (never back), telling the user's other sessions."""

    target: str
    ms: int | None = None


Command = (
    Nick
    | Password
    | Say
    | SendPrivate
    | SendChat
    | SendChatMany
    | SendTags
    | Join
    | Leave
    | GetChats
    | Who
    | History
    | Ban
    | Unban
    | Kick
    | Where
    | Help
    | Quit
    | IssueToken
    | Logout
    | ChangePassword
    | ReadHistory
    | RecentTargets
    | MarkRead
    | Rejected
)
