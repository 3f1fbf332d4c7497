"""How a `RedisStore` comes to be: probe the URL's seeds for what they are (a standalone
Redis, a cluster node, the embedded store), then build the matching link once and load
the scripts. Nothing is switched afterwards."""

from __future__ import annotations

import redis.asyncio as aredis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from store.cluster import Addr, Seeds, SlotMap
from store.contract import StoreUnavailable, StoreUnusable
from store.redis.errors import UNAVAILABLE, as_contract
from store.redis.link import CONNECT_TIMEOUT, Cluster, Link, Standalone
from store.redis.policy import StorePolicy
from store.redis.store import RedisStore

__all__ = ["MIN_REDIS", "open_store", "probe", "redacted"]

#: The oldest Redis with every command the scripts use (SINTERCARD, XADD with a
#: ms-only id, SPUBLISH for a cluster).
MIN_REDIS = (7, 0)


async def open_store(url: str, policy: StorePolicy) -> RedisStore:
    """A started store on the Redis of `url` (`redis://`, `rediss://`, `unix://`, or
    cluster seeds `redis://[user:pw@]h1:p1,h2:p2`). Raises StoreUnusable for a Redis
    that cannot serve the gateway (waiting will not help), StoreUnavailable when none
    answers (it may later)."""
    link = await _link(url, policy)
    try:
        await link.start()
    except BaseException:
        await link.close()
        raise
    return RedisStore(url, link, policy)


async def _link(url: str, policy: StorePolicy) -> Link:
    seeds = Seeds.parse(url)
    where = redacted(seeds)
    addr, cluster = await probe(seeds, policy.reply_timeout)
    if not cluster:  # a standalone Redis: the seed that answered
        return Standalone(seeds.url(addr), where, policy)
    slots = SlotMap(seeds, CONNECT_TIMEOUT)
    await slots.refresh()
    return Cluster(seeds, where, policy, slots)


def redacted(seeds: Seeds) -> str:
    """Where Redis is, without credentials: host:port[,host:port...] or the socket."""
    if seeds.scheme == "unix":
        return seeds.path.split("?", 1)[0]
    return ",".join(f"{h}:{p}" for h, p in seeds.nodes)


async def probe(seeds: Seeds, reply_timeout: float) -> tuple[Addr, bool]:
    """The first seed that answers, and whether it is a cluster node; raises
    StoreUnusable for a Redis that cannot serve, StoreUnavailable when no seed answers."""
    last: Exception | None = None
    for addr in seeds.nodes:
        r = aredis.Redis.from_url(
            seeds.url(addr),
            protocol=2,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=reply_timeout,
        )
        try:
            info = await r.info("server")
            enabled = (await r.info("cluster")).get("cluster_enabled", 0)
        except (AuthenticationError, NoPermissionError) as exc:
            raise StoreUnusable(
                f"Redis at {addr[0]}:{addr[1]} refused the gateway ({exc}); docs/REDIS.md "
                "gives the ACL a gateway needs"
            ) from exc
        except UNAVAILABLE as exc:
            last = exc
            continue
        except ResponseError as exc:
            if "unknown command" in str(exc):  # the embedded store has no INFO
                return addr, False
            if isinstance(as_contract(exc), StoreUnavailable):  # BUSY with a script, say
                last = exc
                continue
            raise StoreUnusable(f"Redis at {addr[0]}:{addr[1]} refused INFO: {exc}") from exc
        finally:
            await r.aclose()
        version = str(info.get("redis_version", "0"))
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if parts < MIN_REDIS:
            raise StoreUnusable(
                f"Redis at {addr[0]}:{addr[1]} is version {version}; the gateway needs "
                f"{MIN_REDIS[0]}.{MIN_REDIS[1]} or newer"
            )
        return addr, bool(int(enabled))
    raise StoreUnavailable(f"no Redis answered at {redacted(seeds)}: {last}")
