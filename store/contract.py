"""The store contract: every operation the chat core and fan-out need, with typed results.

`RedisStore` implements it for standalone Redis and the embedded store; nothing above
`store/` sees a Redis type, a key name, a channel or a script's reply layout. Pub/sub
payloads are decoded inside `store/` into the events at the bottom of this module.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Account",
    "Backlog",
    "ChatInfo",
    "ChatList",
    "ChatPosts",
    "Complaint",
    "ComplaintStatus",
    "JoinStatus",
    "MemberJoined",
    "MemberLeft",
    "Membership",
    "Message",
    "OnlineList",
    "PostResult",
    "PostStatus",
    "PrivatePost",
    "RegisterStatus",
    "Store",
    "StoreEvent",
    "StoreNoReply",
    "StoreUnavailable",
    "Subscriptions",
    "UserBanned",
    "UserState",
    "id_key",
]


class StoreUnavailable(Exception):
    """Redis could not be reached; the operation did nothing (or may be retried)."""


class StoreNoReply(StoreUnavailable):
    """The request was sent but no reply came in time: it may or may not have been done."""


def id_key(stream_id: str) -> tuple[int, int]:
    """A message id ("ms-seq") as a tuple that orders like the ids do."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class Message:
    """One stored or published message.

    `where` is the chat's display name for a chat message, and the recipient's display
    name for a private one (the reader's point of view is the core's business)."""

    id: str
    key: tuple[int, int]
    conv: str
    sender: str
    where: str
    text: str

    @property
    def ms(self) -> int:
        return self.key[0]


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    password_hash: str


@dataclass(slots=True)
class UserState:
    """A user's memberships and read positions, loaded at login."""

    chats: dict[str, str]  # chat key -> display name
    peers: set[str]  # user keys with a live private conversation
    cursors: dict[str, str]  # conversation id -> last shown message id


class PostStatus(enum.Enum):
    OK = "ok"
    BANNED = "banned"
    RATE = "rate"
    NOT_MEMBER = "nomember"
    NO_USER = "nouser"
    #: Sent to the store, but no reply came in time: it may have been stored and delivered.
    UNCONFIRMED = "unconfirmed"


@dataclass(frozen=True, slots=True)
class PostResult:
    status: PostStatus
    message_id: str = ""  # OK
    until_ms: int = 0  # BANNED: when the ban ends
    retry_ms: int = 0  # RATE: when the next message would be accepted


class ComplaintStatus(enum.Enum):
    NO_USER = "nouser"
    ALREADY_BANNED = "banned"
    AGAIN = "again"
    RECORDED = "ok"
    BANNED = "ban"  # this complaint reached the threshold


@dataclass(frozen=True, slots=True)
class Complaint:
    status: ComplaintStatus
    count: int = 0
    until_ms: int = 0
    name: str = ""


class RegisterStatus(enum.Enum):
    CREATED = "created"
    TAKEN = "taken"  # registered meanwhile by someone else
    LIMITED = "limited"  # the address registered too many accounts this hour


class JoinStatus(enum.Enum):
    OK = "ok"
    USER_LIMIT = "user_limit"  # the user is in as many chats as allowed
    CHAT_LIMIT = "chat_limit"  # as many chats exist as allowed: no new one
    CREATE_RATE = "create_rate"  # the user created as many chats as allowed this hour


@dataclass(frozen=True, slots=True)
class Membership:
    """The outcome of a join or a leave: whether it changed anything, and the chat's name."""

    changed: bool
    name: str
    status: JoinStatus = JoinStatus.OK


@dataclass(frozen=True, slots=True)
class ChatInfo:
    name: str
    members: int
    online: int


@dataclass(frozen=True, slots=True)
class ChatList:
    """The largest chats (most members first) and how many chats exist in all."""

    chats: list[ChatInfo]
    total: int


@dataclass(frozen=True, slots=True)
class OnlineList:
    """Some of a chat's online members (at most the limit asked for) and how many in all."""

    names: list[str]
    total: int


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a returning user missed (the newest, oldest first), and per conversation that
    left older unread messages out, at least how many (counting stops at what was read)."""

    messages: list[Message]
    cut: dict[str, int]


# -- pub/sub events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatPosts:
    """Messages accepted into one chat together (one publish), ids increasing."""

    chat: str
    messages: list[Message]


@dataclass(frozen=True, slots=True)
class PrivatePost:
    """A private message, as published to one of its two users."""

    user: str
    message: Message


@dataclass(frozen=True, slots=True)
class MemberJoined:
    user: str
    chat: str
    name: str
    origin: str  # the session that joined: it already said so itself


@dataclass(frozen=True, slots=True)
class MemberLeft:
    user: str
    chat: str
    name: str
    origin: str


@dataclass(frozen=True, slots=True)
class UserBanned:
    user: str
    until_ms: int


StoreEvent = ChatPosts | PrivatePost | MemberJoined | MemberLeft | UserBanned


class Subscriptions(Protocol):
    """The gateway's live feed: events for the chats and users it subscribed to.

    `add` returns once the store has acknowledged, so anything published afterwards is
    delivered; while the link is down it records the wish and returns at once."""

    @property
    def count(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None: ...

    def remove(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None: ...


class Store(Protocol):
    """Everything the core, fan-out, presence and cursors ask of the shared state."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def subscriptions(
        self,
        on_events: Callable[[list[StoreEvent]], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None],
    ) -> Subscriptions: ...

    # accounts and logins
    async def get_account(self, user: str) -> Account | None: ...

    async def register(
        self, user: str, name: str, password_hash: str, address: str = ""
    ) -> RegisterStatus: ...

    async def login_failures(self, user: str, address: str) -> tuple[int, int]: ...

    async def count_login_failure(self, user: str, address: str, window: int) -> None: ...

    # a user's state and what they have not seen
    async def load_user(self, user: str) -> UserState: ...

    async def backlog(self, user: str, state: UserState, limit: int) -> Backlog: ...

    async def read_after(self, convs: list[str], after: dict[str, str]) -> list[Message]: ...

    async def history(self, chat: str, name: str, count: int) -> list[Message]: ...

    async def advance_cursors(self, updates: dict[str, dict[str, str]]) -> None: ...

    # posting
    def post_chat(
        self, user: str, name: str, chat: str, chat_name: str, texts: list[str]
    ) -> asyncio.Future[list[PostResult]]: ...

    def post_private(
        self, user: str, name: str, peer: str, text: str
    ) -> asyncio.Future[PostResult]: ...

    # chats
    async def join(self, user: str, chat: str, typed: str, origin: str) -> Membership: ...

    async def leave(self, user: str, chat: str, origin: str) -> Membership: ...

    async def is_member(self, user: str, chat: str) -> bool: ...

    async def active_chats(self, limit: int) -> ChatList: ...

    async def who(self, chat: str, limit: int) -> OnlineList: ...

    async def complain(self, user: str, target: str) -> Complaint: ...

    # presence
    async def heartbeat(self, online: set[str]) -> None: ...

    async def set_online(self, user: str, online: bool) -> None: ...

    async def gateway_gone(self) -> None: ...

    async def forget_unseen(self, limit: int) -> int: ...
