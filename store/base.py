"""What the gateway sees of the store: values in, values out, no Redis types.

`RedisStore` is the only implementation; the embedded store is the same class talking to an
in-process fakeredis server, so both are exercised by the same tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Account",
    "ChatInfo",
    "Complaint",
    "PostResult",
    "StoreUnavailable",
    "StoredMessage",
    "UserState",
    "id_tuple",
]


class StoreUnavailable(Exception):
    """Redis could not be reached; the operation did nothing (or may be retried)."""


def id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    password_hash: str


@dataclass(slots=True)
class UserState:
    """A user's memberships and read position, loaded at login."""

    chats: dict[str, str]  # chat key -> display name
    peers: set[str]  # user keys with a live private conversation
    cursors: dict[str, str]  # conversation id -> last shown stream id


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    conv: str  # "c:<chat>" or "p:<a>|<b>"
    nick: str  # sender's display name
    where: str  # chat display name, or the private recipient's display name
    text: str

    @property
    def ms(self) -> int:
        return int(self.id.partition("-")[0])

    @property
    def key(self) -> tuple[int, int]:
        return id_tuple(self.id)


@dataclass(frozen=True, slots=True)
class PostResult:
    status: str  # ok | banned | rate | nomember | nouser
    value: str = ""  # the stream id, the ban end (ms), or the retry delay (ms)


@dataclass(frozen=True, slots=True)
class Complaint:
    status: str  # nouser | banned | again | ok | ban
    count: int = 0
    until_ms: int = 0
    name: str = ""


@dataclass(frozen=True, slots=True)
class ChatInfo:
    name: str
    members: int
    online: int
    extra: dict[str, str] = field(default_factory=dict)
