"""`RedisStore`: the store contract on Redis, one part per domain over one link."""

from __future__ import annotations

from store.cluster import SlotMap
from store.contract import Subscriptions
from store.redis.accounts import Accounts
from store.redis.conversations import Conversations
from store.redis.link import OnEvents, OnReconnect, OnState
from store.redis.logins import Logins
from store.redis.moderation import Moderation
from store.redis.posts import Posts
from store.redis.presence import Presence

__all__ = ["RedisStore"]


class RedisStore(Accounts, Logins, Conversations, Posts, Moderation, Presence):
    """The whole `Store` contract on Redis. Made by `open_store` (store/redis/open.py),
    which probes the URL first and hands over the link that fits it (`Standalone` or
    `Cluster`); the parts differ only where a cluster must (a private message, counting
    a chat's online members), by `self.link.cluster`."""

    @property
    def cluster(self) -> bool:
        return self.link.cluster

    @property
    def slots(self) -> SlotMap | None:
        return self.link.slots

    def url_redacted(self) -> str:
        """Where Redis is, without credentials: host:port[,host:port...] or the socket."""
        return self.link.where

    async def start(self) -> None:
        """Load the scripts (again: `open_store` did, and checked Redis can serve)."""
        await self.link.start()

    async def close(self) -> None:
        await self.link.close()

    def subscriptions(
        self, on_events: OnEvents, on_reconnect: OnReconnect, on_state: OnState
    ) -> Subscriptions:
        return self.link.subscriptions(on_events, on_reconnect, on_state)

    def unprotected_shards(self) -> dict[tuple[str, str], float]:
        """With --redis-wait-replica: (master, its slots) running without a replica ->
        since when (unix time); see store/replicas.py."""
        return self.link.unprotected_shards()
