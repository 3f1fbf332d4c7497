"""What the Redis store is told (`StorePolicy`, one frozen object built by the gateway
from its settings) and the policy it keeps itself (the constants below; the memory store
keeps the same ones, and a contract test checks that they agree)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ADDRESS_COUNT_TTL_MS",
    "ADDRESS_MEMORY",
    "BACKLOG_GROUP",
    "CHAT_NAME_CACHE",
    "CHAT_NAME_TTL",
    "EXACT_ONLINE",
    "HOUR_MS",
    "KNOWN_ADDRESSES",
    "PRESENCE_TTL",
    "SCAN_LIMIT",
    "SCAN_STEP",
    "SMALL_CHAT",
    "StorePolicy",
]

#: Conversations whose backlog is read at once: a login holds at most this many + 1 times
#: the backlog limit of messages in memory.
BACKLOG_GROUP = 8
#: How long an address's per-gateway connection counts live without a change: counts of a
#: gateway that crashed are ignored at once (not in the live list), then expire.
ADDRESS_COUNT_TTL_MS = 86_400_000
#: Seconds a gateway's presence keys live without a heartbeat: a crashed gateway's users
#: stop counting as online after this.
PRESENCE_TTL = 15
#: Seconds a user's recent login addresses are remembered (to hold them back on a ban): a
#: user who has not logged in for this long has no address to hold.
ADDRESS_MEMORY = 30 * 86400
#: Addresses remembered per user as known for login limits (the latest logins'): a user
#: with more places than this loses the oldest one's exemption; ~40 bytes each.
KNOWN_ADDRESSES = 16
HOUR_MS = 3_600_000
#: Members read per step when a cluster counts a chat's online members (its member set
#: and a gateway's online users live in different slots, so Redis cannot intersect them).
SCAN_STEP = 1000
#: Entries walked at most for one such count: bounds one /who or /get_chats on a cluster
#: to about 20 round trips per live gateway; a count cut short is shown as a lower bound.
SCAN_LIMIT = 20_000
#: Members up to which `who_bounded` reads a chat's members and checks each (exact).
SMALL_CHAT = 2000
#: Members up to which `active_chats_bounded` counts a listed chat's online members
#: exactly (a user on two gateways once): 50 listed chats read at most 5,000 members.
EXACT_ONLINE = 100
#: Seconds a chat's display name is cached by `enter`, and how many names are kept.
CHAT_NAME_TTL, CHAT_NAME_CACHE = 10.0, 10_000
#: Seconds to wait for any one reply from Redis, unless told otherwise.
REPLY_TIMEOUT = 10.0


@dataclass(frozen=True, kw_only=True)
class StorePolicy:
    """Everything a `RedisStore` is told besides where Redis is: the chat's limits (in
    seconds, as the settings say them) and the gateway it serves. The gateway builds it
    once from its settings (`gateway.policy.store_policy`)."""

    message_ttl: int
    ban_threshold: int
    ban_duration: int
    rate: float
    burst: int
    gateway_id: str
    complaint_min_age: int = 0
    complaints_per_hour: int = 0
    complaints_per_address: int = 0
    ban_address_memory: int = 0
    reply_timeout: float = REPLY_TIMEOUT
    max_stored: int = 10000
    max_user_chats: int = 100
    max_chats: int = 10000
    chat_creations: int = 10
    max_registrations: int = 0
    account_ttl: int = 180 * 86400
    wait_replica_ms: int = 0

    @property
    def ttl_ms(self) -> int:
        return self.message_ttl * 1000

    @property
    def ban_ms(self) -> int:
        return self.ban_duration * 1000

    @property
    def complaint_min_age_ms(self) -> int:
        return self.complaint_min_age * 1000

    @property
    def account_ttl_ms(self) -> int:
        return self.account_ttl * 1000
