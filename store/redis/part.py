"""What every part of `RedisStore` shares: the link to Redis, the policy, and the few
reads more than one part makes (an account, users' names, the oldest live position)."""

from __future__ import annotations

import time
from typing import Any

from store import keys
from store.contract import Account, Position
from store.redis.link import Link
from store.redis.policy import StorePolicy


class Part:
    """The base of each domain part (accounts.py, logins.py, conversations.py, posts.py,
    moderation.py, presence.py); `RedisStore` is all of them over one `Link`."""

    def __init__(self, url: str, link: Link, policy: StorePolicy) -> None:
        #: The URL the store was opened with (credentials included).
        self.url = url
        self.link = link
        #: redis-py's client of the link (RedisCluster on a cluster); see `Link.call`.
        self.redis: Any = link.redis
        self.policy = policy
        #: Chat display names `enter` read lately: chat -> (name, monotonic expiry).
        self._chat_name_cache: dict[str, tuple[str, float]] = {}

    async def get_account(self, user: str) -> Account | None:
        data = await self.link.call(self.redis.hmget(keys.user(user), "name", "pw"))
        if not data[0]:
            return None
        return Account(data[0], data[1] or "")

    async def _names(self, users: list[str]) -> dict[str, str]:
        """Display names of user keys (the key itself where the account is gone)."""
        if not users:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for u in users:
            pipe.hget(keys.user(u), "name")
        names = await self.link.call(pipe.execute())
        return {u: n or u for u, n in zip(users, names, strict=True)}

    def _floor(self) -> Position:
        """The oldest position a live message can have (older ones are past the lifetime)."""
        return Position(max(0, int(time.time() * 1000) - self.policy.ttl_ms), 0)

    def _min_id(self) -> str:
        return keys.stream_id(self._floor())

    def _publish_on(self, pipe: Any, channel: str, payload: str) -> None:
        pipe.execute_command(self.link.publish, channel, payload)
