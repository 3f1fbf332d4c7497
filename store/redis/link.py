"""The store's connections to Redis, one class per kind of deployment, built once by
`store.redis.open.open_store` after it probed the URL: `Standalone` (one Redis, or the
embedded store) or `Cluster` (a Redis Cluster).

A link holds the three ways the store talks to Redis: redis-py's asyncio client for
ordinary calls (`call`, `eval`, `pipe`), the hot-path pipeline every loop turn's commands
share (`run`), and the post `Batcher`; and the pub/sub link it hands to fan-out
(`subscriptions`). Lost scripts (NOSCRIPT, after a restart or SCRIPT FLUSH) are reloaded
here and nowhere else: one SCRIPT LOAD round at a time, then the call is tried once more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import hiredis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.connection import SSLConnection, parse_url
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from store.batcher import Batcher, Coalescer
from store.cluster import ClusterPipeline, Seeds, SlotMap
from store.contract import StoreEvent, StoreNoReply, StoreUnavailable, StoreUnusable, Subscriptions
from store.pubsub import PubSubLink, ShardedLinks
from store.redis.errors import UNAVAILABLE, as_contract, is_error
from store.redis.policy import StorePolicy
from store.resp import RespPipeline, reply_error, scripts_lost
from store.scripts import SCRIPTS

__all__ = ["CONNECT_TIMEOUT", "POOL_SIZE", "Cluster", "Link", "Standalone"]

T = TypeVar("T")

#: Connections in redis-py's pool. Bounded: under a login burst callers wait for one
#: instead of failing with "Too many connections"; posts are pipelined elsewhere anyway.
POOL_SIZE = 64
#: Seconds a caller waits for a pooled connection before the store counts as unavailable.
POOL_TIMEOUT = 10.0
#: Seconds to connect to Redis.
CONNECT_TIMEOUT = 2.0
#: Seconds between redis-py's health checks of an idle pooled connection.
HEALTH_CHECK_INTERVAL = 30

OnEvents = Callable[[list[StoreEvent]], None]
OnReconnect = Callable[[float], Awaitable[None]]
OnState = Callable[[bool], None]


class Link:
    """What both kinds of deployment share; a subclass says how it connects."""

    #: Whether this is a Redis Cluster, and (then) which master serves which slot.
    cluster = False
    slots: SlotMap | None = None
    #: The command that publishes to a channel (SPUBLISH on a cluster: sharded pub/sub).
    publish = "PUBLISH"

    def __init__(
        self,
        where: str,
        redis: Any,
        pipeline: RespPipeline | ClusterPipeline,
        calls: asyncio.Semaphore | None = None,
    ) -> None:
        #: Where Redis is, without credentials (for messages).
        self.where = where
        # Any: redis-py's annotations say bytes | str whatever decode_responses is; with
        # decode_responses=True every reply here is str (or a list/dict of them).
        self.redis = redis
        self.pipeline = pipeline
        self.batcher = Batcher(pipeline, SCRIPTS["post_many"], self.reload_scripts)
        #: Logins' and reads' commands of one loop turn, one pipeline (a storm is thousands).
        self.turn = Coalescer(lambda: self.pipeline)
        #: On a cluster: bounds the calls in flight to POOL_SIZE (redis-py's cluster
        #: client has no blocking pool: a burst of logins would fail, not queue).
        self._calls = calls
        self._reloading: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Load the scripts: the first command that shows whether Redis lets the gateway
        do what it needs (a cluster client's first command: COMMAND, too). A Redis that
        cannot serve now raises StoreUnavailable (`call`), and the gateway waits."""
        try:
            await self.load_scripts()
        except NoPermissionError as exc:
            raise StoreUnusable(
                f"Redis at {self.where} refused the gateway ({exc}); docs/REDIS.md "
                "gives the ACL a gateway needs"
            ) from exc
        except ResponseError as exc:  # a renamed or disabled command, say
            raise StoreUnusable(f"Redis at {self.where} cannot serve the gateway: {exc}") from exc

    async def close(self) -> None:
        self.pipeline.close()
        await self.redis.aclose()

    def subscriptions(
        self, on_events: OnEvents, on_reconnect: OnReconnect, on_state: OnState
    ) -> Subscriptions:
        raise NotImplementedError

    def unprotected_shards(self) -> dict[tuple[str, str], float]:
        """With --redis-wait-replica: (master, its slots) running without a replica ->
        since when (unix time); see store/replicas.py."""
        watch = self.pipeline.watch
        return watch.unprotected() if watch is not None else {}

    def pipe(self, transaction: bool = False) -> Any:
        """A redis-py pipeline; a transaction only on a standalone Redis (on a cluster,
        commands of several slots cannot be one transaction, and these need not be)."""
        return self.redis.pipeline(transaction=transaction and not self.cluster)

    # -- calls ----------------------------------------------------------------------------

    async def call(self, coro: Awaitable[T] | Coroutine[Any, Any, T]) -> T:
        """Await one redis-py call, its errors as the contract's (NoScriptError passes:
        `eval` reloads)."""
        try:
            if self._calls is None:
                return await coro
            async with self._calls:  # a cluster's pools fail when full, not wait: wait here
                return await coro
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        except ResponseError as exc:
            error = as_contract(exc)
            if error is exc:
                raise
            raise error from exc

    async def eval(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        """One script through redis-py (the keys of one slot)."""
        script = SCRIPTS[name]
        try:
            return await self.call(self.redis.evalsha(script.sha, len(keys_), *keys_, *args))
        except NoScriptError:  # Redis lost its scripts (restart, SCRIPT FLUSH)
            await self.reload_scripts()
            return await self.call(self.redis.evalsha(script.sha, len(keys_), *keys_, *args))

    async def run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Commands of any slots, scripts included, on the hot-path connection (the own
        pipeline: 0.46-0.56x redis-py's client CPU per login, docs/PERFORMANCE.md "Redis
        client stack"), together with everything else asked for in this loop turn;
        NOSCRIPT reloads once. The first error reply is raised."""
        for attempt in (1, 2):
            results = await self.turn.run(commands)
            errors = [r for r in results if is_error(r)]
            if attempt == 1 and any(scripts_lost(e) for e in errors):
                await self.reload_scripts()
                continue
            if errors:
                raise reply_error(errors[0])
            return results
        raise AssertionError("unreachable")

    async def script_waited(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        """One script through the routed pipeline, which waits for a replica when asked
        (--redis-wait-replica): its reply, or a StoreNoReply instance."""
        command = ("EVALSHA", SCRIPTS[name].sha, len(keys_), *keys_, *args)
        (reply,) = await self.pipeline.execute([command], wait=True)
        if scripts_lost(reply):
            await self.reload_scripts()
            (reply,) = await self.pipeline.execute([command], wait=True)
        if isinstance(reply, StoreNoReply):
            return reply
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, hiredis.ReplyError):
            raise reply_error(reply)
        return reply

    async def load_scripts(self) -> None:
        for script in SCRIPTS.values():
            await self.call(self.redis.script_load(script.source))

    async def reload_scripts(self) -> None:
        """One SCRIPT LOAD round for every caller that met NOSCRIPT at once (a Redis that
        restarted fails a whole loop turn's logins together)."""
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.ensure_future(self.load_scripts())
        await asyncio.shield(self._reloading)


class Standalone(Link):
    """One Redis (or the embedded store) at `url`: a blocking pool of POOL_SIZE
    connections, one hot-path connection, one pub/sub connection."""

    def __init__(self, url: str, where: str, policy: StorePolicy) -> None:
        pool = aredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=POOL_TIMEOUT,
            protocol=2,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=policy.reply_timeout,
            health_check_interval=HEALTH_CHECK_INTERVAL,
        )
        pipeline = RespPipeline(url, policy.reply_timeout, policy.wait_replica_ms)
        super().__init__(where, aredis.Redis(connection_pool=pool), pipeline)
        self.url = url

    def subscriptions(
        self, on_events: OnEvents, on_reconnect: OnReconnect, on_state: OnState
    ) -> Subscriptions:
        return PubSubLink(self.url, on_events, on_reconnect, on_state)


class Cluster(Link):
    """A Redis Cluster reached through `seeds`: redis-py's RedisCluster for the ordinary
    calls, the slot map for the hot path, the post batcher (each sender's ban and rate
    checked by post_gate.lua in its own slot) and the sharded pub/sub links."""

    cluster = True
    publish = "SPUBLISH"

    def __init__(self, seeds: Seeds, where: str, policy: StorePolicy, slots: SlotMap) -> None:
        params = parse_url(seeds.url(seeds.nodes[0]))  # type: ignore[no-untyped-call]
        options = {
            k: params[k]
            for k in (
                "username",
                "password",
                "ssl_ca_certs",
                "ssl_cert_reqs",
                "ssl_certfile",
                "ssl_keyfile",
                "ssl_check_hostname",
            )
            if k in params
        }
        if params.get("connection_class") is SSLConnection:
            options["ssl"] = True
        client = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in seeds.nodes],
            protocol=2,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=policy.reply_timeout,
            max_connections=POOL_SIZE,
            **options,
        )
        pipeline = ClusterPipeline(slots, policy.reply_timeout, policy.wait_replica_ms)
        super().__init__(where, client, pipeline, asyncio.Semaphore(POOL_SIZE))
        self.slots = slots
        self.batcher.use(pipeline, SCRIPTS["post_gate"], policy.rate, policy.burst)

    def subscriptions(
        self, on_events: OnEvents, on_reconnect: OnReconnect, on_state: OnState
    ) -> Subscriptions:
        assert self.slots is not None
        return ShardedLinks(self.slots, on_events, on_reconnect, on_state)
