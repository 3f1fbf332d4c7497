"""The store on Redis (standalone, a Redis Cluster, or the embedded fakeredis server):
`Store` implemented.

`open_store(url, policy)` (open.py) probes the URL's seeds, builds the link that fits
(link.py: `Standalone` or `Cluster`), loads the scripts and returns a `RedisStore`
(store.py), which is one part per domain over that link, each its own module:
accounts.py (accounts, tokens, forgetting), logins.py (login limits, token logins,
`enter`), conversations.py (reads, cursors, joining), posts.py (messages, tags,
announcements), moderation.py (complaints, bans, holds, moderators, audit) and
presence.py (live gateways, who is online, bounded counts, recovery); part.py is what
they share. `StorePolicy` (policy.py) is what the gateway tells the store.

Posts go through the `Batcher` (one pipeline per loop turn on a dedicated RESP2
connection, or one per master on a cluster); logins and reads through the loop turn's
pipeline (`Link.run`); everything else uses redis-py's asyncio client (`RedisCluster` on
a cluster). Every Redis error that means "not reachable" becomes `StoreUnavailable`
(errors.py); script replies become the contract's types in the parts and replies.py.

Every script touches the keys of one cluster slot (a user's, a conversation's, or the
shared `{g}`), so an operation on several (a join: the chat, the user, the chat list) is
a few steps, the same on a standalone Redis. Only the hot path differs: on a standalone
Redis a post checks the sender's ban and rate in the same script that stores it; on a
cluster `post_gate.lua` checks them first in the sender's slot (docs/REDIS.md says why
that cannot be abused).
"""

from __future__ import annotations

from store.redis.open import MIN_REDIS, open_store
from store.redis.policy import (
    ADDRESS_COUNT_TTL_MS,
    ADDRESS_MEMORY,
    EXACT_ONLINE,
    HOUR_MS,
    KNOWN_ADDRESSES,
    PRESENCE_TTL,
    SMALL_CHAT,
    StorePolicy,
)
from store.redis.store import RedisStore

__all__ = [
    "ADDRESS_COUNT_TTL_MS",
    "ADDRESS_MEMORY",
    "EXACT_ONLINE",
    "HOUR_MS",
    "KNOWN_ADDRESSES",
    "MIN_REDIS",
    "PRESENCE_TTL",
    "SMALL_CHAT",
    "RedisStore",
    "StorePolicy",
    "open_store",
]
