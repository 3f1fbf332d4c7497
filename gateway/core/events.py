"""What the core tells a door: small frozen events, rendered by each door its own way.

Messages travel as `Messages` events: consecutive messages of one conversation, seen
from one place. Fan-out hands the same `Messages` object to every reader of a chat, so a
door can render it once and reuse the result for every connection (see the line door).
Human-readable texts (`Error.text`, notices) are the contract's words; an error's `code`
lets a door map it to its own form (an IRC numeric, a web banner).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from store.contract import ChatInfo, Message

__all__ = [
    "AskNick",
    "AskPassword",
    "BacklogCut",
    "BanLifted",
    "BanPlaced",
    "Banned",
    "Bye",
    "ChatConv",
    "ChatList",
    "Complained",
    "Conversation",
    "CurrentChat",
    "Error",
    "ErrorCode",
    "Event",
    "HelpWanted",
    "HistoryPage",
    "Joined",
    "KickSent",
    "Kicked",
    "Left",
    "MemberCame",
    "MemberParted",
    "MemberQuit",
    "Messages",
    "NoHistory",
    "Online",
    "PasswordChanged",
    "PrivateConv",
    "ReadMarker",
    "Ready",
    "ShuttingDown",
    "Tagged",
    "TokenIssued",
    "Unbanned",
    "WhereNow",
]


@dataclass(frozen=True, slots=True)
class ChatConv:
    """A chat, as every reader sees it."""

    key: str
    name: str


@dataclass(frozen=True, slots=True)
class PrivateConv:
    """A private conversation, from one reader's side: the other user."""

    peer: str
    name: str


Conversation = ChatConv | PrivateConv


@dataclass(frozen=True, slots=True)
class Messages:
    """Messages of one conversation, ids increasing (live, backlog or history)."""

    where: Conversation
    items: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Tagged:
    """Client tags without a message (IRC's TAGMSG), from `sender` in a conversation;
    `id` names it for the readers (never a stored message's)."""

    where: Conversation
    sender: str
    tags: str
    ms: int
    id: str


@dataclass(frozen=True, slots=True)
class MemberCame:
    """Another user joined a chat this user is in, or came online (a small chat only:
    `Settings.presence_members`)."""

    chat: str
    nick: str


@dataclass(frozen=True, slots=True)
class MemberParted:
    """Another user left a chat this user is in (a small chat only)."""

    chat: str
    nick: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MemberQuit:
    """Another user who shares a small chat with this user went offline: their last
    session anywhere closed (said once, whatever the chats they share)."""

    nick: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AskNick:
    """The nickname is wanted: first on a new connection, again after a refusal."""

    first: bool


@dataclass(frozen=True, slots=True)
class AskPassword:
    nick: str
    new: bool  # a nickname nobody has registered: this password registers it


@dataclass(frozen=True, slots=True)
class Ready:
    """Login done: everything before was backlog, everything after is live."""

    nick: str
    chat: str
    chats: tuple[str, ...] = ()  # every chat the user is in, #general first
    #: The user's private conversations, the most recent first, at most PRIVATES_LISTED
    #: (a door that lists conversations shows them at once, on every device).
    privates: tuple[PrivateConv, ...] = ()


@dataclass(frozen=True, slots=True)
class Joined:
    chat: str
    already: bool = False  # the user was a member already (this session asked)


@dataclass(frozen=True, slots=True)
class Left:
    chat: str


@dataclass(frozen=True, slots=True)
class CurrentChat:
    """This session's current chat changed without it asking (it left that chat)."""

    chat: str


@dataclass(frozen=True, slots=True)
class ChatList:
    chats: tuple[ChatInfo, ...]  # the largest, at most the core's bound
    total: int = 0  # chats that exist; more than listed: "and N more"


@dataclass(frozen=True, slots=True)
class BacklogCut:
    """Older unread messages of a conversation were left out of the login backlog."""

    where: Conversation
    shown: int  # the backlog limit: the newest this many were shown in all


@dataclass(frozen=True, slots=True)
class Online:
    chat: str
    names: tuple[str, ...]  # at most the core's bound, sorted
    total: int
    capped: bool = False  # the count stopped at the core's bound: at least `total`


@dataclass(frozen=True, slots=True)
class NoHistory:
    chat: str  # the chat's display name, or the other user's for a private conversation
    seconds: int
    #: A private conversation (then `chat` is the other user's name); None: a chat.
    private: PrivateConv | None = None


@dataclass(frozen=True, slots=True)
class Complained:
    target: str
    count: int
    threshold: int
    banned_until_ms: int | None  # this complaint banned the target


@dataclass(frozen=True, slots=True)
class Banned:
    """The user was just banned (after complaints, or by a moderator): they can read but
    not send."""

    until_ms: int
    #: Who banned: a moderator (True), complaints (False), or None when it is said at a
    #: login (the ban is older than the session).
    by_moderator: bool | None = False


@dataclass(frozen=True, slots=True)
class BanPlaced:
    """A moderator's /ban took effect at once."""

    target: str
    until_ms: int


@dataclass(frozen=True, slots=True)
class Unbanned:
    target: str
    was_banned: bool  # False: there was no ban to lift


@dataclass(frozen=True, slots=True)
class KickSent:
    """A moderator's /kick: every session of the target is being closed, everywhere."""

    target: str


@dataclass(frozen=True, slots=True)
class BanLifted:
    """This user's ban was lifted by a moderator or an operator: they may send again."""


@dataclass(frozen=True, slots=True)
class Kicked:
    """This session is closed by a moderator or an operator."""


@dataclass(frozen=True, slots=True)
class WhereNow:
    """/where: this session's current chat, and every chat the user is in."""

    chat: str
    chats: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HelpWanted:
    """The door knows its own commands: it renders the help."""


@dataclass(frozen=True, slots=True)
class TokenIssued:
    """A new resume token: only its hash is stored, so this is the one time it is seen."""

    token: str = field(repr=False)  # never in a log line or a test failure's repr
    seconds: int  # how long it is valid


@dataclass(frozen=True, slots=True)
class PasswordChanged:
    """The password was changed and every resume token of the user revoked."""


@dataclass(frozen=True, slots=True)
class Bye:
    pass


@dataclass(frozen=True, slots=True)
class ShuttingDown:
    pass


@dataclass(frozen=True, slots=True)
class StoreReset:
    """Redis lost its data; memberships were restored, recent history may be gone."""


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Stored messages a `ReadHistory` asked for, oldest first (possibly none)."""

    where: Conversation
    items: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Targets:
    """`RecentTargets`: conversations and the time (ms) of the newest message of each, in
    the order the request's moments give (earliest first from an earlier first moment)."""

    items: tuple[tuple[Conversation, int], ...]


@dataclass(frozen=True, slots=True)
class ReadMarker:
    """Where the user's read marker of a conversation is: everything up to `ms` is read
    (None: nothing yet). `moved`: set by another session of the user, not asked for."""

    where: Conversation
    ms: int | None
    moved: bool = False


class ErrorCode(enum.Enum):
    BAD_INPUT = "bad_input"  # a line or frame the door could not take
    BAD_NAME = "bad_name"
    BAD_PASSWORD = "bad_password"
    WRONG_PASSWORD = "wrong_password"
    BAD_TOKEN = "bad_token"  # a resume token that is wrong, expired or revoked
    LOCKED_OUT = "locked_out"  # too many failures: the connection closes
    NOT_MEMBER = "not_member"
    NO_SUCH_USER = "no_such_user"
    BANNED = "banned"
    RATE_LIMITED = "rate_limited"
    REFUSED = "refused"  # a command refused for what it asks (yourself, #general, ...)
    STORE_DOWN = "store_down"
    INTERNAL = "internal"
    BUSY = "busy"  # admission refused the connection
    TIMEOUT = "timeout"
    OVERFLOW = "overflow"  # the reader fell too far behind


@dataclass(frozen=True, slots=True)
class Error:
    code: ErrorCode
    text: str


Event = (
    Messages
    | Tagged
    | MemberCame
    | MemberParted
    | MemberQuit
    | AskNick
    | AskPassword
    | Ready
    | Joined
    | Left
    | CurrentChat
    | ChatList
    | Online
    | NoHistory
    | BacklogCut
    | Complained
    | Banned
    | BanPlaced
    | Unbanned
    | KickSent
    | Kicked
    | BanLifted
    | WhereNow
    | HelpWanted
    | TokenIssued
    | PasswordChanged
    | Bye
    | ShuttingDown
    | StoreReset
    | HistoryPage
    | Targets
    | ReadMarker
    | Error
)
