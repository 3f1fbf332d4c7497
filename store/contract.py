"""The store contract: every operation the chat core and fan-out need, in the chat's words.

`RedisStore` implements it on Redis (standalone, a cluster, or the embedded store) and
`MemoryStore` in plain Python; nothing above `store/` sees a Redis type, a key name, a
channel, a stream id or a script's reply layout. A conversation is a `Conv`, a message's
place in it a `Position`, a read of stored messages a `Range`. Pub/sub payloads are decoded
inside `store/` into the events at the bottom of this module.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

__all__ = [
    "ACCEPTED",
    "GENERAL",
    "MAX_TAGS",
    "SEQ_MAX",
    "Account",
    "AddressHold",
    "AuditEntry",
    "Backlog",
    "BanInfo",
    "Change",
    "ChatInfo",
    "ChatList",
    "ChatPosts",
    "ChatPresence",
    "Complaint",
    "ComplaintStatus",
    "Conv",
    "JoinStatus",
    "Kind",
    "LoginCheck",
    "LoginGate",
    "LoginLimits",
    "MemberJoined",
    "MemberLeft",
    "Membership",
    "Message",
    "NewName",
    "OnlineList",
    "Position",
    "PostResult",
    "PostStatus",
    "PrivatePost",
    "Range",
    "Registration",
    "Store",
    "StoreEvent",
    "StoreNoReply",
    "StoreRefused",
    "StoreUnavailable",
    "StoreUnusable",
    "Subscriptions",
    "TagsSent",
    "TokenLogin",
    "UserBanned",
    "UserKicked",
    "UserSeen",
    "UserState",
    "UserUnbanned",
]

#: The chat every account is in from its registration on, and can never leave.
GENERAL = "general"


class StoreUnavailable(Exception):
    """Redis could not be reached; the operation did nothing (or may be retried)."""


class StoreRefused(StoreUnavailable):
    """Redis answered but refused to write (out of memory under `noeviction`, a read-only
    replica, a failed snapshot): nothing was done, and retrying at once will not help."""


class StoreUnusable(Exception):
    """Redis answered but cannot serve as the store (too old, a command missing or denied
    by its ACL): waiting will not help; the message says what to change."""


class StoreNoReply(StoreUnavailable):
    """The request was sent but no reply came in time: it may or may not have been done."""


class Position(NamedTuple):
    """Where a message is in its conversation: the store's clock in ms when it was stored,
    and a sequence number within that ms. Positions order like the messages of one
    conversation (across conversations, like the times they were stored). `str()` gives the
    message id a door shows ("<ms>-<seq>"); `parse` reads one back."""

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Position | None:
        """A message id as `str()` writes it; None for anything else."""
        ms, dash, seq = text.partition("-")
        if not dash or not (ms + seq).isascii() or not ms.isdigit() or not seq.isdigit():
            return None
        return cls(int(ms), int(seq))

    def previous(self) -> Position | None:
        """The last position before this one (an inclusive bound made exclusive)."""
        if self.seq > 0:
            return Position(self.ms, self.seq - 1)
        return Position(self.ms - 1, SEQ_MAX) if self.ms > 0 else None


#: The largest sequence number within one ms.
SEQ_MAX = 2**64 - 1


class Conv(NamedTuple):
    """A conversation: a chat (`chat` is its key) or the private conversation of two users
    (`chat` is empty; `low` <= `high` are their keys, so both users name it alike).
    `str()` gives its id as doors show it ("c:<chat>", "p:<low>|<high>"); `parse` reads one.
    User and chat keys never contain `:` or `|` (see gateway.core.names)."""

    chat: str
    low: str = ""
    high: str = ""

    @classmethod
    def of_chat(cls, chat: str) -> Conv:
        return cls(chat)

    @classmethod
    def private(cls, a: str, b: str) -> Conv:
        """The private conversation of users `a` and `b` (in either order)."""
        return cls("", a, b) if a <= b else cls("", b, a)

    @property
    def is_chat(self) -> bool:
        return bool(self.chat)

    def peer_of(self, user: str) -> str:
        """The other user of a private conversation, seen from `user`."""
        return self.high if self.low == user else self.low

    def __str__(self) -> str:
        return f"c:{self.chat}" if self.chat else f"p:{self.low}|{self.high}"

    @classmethod
    def parse(cls, text: str) -> Conv | None:
        """A conversation id as `str()` writes it; None for anything else."""
        kind, rest = text[:2], text[2:]
        if kind == "c:" and rest and "|" not in rest:
            return cls(rest)
        if kind == "p:":
            a, bar, b = rest.partition("|")
            if bar and a and b and "|" not in b:
                return cls.private(a, b)
        return None


@dataclass(frozen=True, slots=True)
class Range:
    """Which stored messages of a conversation to read: those after `after` and before
    `before` (both exclusive; None: unbounded), at most `count` of them, the newest of
    that span when `newest`, else the oldest. Messages come back oldest first."""

    count: int
    after: Position | None = None
    before: Position | None = None
    newest: bool = False


class Kind(enum.Enum):
    """What a message is. A notice is said, not talked (IRC's NOTICE: bots, automatic
    replies; clients never answer one automatically): stored and delivered like any
    message, and shown as a notice where a door has them (IRC), as a message elsewhere."""

    MESSAGE = "M"
    NOTICE = "N"


#: Bytes of a message's client tags at most (IRCv3 message-tags: 4094 for client-only
#: tags), checked by the core before anything is stored or published.
MAX_TAGS = 4094


class Message(NamedTuple):
    """One stored or published message.

    `where` is the chat's display name for a chat message, and the recipient's display
    name for a private one (the reader's point of view is the core's business). `tags`:
    what the sender's client attached to the message for other clients (IRCv3 client-only
    tags as sent, `+name=value;...`: a reply's reference, a reaction), opaque to the
    store and the core, at most MAX_TAGS bytes, without control characters. A named
    tuple, not a dataclass: one is built per message per gateway on the fan-out path, and
    a frozen dataclass costs several times as much to build."""

    pos: Position
    conv: Conv
    sender: str
    where: str
    text: str
    kind: Kind = Kind.MESSAGE
    tags: str = ""

    @property
    def ms(self) -> int:
        return self.pos[0]

    @property
    def id(self) -> str:
        """The message id doors show (see `Position`)."""
        return str(self.pos)


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    password_hash: str


@dataclass(slots=True)
class UserState:
    """A user's memberships and read positions, loaded at login."""

    chats: dict[str, str]  # chat key -> display name
    peers: set[str]  # user keys with a live private conversation
    cursors: dict[Conv, Position]  # the last message shown to any of the user's sessions
    banned_until_ms: int | None = None  # the user is banned until then (ms)


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
    until_ms: int = 0  # BANNED: when the ban ends
    retry_ms: int = 0  # RATE: when the next message would be accepted


#: The result of every accepted post (the message itself arrives through pub/sub).
ACCEPTED = PostResult(PostStatus.OK)


class ComplaintStatus(enum.Enum):
    NO_USER = "nouser"
    ALREADY_BANNED = "banned"
    AGAIN = "again"
    RECORDED = "ok"
    BANNED = "ban"  # this complaint reached the threshold
    TOO_NEW = "young"  # the complainer's account is younger than the minimum age
    RATE = "rate"  # the complainer made too many complaints this hour
    ADDRESS = "address"  # this address already complained about the target


@dataclass(frozen=True, slots=True)
class Complaint:
    status: ComplaintStatus
    count: int = 0
    until_ms: int = 0
    name: str = ""
    wait_ms: int = 0  # TOO_NEW, RATE: when a complaint would count


class Registration(enum.Enum):
    CREATED = "created"
    TAKEN = "taken"  # the nickname was registered meanwhile
    LOOK_ALIKE = "look_alike"  # another user holds a nickname with the same skeleton
    LIMITED = "limited"  # the address registered too many accounts this hour


class LoginGate(enum.Enum):
    """Whether a login attempt may be checked, or which limit refuses it."""

    OK = "ok"
    PAIR = "pair"  # this nickname failed too often from this address
    NICK = "nick"  # this nickname failed too often from addresses it never logged in from
    ADDRESS = "address"  # too many other nicknames failed from this address


@dataclass(frozen=True, slots=True)
class LoginCheck:
    gate: LoginGate
    wait_ms: int = 0  # refused: when that limit lets one more attempt in


@dataclass(frozen=True, slots=True)
class TokenLogin:
    """A login with a resume token: for a valid one the account's display name and the
    user's state (the login entered); for a wrong one whether a limit now refuses."""

    check: LoginCheck
    name: str | None = None
    state: UserState | None = None


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """Failed logins allowed within `window` seconds (each 0: no limit)."""

    per_pair: int  # per (nickname, address)
    per_nick: int  # per nickname, from addresses it never logged in from
    nicks_per_address: int  # distinct nicknames failing from one address
    window: int


@dataclass(frozen=True, slots=True)
class NewName:
    """Whether a new nickname may be registered from an address, asked before the hash."""

    look_alike: bool  # another user holds a nickname that looks the same
    held_until_ms: int  # > 0: the address is held back from registering (a ban) until then


class JoinStatus(enum.Enum):
    OK = "ok"
    USER_LIMIT = "user_limit"  # the user is in as many chats as allowed
    CHAT_LIMIT = "chat_limit"  # as many chats exist as allowed: no new one
    CREATE_RATE = "create_rate"  # the user created as many chats as allowed this hour
    LOOK_ALIKE = "look_alike"  # a live chat's name looks the same (`Membership.name`)


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
    #: The online count stopped at the bound it was asked for: at least `online`.
    capped: bool = False


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
    #: The count stopped at the bound it was asked for: at least `total` are online.
    capped: bool = False


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a returning user missed (the newest, oldest first), and per conversation that
    left older unread messages out, at least how many (counting stops at what was read)."""

    messages: list[Message]
    cut: dict[Conv, int]


@dataclass(frozen=True, slots=True)
class UserSeen:
    """One account for operators: when it was last seen, whether banned or a moderator."""

    key: str
    name: str
    seen_ms: int
    banned_until_ms: int  # 0: not banned
    moderator: bool


@dataclass(frozen=True, slots=True)
class BanInfo:
    key: str
    name: str
    until_ms: int


@dataclass(frozen=True, slots=True)
class AddressHold:
    """An address that may not register new accounts until `until_ms`, and the bans after
    complaints that hold it (each with its own end; empty where no reason was recorded)."""

    address: str
    until_ms: int
    bans: tuple[BanInfo, ...]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit trail: when (the stream id's ms) and its key=value fields."""

    id: str
    ms: int
    fields: dict[str, str]


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
    by_moderator: bool = False  # a moderator's or operator's ban, not complaints


@dataclass(frozen=True, slots=True)
class UserKicked:
    """A moderator or operator disconnects every session of the user, on every gateway."""

    user: str


@dataclass(frozen=True, slots=True)
class UserUnbanned:
    """A moderator or operator lifted the user's ban: their sessions may send again."""

    user: str


class Change(enum.Enum):
    """How a chat's online members changed, as its other members are told (IRC shows
    JOIN, PART and QUIT). Only chats of at most the gateway's presence size are told."""

    CAME = "J"  # joined the chat, or came online (the user's first session anywhere)
    PARTED = "P"  # left the chat (`reason`: what they said)
    QUIT = "Q"  # went offline: the user's last session anywhere closed


@dataclass(frozen=True, slots=True)
class ChatPresence:
    """A member of `chat` came, parted or quit (published on the chat's channel).
    `stamp` is the same for every chat one change was told in, so a reader in several
    of them is told once (a QUIT)."""

    chat: str
    user: str
    name: str
    change: Change
    reason: str = ""
    stamp: int = 0


@dataclass(frozen=True, slots=True)
class TagsSent:
    """Client tags without a message (IRC's TAGMSG: typing notices, reactions): published
    to the conversation's readers, never stored. On a chat's channel `user` is empty; a
    private one is published to both users' channels, `user` the channel's. `id` names it
    for the readers (not a stored position); `where` as in `Message`."""

    user: str
    conv: Conv
    sender: str
    where: str
    tags: str
    ms: int
    id: str


StoreEvent = (
    ChatPosts
    | PrivatePost
    | MemberJoined
    | MemberLeft
    | UserBanned
    | UserKicked
    | UserUnbanned
    | ChatPresence
    | TagsSent
)


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

    async def new_name(self, user: str, skeleton: str, address: str) -> NewName: ...

    async def register(
        self, user: str, name: str, password_hash: str, skeleton: str, address: str = ""
    ) -> Registration: ...

    async def seen(self, user: str, address: str) -> None:
        """Record that the user logged in from the address: it becomes known for the user
        (see `login_gate`), its failed attempts there are forgiven, and it is held back if
        the user gets banned."""

    async def login_gate(
        self, user: str, address: str, limits: LoginLimits, *, take: bool
    ) -> LoginCheck:
        """Whether a login attempt at `user` from `address` may be checked. With `take` the
        attempt is counted as failed at once (atomically with the check), so parallel
        attempts cannot all pass; `seen` forgives it if the login succeeds."""

    async def give_back_attempt(self, user: str, address: str) -> None:
        """An attempt `login_gate(take=True)` counted but that was never checked (its
        connection closed, or the hasher was full, before the password was hashed): it no
        longer counts toward the (nickname, address) limit. Without this, clients that
        give up while their password waits in a storm lock their owner out."""

    async def set_password(self, user: str, password_hash: str) -> None:
        """Replace the password hash and revoke every resume token of the user, at once."""

    # resume tokens: the store sees only their hashes
    async def issue_token(
        self, user: str, token_hash: str, ttl: int, replaces: str | None, keep: int
    ) -> None:
        """Keep `token_hash` for `ttl` seconds, revoking `replaces` (that device's previous
        token) and expired tokens; at most `keep` per user (the oldest go)."""

    async def revoke_token(self, user: str, token_hash: str) -> None: ...

    # a user's state and what they have not seen
    async def backlog(self, user: str, state: UserState, limit: int) -> Backlog: ...

    async def read_after(self, after: Mapping[Conv, Position | None]) -> list[Message]:
        """Every live message of each conversation after its position (all live ones for
        None), merged in position order (a gap after a lost link)."""

    async def history(self, chat: str, name: str, count: int) -> list[Message]:
        """The newest `count` live messages of a chat, oldest first, `where` set to `name`."""

    async def names(self, users: Sequence[str]) -> list[str | None]:
        """Accounts' display names, in order (None: no such account), in one round trip
        (a login names the private conversations it lists)."""

    async def advance_cursors(self, updates: Mapping[str, Mapping[Conv, Position]]) -> None:
        """Record what users were shown: user -> {conversation: last position shown}. A
        position never moves back (gateways may flush out of order)."""

    # posting
    def post_chat(
        self,
        user: str,
        name: str,
        chat: str,
        chat_name: str,
        texts: list[str],
        kind: Kind = Kind.MESSAGE,
        tags: str = "",
    ) -> asyncio.Future[list[PostResult]]:
        """Store and publish messages to a chat (each of `kind`, with client `tags`)."""

    def post_private(
        self,
        user: str,
        name: str,
        peer: str,
        text: str,
        kind: Kind = Kind.MESSAGE,
        tags: str = "",
    ) -> asyncio.Future[PostResult]: ...

    async def send_tags(self, user: str, name: str, conv: Conv, where: str, tags: str) -> str:
        """Publish client tags without a message (`TagsSent`) to the readers of `conv`
        (a chat's channel; a private conversation: both users'); nothing is stored. The
        caller checked membership, ban and rate. Returns the id the readers got."""

    async def announce(
        self,
        chats: Sequence[str],
        user: str,
        name: str,
        change: Change,
        reason: str,
        stamp: int,
        max_members: int,
    ) -> None:
        """Tell the readers of each chat with at most `max_members` members that the user
        came, parted or quit (`ChatPresence`); larger chats are not told (a reconnect
        storm in a chat of 50,000 would be 50,000 deliveries per member)."""

    async def online_on(self, user: str, gateways: Sequence[str]) -> bool:
        """Whether any of `gateways` marks the user online (its heartbeat's set), in one
        round trip (no call for none)."""

    # chats
    async def join(
        self, user: str, chat: str, typed: str, origin: str, look: str = ""
    ) -> Membership:
        """Add the user to the chat, creating it with the name as typed if it has no
        members. `look`: the typed name's confusable skeleton; a chat is not created
        while another chat with members was created with the same look (`LOOK_ALIKE`,
        and `name` is that chat's). The look is recorded at creation only, so chats made
        before looks were recorded are not protected. Two creations racing past the
        check can both pass."""

    async def leave(self, user: str, chat: str, origin: str) -> Membership: ...

    async def is_member(self, user: str, chat: str) -> bool: ...

    async def who_bounded(self, chat: str, limit: int, cap: int) -> OnlineList:
        """At most `limit` of the chat's online members (by name) and how many are
        online, with Redis work bounded whatever the chat's size: the count stops at
        `cap` (`capped`); the names are some of the online members."""

    async def active_chats_bounded(self, limit: int, cap: int) -> ChatList:
        """The `limit` largest chats and how many exist, each chat's online count
        stopping at `cap`."""

    async def token_login(
        self, user: str, address: str, limits: LoginLimits, token_hash: str
    ) -> TokenLogin:
        """A login with a resume token, in one round trip where possible: a valid one (known
        and not expired) is `enter`ed whatever the failure limits say (a token cannot be
        guessed); a wrong one counts as a failed attempt, as `login_gate(take=True)` does,
        and its check says whether a limit now refuses the nickname from this address."""

    async def enter(self, user: str, address: str) -> UserState:
        """A login: `seen`, the user marked seen now, and their state (chats, peers,
        cursors, ban), in one round trip where possible."""

    async def set_online_many(self, users: Sequence[str]) -> None:
        """`set_online(user, True)` for many users at once."""

    async def set_offline_many(self, users: Sequence[str]) -> None:
        """`set_online(user, False)` for many users at once."""

    async def complain(self, user: str, target: str, address: str) -> Complaint: ...

    # moderation and operators (the admin tool uses these too)
    async def is_moderator(self, user: str) -> bool: ...

    async def set_moderator(self, user: str, on: bool) -> bool:
        """Make the user a moderator or not; False if there is no such account."""

    async def ban(self, user: str, duration: int) -> BanInfo | None:
        """Ban at once for `duration` seconds (no complaints); None if no such account."""

    async def unban(self, user: str) -> bool:
        """Lift a ban, its pending complaints and the address holds it made; False if the
        user was not banned."""

    async def kick(self, user: str) -> None:
        """Tell every gateway to close every session of the user."""

    async def bans(self) -> list[BanInfo]: ...

    async def holds(self) -> list[AddressHold]:
        """Every address held back from registering now (by a ban after complaints)."""

    async def lift_hold(self, address: str) -> bool:
        """Let the address register again now, whatever holds it; False if it was not
        held."""

    async def complaints_about(self, user: str) -> list[tuple[str, int]]:
        """Pending complaints about the user: (complainer's name, ms), oldest first."""

    async def users(self, limit: int) -> list[UserSeen]:
        """The `limit` most recently seen accounts, newest first."""

    async def delete_user(self, user: str, skeleton: str) -> bool:
        """Delete the account, its keys, private conversations and memberships (what
        forgetting an expired account does, at once); False if there was none."""

    async def audit(self, fields: dict[str, str], keep: int) -> None:
        """Append one entry to the audit trail, keeping about the newest `keep`."""

    async def audit_log(self, since_ms: int, limit: int) -> list[AuditEntry]:
        """Audit entries from `since_ms` on, oldest first (at most the newest `limit`)."""

    # surviving a store that lost its data
    async def claim_epoch(self, candidate: str) -> str: ...

    async def reassert(
        self, chats: dict[str, dict[str, str]], peers: dict[str, set[str]]
    ) -> None: ...

    # presence
    async def heartbeat(self, online: set[str], seen: Collection[str] | None = None) -> None:
        """This gateway is live with `online` on it; the accounts of `seen` (default: all
        of `online`) were seen now, so they do not expire."""

    async def set_online(self, user: str, online: bool) -> None: ...

    async def gateway_gone(self) -> None: ...

    async def live_gateways(self) -> list[str]: ...

    async def count_address(self, address: str, change: int, live: Sequence[str]) -> int:
        """Connections from `address` over the live gateways, after counting a change."""

    async def forget_unseen(self, limit: int) -> int: ...

    # history ranges and read positions (the IRC door's CHATHISTORY and MARKREAD)
    async def read_range(self, conv: Conv, want: Range) -> list[Message]:
        """Live messages of `conv` in the range `want` asks for, oldest first. A private
        conversation's `where` is the recipient's name; a chat's is empty (the reader
        knows the chat's name)."""

    async def latest_many(self, convs: Sequence[Conv]) -> list[Message | None]:
        """The newest live message of each conversation (None: none), in one round trip."""

    async def read_position(self, user: str, conv: Conv) -> Position | None:
        """The user's stored read position in one conversation (None: never read)."""
