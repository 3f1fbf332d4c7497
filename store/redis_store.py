"""The store on Redis (standalone, a Redis Cluster, or the embedded fakeredis server):
`Store` implemented.

Posts go through the `Batcher` (one pipeline per loop turn on a dedicated RESP2
connection, or one per master on a cluster); everything else uses redis-py's asyncio
client (`RedisCluster` on a cluster). Every Redis error that means "not reachable" becomes
`StoreUnavailable`; script replies become the contract's types here and nowhere else.

Every script touches the keys of one cluster slot (a user's, a conversation's, or the
shared `{g}`), so an operation on several (a join: the chat, the user, the chat list) is
a few steps, the same on a standalone Redis. Only the hot path differs: on a standalone
Redis a post checks the sender's ban and rate in the same script that stores it; on a
cluster `post_gate.lua` checks them first in the sender's slot (docs/REDIS.md says why
that cannot be abused).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import hiredis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.connection import SSLConnection, parse_url
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store import keys
from store.batcher import Batcher, ChatTarget, Coalescer
from store.cluster import ClusterPipeline, Seeds, SlotMap
from store.contract import (
    ACCEPTED,
    GENERAL,
    Account,
    AddressHold,
    AuditEntry,
    Backlog,
    BanInfo,
    Change,
    ChatInfo,
    ChatList,
    Complaint,
    ComplaintStatus,
    Conv,
    JoinStatus,
    Kind,
    LoginCheck,
    LoginGate,
    LoginLimits,
    Membership,
    Message,
    NewName,
    OnlineList,
    Position,
    PostResult,
    PostStatus,
    Range,
    Registration,
    StoreEvent,
    StoreNoReply,
    StoreRefused,
    StoreUnavailable,
    StoreUnusable,
    Subscriptions,
    TokenLogin,
    UserSeen,
    UserState,
)
from store.payloads import (
    joined_record,
    kicked_record,
    left_record,
    message_record,
    payload,
    tags_record,
    unbanned_record,
)
from store.pubsub import PubSubLink, ShardedLinks
from store.resp import NotReplicated, RespPipeline, refusal
from store.scripts import SCRIPTS as _SCRIPTS

__all__ = ["GENERAL", "PRESENCE_TTL", "RedisStore"]

log = logging.getLogger("chat.store")
T = TypeVar("T")
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)

#: Connections in redis-py's pool. Bounded: under a login burst callers wait for one
#: instead of failing with "Too many connections"; posts are pipelined elsewhere anyway.
POOL_SIZE = 64
#: Seconds a caller waits for a pooled connection before the store counts as unavailable.
POOL_TIMEOUT = 10.0
#: Seconds to connect to Redis, and (by default) to wait for any one reply.
CONNECT_TIMEOUT, REPLY_TIMEOUT = 2.0, 10.0
#: Conversations whose backlog is read at once: a login holds at most this many + 1 times
#: the backlog limit of messages in memory.
BACKLOG_GROUP = 8
#: Seconds between redis-py's health checks of an idle pooled connection.
HEALTH_CHECK_INTERVAL = 30
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
#: The oldest Redis with every command the scripts use (SINTERCARD, XADD with a
#: ms-only id, SPUBLISH for a cluster).
MIN_REDIS = (7, 0)
HOUR_MS = 3_600_000
#: Members read per step when a cluster counts a chat's online members (its member set
#: and a gateway's online users live in different slots, so Redis cannot intersect them).
SCAN_STEP = 1000
#: Entries walked at most for one such count: bounds one /who or /get_chats on a cluster
#: to about 20 round trips per live gateway; a count cut short is shown as a lower bound.
SCAN_LIMIT = 20_000
#: Members up to which `who_bounded` reads a chat's members and checks each (exact).
SMALL_CHAT = 2000
#: Seconds a chat's display name is cached by `enter`, and how many names are kept.
CHAT_NAME_TTL, CHAT_NAME_CACHE = 10.0, 10_000


_UNCONFIRMED = PostResult(PostStatus.UNCONFIRMED)


def _post_result(status: str, value: Any) -> PostResult:
    if status == "ok":
        return ACCEPTED
    if status == "banned":
        return PostResult(PostStatus.BANNED, until_ms=int(value))
    if status == "rate":
        return PostResult(PostStatus.RATE, retry_ms=int(value))
    return PostResult(PostStatus(status))


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        message_ttl: int,
        ban_threshold: int,
        ban_duration: int,
        rate: float,
        burst: int,
        gateway_id: str,
        complaint_min_age: int = 0,
        complaints_per_hour: int = 0,
        complaints_per_address: int = 0,
        ban_address_memory: int = 0,
        reply_timeout: float = REPLY_TIMEOUT,
        max_stored: int = 10000,
        max_user_chats: int = 100,
        max_chats: int = 10000,
        chat_creations: int = 10,
        max_registrations: int = 0,
        account_ttl: int = 180 * 86400,
        wait_replica_ms: int = 0,
    ) -> None:
        self.url = url
        self.seeds = Seeds.parse(url)
        self.reply_timeout = reply_timeout
        #: Set by `start` when the URL names a Redis Cluster node.
        self.cluster = False
        self.slots: SlotMap | None = None
        self.wait_replica_ms = wait_replica_ms
        self._publish = "PUBLISH"
        #: On a cluster: bounds the calls in flight to POOL_SIZE (redis-py's cluster
        #: client has no blocking pool: a burst of logins would fail, not queue).
        self._calls: asyncio.Semaphore | None = None
        self._node_url = self.seeds.url(self.seeds.nodes[0])
        pool = self._pool_for(self._node_url)
        # Any: redis-py's annotations say bytes | str whatever decode_responses is; with
        # decode_responses=True every reply here is str (or a list/dict of them).
        self.redis: Any = aredis.Redis(connection_pool=pool)
        self.ttl_ms = message_ttl * 1000
        self.ban_threshold = ban_threshold
        self.ban_ms = ban_duration * 1000
        self.rate = rate
        self.burst = burst
        self.gateway_id = gateway_id
        self.complaint_min_age_ms = complaint_min_age * 1000
        self.complaints_per_hour = complaints_per_hour
        self.complaints_per_address = complaints_per_address
        self.ban_address_memory = ban_address_memory
        self.max_stored = max_stored
        self.max_user_chats = max_user_chats
        self.max_chats = max_chats
        self.chat_creations = chat_creations
        self.max_registrations = max_registrations
        self.account_ttl_ms = account_ttl * 1000
        self._pipeline: RespPipeline | ClusterPipeline = RespPipeline(
            self.seeds.url(self.seeds.nodes[0]), reply_timeout, wait_replica_ms
        )
        self._batcher = Batcher(self._pipeline, _SCRIPTS["post_many"], self.load_scripts)
        #: Logins' and reads' commands of one loop turn, one pipeline (a storm is thousands).
        self._turn = Coalescer(lambda: self._pipeline)
        self._reloading: asyncio.Future[None] | None = None

    # -- plumbing -------------------------------------------------------------------------

    def _pool_for(self, url: str) -> aredis.BlockingConnectionPool:
        return aredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=POOL_TIMEOUT,
            protocol=2,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=self.reply_timeout,
            health_check_interval=HEALTH_CHECK_INTERVAL,
        )

    async def start(self) -> None:
        """Find out what the URL names (a standalone Redis or a cluster node), check that
        it can serve, and load the scripts."""
        cluster = await self._probe()
        if cluster and not self.cluster:
            await self._become_cluster()
        try:
            await self.load_scripts()  # a cluster client's first command: COMMAND, too
        except NoPermissionError as exc:
            raise StoreUnusable(
                f"Redis at {self.url_redacted()} refused the gateway ({exc}); docs/REDIS.md "
                "gives the ACL a gateway needs"
            ) from exc
        except ResponseError as exc:  # a renamed or disabled command, say
            if isinstance(exc, NoScriptError) or _refused(exc) is not None:
                raise
            raise StoreUnusable(
                f"Redis at {self.url_redacted()} cannot serve the gateway: {exc}"
            ) from exc

    async def _probe(self) -> bool:
        """Whether the first seed that answers is a cluster node; raises StoreUnusable for
        a Redis that cannot serve, StoreUnavailable when no seed answers."""
        last: Exception | None = None
        for addr in self.seeds.nodes:
            r = aredis.Redis.from_url(
                self.seeds.url(addr),
                protocol=2,
                decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=self.reply_timeout,
            )
            try:
                info = await r.info("server")
                enabled = (await r.info("cluster")).get("cluster_enabled", 0)
            except (AuthenticationError, NoPermissionError) as exc:
                raise StoreUnusable(
                    f"Redis at {addr[0]}:{addr[1]} refused the gateway ({exc}); docs/REDIS.md "
                    "gives the ACL a gateway needs"
                ) from exc
            except _UNAVAILABLE as exc:
                last = exc
                continue
            except ResponseError as exc:
                if "unknown command" in str(exc):  # the embedded store has no INFO
                    return False
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
            if not int(enabled) and addr != self.seeds.nodes[0]:
                await self._use_node(addr)  # a standalone Redis: the one that answered
            return bool(int(enabled))
        raise StoreUnavailable(f"no Redis answered at {self.url_redacted()}: {last}")

    async def _use_node(self, addr: tuple[str, int]) -> None:
        """Point the pool and the post pipeline at `addr` (a later seed of the URL)."""
        url = self.seeds.url(addr)
        old = self.redis
        self.redis = aredis.Redis(connection_pool=self._pool_for(url))
        await old.aclose()
        self._pipeline.close()
        self._pipeline = RespPipeline(url, self.reply_timeout, self.wait_replica_ms)
        self._batcher.use_pipeline(self._pipeline)
        self._node_url = url

    def url_redacted(self) -> str:
        """Where Redis is, without credentials: host:port[,host:port...] or the socket."""
        if self.seeds.scheme == "unix":
            return self.seeds.path.split("?", 1)[0]
        return ",".join(f"{h}:{p}" for h, p in self.seeds.nodes)

    async def _become_cluster(self) -> None:
        """Switch every connection to cluster routing: redis-py's RedisCluster for the
        ordinary calls, the slot map for the post batcher and the sharded links."""
        params = parse_url(self.seeds.url(self.seeds.nodes[0]))  # type: ignore[no-untyped-call]
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
        old = self.redis
        self.redis = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in self.seeds.nodes],
            protocol=2,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=self.reply_timeout,
            max_connections=POOL_SIZE,
            **options,
        )
        await old.aclose()
        self.slots = SlotMap(self.seeds, CONNECT_TIMEOUT)
        await self.slots.refresh()
        self._pipeline.close()
        self._pipeline = ClusterPipeline(self.slots, self.reply_timeout, self.wait_replica_ms)
        self._batcher.use(self._pipeline, _SCRIPTS["post_gate"], self.rate, self.burst)
        self._publish = "SPUBLISH"
        self._calls = asyncio.Semaphore(POOL_SIZE)
        self.cluster = True

    async def load_scripts(self) -> None:
        for script in _SCRIPTS.values():
            await self._call(self.redis.script_load(script.source))

    async def _eval(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        script = _SCRIPTS[name]
        try:
            return await self._call(self.redis.evalsha(script.sha, len(keys_), *keys_, *args))
        except NoScriptError:  # Redis lost its scripts (restart, SCRIPT FLUSH)
            await self.load_scripts()
            return await self._call(self.redis.evalsha(script.sha, len(keys_), *keys_, *args))

    async def _call(self, coro: Awaitable[T] | Coroutine[Any, Any, T]) -> T:
        try:
            if self._calls is None:
                return await coro
            async with self._calls:  # a cluster's pools fail when full, not wait: wait here
                return await coro
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        except ResponseError as exc:  # NoScriptError passes: the caller reloads
            refused = _refused(exc)
            if refused is None:
                raise
            raise refused from exc

    def subscriptions(
        self,
        on_events: Callable[[list[StoreEvent]], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None],
    ) -> Subscriptions:
        return _Links(self, on_events, on_reconnect, on_state)

    def _links(
        self,
        on_events: Callable[[list[StoreEvent]], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None],
    ) -> Subscriptions:
        if self.slots is not None:
            return ShardedLinks(self.slots, on_events, on_reconnect, on_state)
        return PubSubLink(self._node_url, on_events, on_reconnect, on_state)

    def _pipe(self, transaction: bool = False) -> Any:
        """A pipeline; a transaction only on a standalone Redis (on a cluster, commands
        of several slots cannot be one transaction, and these need not be)."""
        return self.redis.pipeline(transaction=transaction and not self.cluster)

    async def close(self) -> None:
        self._pipeline.close()
        await self.redis.aclose()

    def unprotected_shards(self) -> dict[tuple[str, str], float]:
        """With --redis-wait-replica: (master, its slots) running without a replica ->
        since when (unix time); see store/replicas.py."""
        watch = self._pipeline.watch
        return watch.unprotected() if watch is not None else {}

    def _floor(self) -> Position:
        """The oldest position a live message can have (older ones are past the lifetime)."""
        return Position(max(0, int(time.time() * 1000) - self.ttl_ms), 0)

    def _min_id(self) -> str:
        return keys.stream_id(self._floor())

    # -- accounts ------------------------------------------------------------------------

    async def get_account(self, user: str) -> Account | None:
        data = await self._call(self.redis.hmget(keys.user(user), "name", "pw"))
        if not data[0]:
            return None
        return Account(data[0], data[1] or "")

    async def new_name(self, user: str, skeleton: str, address: str) -> NewName:
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.skeleton(skeleton))
        pipe.zscore(keys.held_addresses(), address)
        owner, held = await self._call(pipe.execute())
        held_ms = int(held or 0)
        return NewName(
            look_alike=owner is not None and owner != user,
            held_until_ms=held_ms if held_ms > time.time() * 1000 else 0,
        )

    async def register(
        self, user: str, name: str, password_hash: str, skeleton: str, address: str = ""
    ) -> Registration:
        """Claim the name's look and count the address (`{g}`), create the account (the
        user's slot), then put the user in #general and the last-seen list."""
        if await self._call(self.redis.exists(keys.user(user))):
            return Registration.TAKEN  # before the claim: a taken name costs no registration
        claimed = await self._eval(
            "register_claim",
            [keys.skeleton(skeleton), keys.registrations(address)],
            [user, self.max_registrations if address else 0],
        )
        if claimed == -1:
            return Registration.LIMITED
        if claimed == -2:
            return Registration.LOOK_ALIKE
        created = await self._eval(
            "register",
            [keys.user(user), keys.user_chats(user)],
            [name, password_hash, GENERAL],
        )
        if created != 1:
            return Registration.TAKEN
        _, _, count = await self._eval(
            "join", [keys.chat(GENERAL), keys.members(GENERAL)], [user, GENERAL, 1, "ok"]
        )
        pipe = self._pipe()
        pipe.zadd(keys.chat_sizes(), {GENERAL: int(count)})
        pipe.zadd(keys.seen(), {user: int(time.time() * 1000)})
        await self._call(pipe.execute())
        return Registration.CREATED

    async def seen(self, user: str, address: str) -> None:
        await self.enter(user, address)

    def _seen_commands(self, user: str, address: str) -> list[tuple[Any, ...]]:
        """What a login records outside the user's slot (`{g}`): the address's failures
        forgiven for this nickname, and when the user was last seen."""
        return [
            ("ZREM", keys.address_fails(address), user),
            ("ZADD", keys.seen(), int(time.time() * 1000), user),
        ]

    def _enter_args(self, user: str, address: str) -> tuple[list[str], list[Any]]:
        """enter.lua's keys and arguments (token_login.lua ends with the same step)."""
        return (
            [
                keys.login_fails(user, address),
                keys.known_addresses(user),
                keys.user_addresses(user),
                keys.user_chats(user),
                keys.user_peers(user),
                keys.cursors(user),
                keys.ban(user),
            ],
            [address, KNOWN_ADDRESSES, self.ban_address_memory, ADDRESS_MEMORY],
        )

    async def login_gate(
        self, user: str, address: str, limits: LoginLimits, *, take: bool
    ) -> LoginCheck:
        """The nickname's limits (its slot), then, from an address the nickname never
        logged in from, the address's limit (`{g}`)."""
        ((code, value),) = await self._run([self._login_gate_command(user, address, limits, take)])
        if code != "ok":
            return LoginCheck(LoginGate(code), int(value))
        if int(value) == 1 or not limits.nicks_per_address:  # a known address
            return LoginCheck(LoginGate.OK, 0)
        return await self._address_gate(user, address, limits, take=take)

    @staticmethod
    def _gate_parts(user: str, address: str, limits: LoginLimits) -> tuple[list[str], list[Any]]:
        """login_gate.lua's keys and arguments but `take` (token_login.lua starts with the
        same ones)."""
        return (
            [keys.login_fails(user, address), keys.nick_fails(user), keys.known_addresses(user)],
            [address, limits.window, limits.per_pair, limits.per_nick, ADDRESS_MEMORY * 1000],
        )

    def _login_gate_command(
        self, user: str, address: str, limits: LoginLimits, take: bool
    ) -> tuple[Any, ...]:
        ks, args = self._gate_parts(user, address, limits)
        return ("EVALSHA", _SCRIPTS["login_gate"].sha, len(ks), *ks, *args, 1 if take else 0)

    async def _address_gate(
        self, user: str, address: str, limits: LoginLimits, *, take: bool
    ) -> LoginCheck:
        """The distinct-nicknames-per-address limit (`{g}`). An attempt it refuses after
        the nickname's counters took it is given back to them."""
        gate, wait_ms = await self._eval(
            "address_gate",
            [keys.address_fails(address)],
            [user, limits.window, limits.nicks_per_address, 1 if take else 0],
        )
        if gate != "ok" and take:
            given_back = [keys.login_fails(user, address), keys.nick_fails(user)]
            pipe = self._pipe()
            for key in given_back:
                pipe.decr(key)
            left = await self._call(pipe.execute())
            gone = [k for k, n in zip(given_back, left, strict=True) if int(n) <= 0]
            for key in gone:  # expired meanwhile: DECR made it -1 with no expiry
                await self._call(self.redis.delete(key))
        return LoginCheck(LoginGate(gate), int(wait_ms))

    async def give_back_attempt(self, user: str, address: str) -> None:
        await self._run(
            [("EVALSHA", _SCRIPTS["give_back"].sha, 1, keys.login_fails(user, address))]
        )

    async def set_password(self, user: str, password_hash: str) -> None:
        pipe = self._pipe(transaction=True)
        pipe.hset(keys.user(user), "pw", password_hash)
        pipe.delete(keys.tokens(user))
        await self._call(pipe.execute())

    # -- resume tokens -------------------------------------------------------------------

    async def issue_token(
        self, user: str, token_hash: str, ttl: int, replaces: str | None, keep: int
    ) -> None:
        await self._eval(
            "token_issue", [keys.tokens(user)], [token_hash, ttl * 1000, replaces or "", keep]
        )

    async def revoke_token(self, user: str, token_hash: str) -> None:
        await self._call(self.redis.hdel(keys.tokens(user), token_hash))

    # -- a user's state ------------------------------------------------------------------

    async def backlog(self, user: str, state: UserState, limit: int) -> Backlog:
        """The newest `limit` messages of the user's conversations after their cursors,
        oldest first, and how many older unread ones each conversation left out.

        Each conversation is read newest first with COUNT limit + 1, BACKLOG_GROUP
        conversations at a time, keeping only the newest `limit` overall: memory stays
        bounded whatever was missed."""
        convs = [Conv.of_chat(c) for c in state.chats]
        convs += [Conv.private(user, p) for p in state.peers]
        floor = self._floor()
        kept: list[Message] = []
        cut: dict[Conv, int] = {}
        for at in range(0, len(convs), BACKLOG_GROUP):
            group = convs[at : at + BACKLOG_GROUP]
            commands: list[tuple[Any, ...]] = []
            for conv in group:
                low = _low(floor, state.cursors.get(conv))
                commands.append(("XREVRANGE", keys.conv_stream(conv), "+", low, "COUNT", limit + 1))
            results = await self._run(commands)
            for conv, entries in zip(group, results, strict=False):
                if len(entries) > limit:  # one more than shown exists: say so
                    cut[conv] = len(entries) - limit
                    entries = entries[:limit]
                kept += _messages(conv, entries)
            kept.sort(key=lambda m: m.pos)
            if len(kept) > limit:
                for m in kept[: len(kept) - limit]:
                    cut[m.conv] = cut.get(m.conv, 0) + 1
                kept = kept[len(kept) - limit :]
        return Backlog(kept, cut)

    async def read_after(self, after: Mapping[Conv, Position | None]) -> list[Message]:
        if not after:
            return []
        floor = self._floor()
        convs = list(after)
        commands: list[tuple[Any, ...]] = [
            ("XRANGE", keys.conv_stream(conv), _low(floor, after[conv]), "+") for conv in convs
        ]
        results = await self._run(commands)
        out = [
            m
            for conv, entries in zip(convs, results, strict=False)
            for m in _messages(conv, entries)
        ]
        out.sort(key=lambda m: m.pos)
        return out

    async def history(self, chat: str, name: str, count: int) -> list[Message]:
        (entries,) = await self._run(
            [("XREVRANGE", keys.stream(chat), "+", self._min_id(), "COUNT", count)]
        )
        entries.reverse()
        return _messages(Conv.of_chat(chat), entries, name)

    async def names(self, users: Sequence[str]) -> list[str | None]:
        """One HGET per account, all in one pipeline with the rest of the loop turn."""
        if not users:
            return []
        replies = await self._run([("HGET", keys.user(u), "name") for u in users])
        return [str(n) if n else None for n in replies]

    async def advance_cursors(self, updates: Mapping[str, Mapping[Conv, Position]]) -> None:
        """Flush shown positions in one round trip (advance.lua never moves one back)."""
        if not updates:
            return
        sha = _SCRIPTS["advance"].sha
        commands: list[tuple[Any, ...]] = []
        for user, convs in updates.items():
            args: list[Any] = [self.ttl_ms]
            for conv, pos in convs.items():
                args += [keys.conv_id(conv), keys.stream_id(pos)]
            commands.append(("EVALSHA", sha, 1, keys.cursors(user), *args))
        await self._run(commands)

    async def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Commands of any slots, scripts included, on the hot-path connection (redis-py's
        cluster pipeline refuses EVALSHA), together with everything else asked for in this
        loop turn; NOSCRIPT reloads once. The first error reply is raised."""
        for attempt in (1, 2):
            results = await self._turn.run(commands)
            errors = [r for r in results if _is_error(r)]
            if attempt == 1 and any(str(e).startswith("NOSCRIPT") for e in errors):
                await self._reload_scripts()
                continue
            if errors:
                raise _raised(errors[0])
            return results
        raise AssertionError("unreachable")

    async def _reload_scripts(self) -> None:
        """One SCRIPT LOAD round for every caller that met NOSCRIPT at once (a Redis that
        restarted fails a whole loop turn's logins together)."""
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.ensure_future(self.load_scripts())
        await asyncio.shield(self._reloading)

    # -- messages ------------------------------------------------------------------------

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
        """Queue one user's chat messages for the next pipeline; one result per text."""
        target = ChatTarget(
            chat,
            (keys.stream(chat), keys.members(chat)),
            (
                chat_name,
                self.ttl_ms,
                self.rate,
                self.burst,
                keys.chat_conv(chat),
                keys.chat_channel(chat),
                self.max_stored,
                self._publish,
            ),
        )
        flag = "" if kind is Kind.MESSAGE else kind.value
        return self._batcher.chat(target, user, name, texts, _post_result, flag, tags)

    def post_private(
        self,
        user: str,
        name: str,
        peer: str,
        text: str,
        kind: Kind = Kind.MESSAGE,
        tags: str = "",
    ) -> asyncio.Future[PostResult]:
        flag = "" if kind is Kind.MESSAGE else kind.value
        conv = keys.dm_conv(user, peer)
        args = [
            user,
            name,
            peer,
            text,
            self.ttl_ms,
            self.rate,
            self.burst,
            conv,
            keys.user_channel(user),
            keys.user_channel(peer),
            self.max_stored,
        ]
        if self.cluster:
            return asyncio.ensure_future(
                self._post_private_cluster(user, name, peer, text, args, flag, tags)
            )
        raw = self._batcher.call(
            _SCRIPTS["post_private"],
            [
                keys.conv_stream(conv),
                keys.ban(user),
                keys.rate(user),
                keys.user(peer),
                keys.user_peers(user),
                keys.user_peers(peer),
            ],
            [*args, "", flag, tags],
        )
        return _mapped(
            raw, lambda r: _post_result(r[0], r[1] if len(r) > 1 else ""), lambda: _UNCONFIRMED
        )

    async def _post_private_cluster(
        self, user: str, name: str, peer: str, text: str, args: list[Any], kind: str, tags: str
    ) -> PostResult:
        """A private message on a cluster: the recipient (its slot) and the sender's ban
        and rate (`post_gate.lua`, the sender's slot) first; then both users' peers
        (their slots) beside the stream write (the conversation's slot), so a stored
        message is always one the recipient's next login reads; then the publish to both
        users' channels. A gateway that dies before the publish leaves the message stored
        and unread: the recipient gets it at the next login, not live."""
        recipient, gate = await asyncio.gather(
            self._call(self.redis.hget(keys.user(peer), "name")),
            self._eval("post_gate", [keys.ban(user), keys.rate(user)], [self.rate, self.burst, 1]),
        )
        if not recipient:
            return PostResult(PostStatus.NO_USER)
        if gate[0] != "ok":
            return _post_result(gate[0], gate[1])
        conv = keys.dm_conv(user, peer)
        pipe = self._pipe()
        for a, b in ((user, peer), (peer, user)):
            pipe.sadd(keys.user_peers(a), b)
            pipe.pexpire(keys.user_peers(a), self.ttl_ms)
        _, reply = await asyncio.gather(
            self._call(pipe.execute()),
            self._post_private_stream(conv, [*args, recipient, kind, tags]),
        )
        result = ACCEPTED
        if isinstance(reply, NotReplicated):  # stored, not yet on a replica: still shown
            reply, result = reply.reply, _UNCONFIRMED
        elif isinstance(reply, StoreNoReply):  # unknown: the next login shows it if stored
            return _UNCONFIRMED
        status, mid = reply
        if status != "ok":
            return _post_result(status, mid)
        record = payload([message_record(mid, conv, name, recipient, text, kind or "M", tags)])
        pipe = self._pipe()
        for a in (user, peer):
            pipe.execute_command("SPUBLISH", keys.user_channel(a), record)
        try:
            await self._call(pipe.execute())
        except StoreUnavailable as exc:  # stored and listed: shown at the next login
            log.warning("event=private_publish_failed conv=%s error=%s", conv, exc)
        return result

    async def _post_private_stream(self, conv: str, args: list[Any]) -> Any:
        """post_private.lua on the conversation's slot, through the routed pipeline (it
        waits for a replica when asked): its reply, or a StoreNoReply instance."""
        command = ("EVALSHA", _SCRIPTS["post_private"].sha, 1, keys.conv_stream(conv), *args)
        (reply,) = await self._pipeline.execute([command], wait=True)
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            await self.load_scripts()
            (reply,) = await self._pipeline.execute([command], wait=True)
        if isinstance(reply, StoreNoReply):
            return reply
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, hiredis.ReplyError):
            raise _refused(ResponseError(str(reply))) or ResponseError(str(reply))
        return reply

    # -- what is published and never stored: client tags, chat presence ------------------

    async def send_tags(self, user: str, name: str, conv: Conv, where: str, tags: str) -> str:
        """One PUBLISH per channel (the sender's ban, rate and membership are the caller's:
        its session knows them); the id is this gateway's, unique enough to pair an echo
        with its copies, never a stored position."""
        ms = int(time.time() * 1000)
        tid = f"{ms}-t{secrets.token_hex(6)}"
        record = payload([tags_record(tid, ms, str(conv), name, where, tags)])
        if conv.is_chat:
            channels = [keys.chat_channel(conv.chat)]
        else:
            channels = [keys.user_channel(u) for u in sorted({conv.low, conv.high})]
        pipe = self._pipe()
        for channel in channels:
            self._publish_on(pipe, channel, record)
        await self._call(pipe.execute())
        return tid

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
        """announce.lua per chat (each in its chat's slot), all in one pipeline."""
        told = (change.value, user, name, stamp, reason)
        calls = [
            self._batcher.call(
                _SCRIPTS["announce"],
                [keys.members(chat)],
                [max_members, keys.chat_channel(chat), self._publish, *told],
            )
            for chat in chats
        ]
        if calls:
            await asyncio.gather(*calls)

    async def online_on(self, user: str, gateways: Sequence[str]) -> bool:
        if not gateways:
            return False
        pipe = self._pipe()
        for gw in gateways:
            pipe.sismember(keys.gateway_online(gw), user)
        return any(await self._call(pipe.execute()))

    # -- chats ---------------------------------------------------------------------------

    async def join(self, user: str, chat: str, typed: str, origin: str) -> Membership:
        """Read the user's and the global limits, add the member in the chat's slot, then
        record the chat in the user's chats and the chat list and tell the user's
        gateways. Two joins racing past the limits' first read (the same user on two
        devices, or chats created at once) can each pass: a limit may be exceeded by the
        number of joins in flight at that instant, never more."""
        pipe = self._pipe()
        pipe.sismember(keys.user_chats(user), chat)
        pipe.scard(keys.user_chats(user))
        pipe.get(keys.creations(user))
        pipe.zcard(keys.chat_sizes())
        listed, mine, made, existing = await self._call(pipe.execute())
        may_join = 1 if listed or int(mine) < self.max_user_chats else 0
        if int(existing) >= self.max_chats:
            may_create = JoinStatus.CHAT_LIMIT.value
        elif int(made or 0) >= self.chat_creations:
            may_create = JoinStatus.CREATE_RATE.value
        else:
            may_create = "ok"
        status, name, count = await self._eval(
            "join", [keys.chat(chat), keys.members(chat)], [user, typed, may_join, may_create]
        )
        if status not in ("joined", "created", "already"):
            return Membership(False, typed, JoinStatus(status))
        pipe = self._pipe()
        pipe.sadd(keys.user_chats(user), chat)
        if status != "already":
            if status == "created":
                pipe.incr(keys.creations(user))
                pipe.expire(keys.creations(user), 3600, nx=True)
            pipe.zadd(keys.chat_sizes(), {chat: int(count)})
            self._publish_on(pipe, keys.user_channel(user), joined_record(chat, name, origin))
        await self._call(pipe.execute())
        return Membership(status != "already", name)

    async def leave(self, user: str, chat: str, origin: str) -> Membership:
        """Remove the member in the chat's slot, then from the user's chats and the chat
        list (a chat left empty is deleted), and tell the user's gateways."""
        removed, name, left = await self._eval(
            "leave", [keys.chat(chat), keys.members(chat)], [user, chat]
        )
        pipe = self._pipe()
        pipe.srem(keys.user_chats(user), chat)
        if removed:
            if int(left) == 0:
                pipe.zrem(keys.chat_sizes(), chat)
            else:
                pipe.zadd(keys.chat_sizes(), {chat: int(left)})
            self._publish_on(pipe, keys.user_channel(user), left_record(chat, name, origin))
        await self._call(pipe.execute())
        return Membership(bool(removed), name)

    def _publish_on(self, pipe: Any, channel: str, payload: str) -> None:
        pipe.execute_command(self._publish, channel, payload)

    async def live_gateways(self) -> list[str]:
        """The gateways whose heartbeat is current (dead ones are dropped from the set)."""
        gws = sorted(await self._call(self.redis.smembers(keys.gateways())))
        if not gws:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for gw in gws:
            pipe.exists(keys.gateway_alive(gw))
        alive = await self._call(pipe.execute())
        dead = [gw for gw, ok in zip(gws, alive, strict=True) if not ok]
        if dead:
            await self._call(self.redis.srem(keys.gateways(), *dead))
        return [gw for gw, ok in zip(gws, alive, strict=True) if ok]

    async def count_address(self, address: str, change: int, live: Sequence[str]) -> int:
        """Count a connection from `address` opened (+1) or closed (-1) on this gateway;
        returns the address's connections on the `live` gateways after the change."""
        return int(
            await self._eval(
                "address_count",
                [keys.address_connections(address)],
                [self.gateway_id, change, ADDRESS_COUNT_TTL_MS, *live],
            )
        )

    async def is_member(self, user: str, chat: str) -> bool:
        return bool(await self._call(self.redis.sismember(keys.members(chat), user)))

    # -- complaints ----------------------------------------------------------------------

    async def complain(self, user: str, target: str, address: str) -> Complaint:
        """The complainer's age and hourly allowance are read first (the complainer's
        slot), the complaint is decided and counted in the target's slot, then recorded
        in the complainer's allowance and, on a ban, listed with the held addresses
        (`{g}`). The allowance is the only check not in the deciding step: complaints
        sent at the same instant from several sessions of one complainer can each pass
        it, so it may be exceeded by that number; each still counts once per complainer
        and per address, which the deciding step enforces."""
        now = int(time.time() * 1000)
        pipe = self._pipe()
        pipe.hget(keys.user(user), "created")
        recent = keys.complaints_by(user)
        if self.complaints_per_hour:
            pipe.zremrangebyscore(recent, "-inf", now - HOUR_MS)
            pipe.zcard(recent)
            pipe.zrange(recent, 0, 0, withscores=True)
        res = await self._call(pipe.execute())
        young = 0
        if self.complaint_min_age_ms:
            young = max(0, int(res[0] or 0) * 1000 + self.complaint_min_age_ms - now)
        rate_wait = 0
        if self.complaints_per_hour and int(res[2]) >= self.complaints_per_hour and res[3]:
            rate_wait = max(1, int(res[3][0][1]) + HOUR_MS - now)
        res = await self._eval(
            "complain",
            [
                keys.complaints(target),
                keys.ban(target),
                keys.user(target),
                keys.complaint_addresses(target),
                keys.user_addresses(target),
            ],
            [
                user,
                self.ban_threshold,
                self.ban_ms,
                keys.user_channel(target),
                address,
                young,
                rate_wait,
                self.complaints_per_address,
                self._publish,
            ],
        )
        status = ComplaintStatus(res[0])
        if status in (ComplaintStatus.RECORDED, ComplaintStatus.BANNED):
            pipe = self._pipe()
            if self.complaints_per_hour:
                pipe.zadd(recent, {keys.user_channel(target): now})
                pipe.pexpire(recent, HOUR_MS)
            if status is ComplaintStatus.BANNED:
                till = int(res[2])
                self._list_ban(pipe, target, till)
                self._hold(pipe, target, res[4:], till)
            if len(pipe):
                await self._call(pipe.execute())
        if status is ComplaintStatus.NO_USER:
            return Complaint(status)
        if status in (ComplaintStatus.TOO_NEW, ComplaintStatus.RATE):
            return Complaint(status, wait_ms=int(res[1]), name=res[2])
        if status is ComplaintStatus.ALREADY_BANNED:
            return Complaint(status, until_ms=int(res[1]), name=res[2])
        if status is ComplaintStatus.BANNED:
            return Complaint(status, count=int(res[1]), until_ms=int(res[2]), name=res[3])
        return Complaint(status, count=int(res[1]), name=res[2])

    @staticmethod
    def _hold(pipe: Any, user: str, addresses: list[str], till: int) -> None:
        """Queue holding a user's recent addresses back from registering until `till`
        (ms), for their ban after complaints (the reason kept, so that lifting the ban
        lifts them); ended holds go."""
        now = int(time.time() * 1000)
        pipe.zremrangebyscore(keys.held_addresses(), "-inf", now)
        pipe.zremrangebyscore(keys.held_reasons(), "-inf", now)
        if addresses:
            pipe.zadd(keys.held_addresses(), dict.fromkeys(addresses, till), gt=True)
            pipe.zadd(keys.held_reasons(), {f"{a}|{user}": till for a in addresses}, gt=True)

    @staticmethod
    def _list_ban(pipe: Any, user: str, till: int) -> None:
        """Queue listing a ban in the bans zset `admin bans` reads (expired ones go)."""
        pipe.zremrangebyscore(keys.bans(), "-inf", int(time.time() * 1000))
        pipe.zadd(keys.bans(), {user: till})

    # -- moderation and operators ----------------------------------------------------------

    async def is_moderator(self, user: str) -> bool:
        return bool(await self._call(self.redis.sismember(keys.moderators(), user)))

    async def set_moderator(self, user: str, on: bool) -> bool:
        if await self.get_account(user) is None:
            return False
        if on:
            await self._call(self.redis.sadd(keys.moderators(), user))
        else:
            await self._call(self.redis.srem(keys.moderators(), user))
        return True

    async def ban(self, user: str, duration: int) -> BanInfo | None:
        res = await self._eval(
            "mod_ban",
            [
                keys.ban(user),
                keys.user(user),
                keys.complaints(user),
                keys.complaint_addresses(user),
            ],
            [duration * 1000, keys.user_channel(user), self._publish],
        )
        if res[0] == "nouser":
            return None
        pipe = self._pipe()
        self._list_ban(pipe, user, int(res[1]))
        await self._call(pipe.execute())
        return BanInfo(user, str(res[2]), int(res[1]))

    async def unban(self, user: str) -> bool:
        pipe = self._pipe()
        pipe.exists(keys.ban(user))
        pipe.delete(keys.ban(user))
        pipe.delete(keys.complaints(user))
        pipe.delete(keys.complaint_addresses(user))
        pipe.zrem(keys.bans(), user)
        was, *_ = await self._call(pipe.execute())
        await self._lift_holds("user", user)
        if was:  # the user's sessions are told they may send again
            await self._call(
                self.redis.execute_command(
                    self._publish, keys.user_channel(user), payload([unbanned_record()])
                )
            )
        return bool(was)

    async def kick(self, user: str) -> None:
        await self._call(
            self.redis.execute_command(
                self._publish, keys.user_channel(user), payload([kicked_record()])
            )
        )

    async def bans(self) -> list[BanInfo]:
        now = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(keys.bans(), "-inf", now)
        pipe.zrangebyscore(keys.bans(), now, "+inf", withscores=True)
        _, found = await self._call(pipe.execute())
        names = await self._names([u for u, _ in found])
        return [BanInfo(u, names[u], int(ms)) for u, ms in found]

    async def holds(self) -> list[AddressHold]:
        now = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(keys.held_addresses(), now, "+inf", withscores=True)
        pipe.zrangebyscore(keys.held_reasons(), now, "+inf", withscores=True)
        held, reasons = await self._call(pipe.execute())
        why: dict[str, list[tuple[str, int]]] = {}
        for member, ms in reasons:
            address, _, user = str(member).rpartition("|")
            why.setdefault(address, []).append((user, int(ms)))
        names = await self._names(sorted({u for found in why.values() for u, _ in found}))
        return [
            AddressHold(
                str(address),
                int(ms),
                tuple(BanInfo(u, names[u], t) for u, t in sorted(why.get(address, []))),
            )
            for address, ms in held
        ]

    async def lift_hold(self, address: str) -> bool:
        return bool(await self._lift_holds("address", address))

    async def _lift_holds(self, by: str, value: str) -> list[str]:
        """lift_holds.lua: the addresses freed (see there)."""
        freed = await self._eval(
            "lift_holds", [keys.held_addresses(), keys.held_reasons()], [by, value]
        )
        return [str(a) for a in freed]

    async def _names(self, users: list[str]) -> dict[str, str]:
        """Display names of user keys (the key itself where the account is gone)."""
        if not users:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for u in users:
            pipe.hget(keys.user(u), "name")
        names = await self._call(pipe.execute())
        return {u: n or u for u, n in zip(users, names, strict=True)}

    async def complaints_about(self, user: str) -> list[tuple[str, int]]:
        found = await self._call(self.redis.zrange(keys.complaints(user), 0, -1, withscores=True))
        names = await self._names([u for u, _ in found])
        return [(names[u], int(ms)) for u, ms in found]

    async def users(self, limit: int) -> list[UserSeen]:
        found = await self._call(self.redis.zrevrange(keys.seen(), 0, limit - 1, withscores=True))
        if not found:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for u, _ in found:
            pipe.hget(keys.user(u), "name")
            pipe.get(keys.ban(u))
        pipe.smismember(keys.moderators(), [u for u, _ in found])
        res = await self._call(pipe.execute())
        mods = res[-1]
        return [
            UserSeen(u, res[2 * i] or u, int(ms), int(res[2 * i + 1] or 0), bool(mods[i]))
            for i, (u, ms) in enumerate(found)
        ]

    async def delete_user(self, user: str, skeleton: str) -> bool:
        if await self.get_account(user) is None:
            return False
        peers = await self._call(self.redis.smembers(keys.user_peers(user)))
        pipe = self.redis.pipeline(transaction=False)
        for peer in peers:  # the private conversations go with the account
            pipe.delete(keys.conv_stream(keys.dm_conv(user, peer)))
            pipe.srem(keys.user_peers(peer), user)
        pipe.srem(keys.moderators(), user)
        pipe.zrem(keys.bans(), user)
        pipe.zadd(keys.seen(), {user: 0})  # so that forget.lua's cutoff takes it
        await self._call(pipe.execute())
        await self._forget(user, 0)
        # the nickname's look is free again only if this account held it
        if await self._call(self.redis.get(keys.skeleton(skeleton))) == user:
            await self._call(self.redis.delete(keys.skeleton(skeleton)))
        return True

    async def _forget(self, u: str, cutoff: int) -> int:
        """Forget user `u` if not seen after `cutoff`: its own keys (its slot), then its
        memberships (each chat's slot) and the shared lists (`{g}`). A login between the
        look at last-seen and the deletion would be undone by it; an account unseen for
        the account lifetime that logs in at that very instant is the only one at risk."""
        seen = await self._call(self.redis.zscore(keys.seen(), u))
        if seen is None or float(seen) > cutoff:
            return 0
        chats = await self._eval("forget", keys.own_keys(u), [])
        pipe = self._pipe()
        for chat in chats:
            removed, _, left = await self._eval(
                "leave", [keys.chat(chat), keys.members(chat)], [u, chat]
            )
            if removed and int(left) == 0:
                pipe.zrem(keys.chat_sizes(), chat)
            elif removed:
                pipe.zadd(keys.chat_sizes(), {chat: int(left)})
        pipe.srem(keys.moderators(), u)
        pipe.zrem(keys.bans(), u)
        pipe.zrem(keys.seen(), u)
        await self._call(pipe.execute())
        return 1

    async def audit(self, fields: dict[str, str], keep: int) -> None:
        await self._call(self.redis.xadd(keys.audit(), fields, maxlen=keep, approximate=True))

    async def audit_log(self, since_ms: int, limit: int) -> list[AuditEntry]:
        entries = await self._call(
            self.redis.xrevrange(keys.audit(), "+", f"{since_ms}-0", count=limit)
        )
        return [AuditEntry(mid, keys.position(mid).ms, dict(f)) for mid, f in reversed(entries)]

    # -- after Redis lost its data ---------------------------------------------------------

    async def claim_epoch(self, candidate: str) -> str:
        """The store's epoch, set to `candidate` first if there is none (SET NX), so all
        gateways that find it gone agree on one new value."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(keys.epoch(), candidate, nx=True)
        pipe.get(keys.epoch())
        _, current = await self._call(pipe.execute())
        return str(current or candidate)

    async def reassert(self, chats: dict[str, dict[str, str]], peers: dict[str, set[str]]) -> None:
        """Write back what this gateway's logged-in users are known to be in: memberships
        both ways, the chats' names (only where missing) and member counts, and their
        private peers. Nothing that lets anyone log in (accounts stay as they are)."""
        pipe = self.redis.pipeline(transaction=False)
        for user, theirs in chats.items():
            for chat, name in theirs.items():
                pipe.hsetnx(keys.chat(chat), "name", name)
                pipe.sadd(keys.members(chat), user)
                pipe.sadd(keys.user_chats(user), chat)
        for user, theirs_ in peers.items():
            if theirs_:
                pipe.sadd(keys.user_peers(user), *theirs_)
                pipe.pexpire(keys.user_peers(user), self.ttl_ms)
        if len(pipe):
            await self._call(pipe.execute())
        touched = sorted({chat for theirs in chats.values() for chat in theirs})
        if touched:  # the member counts /get_chats lists by, from the sets just written
            pipe = self.redis.pipeline(transaction=False)
            for chat in touched:
                pipe.scard(keys.members(chat))
            counts = await self._call(pipe.execute())
            sizes = dict(zip(touched, counts, strict=True))
            await self._call(self.redis.zadd(keys.chat_sizes(), sizes))

    # -- presence ------------------------------------------------------------------------

    async def heartbeat(self, online: set[str]) -> None:
        gw = self.gateway_id
        if online:  # online users count as seen: their accounts do not expire
            now = int(time.time() * 1000)
            await self._call(self.redis.zadd(keys.seen(), dict.fromkeys(online, now), xx=True))
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(keys.gateways(), gw)
        pipe.set(keys.gateway_alive(gw), str(int(time.time())), ex=PRESENCE_TTL)
        pipe.delete(keys.gateway_online(gw))
        if online:
            pipe.sadd(keys.gateway_online(gw), *online)
            pipe.expire(keys.gateway_online(gw), PRESENCE_TTL)
        await self._call(pipe.execute())

    async def set_online(self, user: str, online: bool) -> None:
        k = keys.gateway_online(self.gateway_id)
        if online:
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(k, user)
            pipe.expire(k, PRESENCE_TTL)
            await self._call(pipe.execute())
        else:
            await self._call(self.redis.srem(k, user))

    async def forget_unseen(self, limit: int) -> int:
        """Forget at most `limit` accounts not seen for the account lifetime (the oldest
        first); returns how many. Gateways call it on their ticker, so the sweep goes in
        bounded steps and never scans every account."""
        cutoff = int(time.time() * 1000) - self.account_ttl_ms
        users = await self._call(
            self.redis.zrangebyscore(keys.seen(), "-inf", cutoff, start=0, num=limit)
        )
        forgotten = 0
        for u in users:
            forgotten += await self._forget(u, cutoff)
        return forgotten

    async def gateway_gone(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.srem(keys.gateways(), self.gateway_id)
        pipe.delete(keys.gateway_alive(self.gateway_id), keys.gateway_online(self.gateway_id))
        await self._call(pipe.execute())

    # -- bounded /who and /get_chats (chats of tens of thousands of members) ----------------

    async def _live_online_keys(self) -> list[str]:
        return [keys.gateway_online(gw) for gw in await self.live_gateways()]

    async def who_bounded(self, chat: str, limit: int, cap: int) -> OnlineList:
        """At most `limit` online members of `chat` (by name) and how many are online,
        counted up to `cap`. No union of every online user is built (that cost
        O(everyone online) per call, about 100 ms of Redis at 50,000): a chat of at most
        SMALL_CHAT members is read and checked against each live gateway's online set
        (exact); a larger one is counted per gateway (`_intercard`) and its
        names are drawn from random online users and random members, checked both ways.
        Users online on two gateways count twice in a large chat's count."""
        live = await self._live_online_keys()
        if not live:
            return OnlineList([], 0)
        members = keys.members(chat)
        size = int(await self._call(self.redis.scard(members)))
        if size == 0:
            return OnlineList([], 0)
        if size <= SMALL_CHAT:
            users = sorted(await self._call(self.redis.smembers(members)))
            pipe = self.redis.pipeline(transaction=False)
            for online_key in live:
                pipe.smismember(online_key, users)
            found = await self._call(pipe.execute())
            online = [u for i, u in enumerate(users) if any(f[i] for f in found)]
            total, capped = len(online), False
        else:
            pipe = self.redis.pipeline(transaction=False)
            for online_key in live:
                pipe.srandmember(online_key, 2 * limit)
            pipe.srandmember(members, 2 * limit)
            res = await self._call(pipe.execute())
            counts = [await self._intercard(members, k, cap) for k in live]
            counted = sum(n for n, _ in counts)
            if not all(complete for _, complete in counts):
                counted = max(counted, cap)  # walked as far as allowed: at least this many
            candidates = sorted({u for drawn in res[:-1] for u in drawn} | set(res[-1]))
            pipe = self.redis.pipeline(transaction=False)
            pipe.smismember(members, candidates)
            for online_key in live:
                pipe.smismember(online_key, candidates)
            checks = await self._call(pipe.execute())
            online = [
                u
                for i, u in enumerate(candidates)
                if checks[0][i] and any(c[i] for c in checks[1:])
            ]
            total, capped = max(min(counted, cap), len(online)), counted >= cap
        present = online if len(online) <= limit else random.sample(online, limit)
        if not present:
            return OnlineList([], 0)
        names = await self._names(present)
        return OnlineList(sorted(names.values(), key=str.casefold), total, capped)

    async def _intercard(self, a: str, b: str, cap: int) -> tuple[int, bool]:
        """How many members sets `a` and `b` share, counted up to `cap`, and whether
        that count is complete. A standalone Redis counts it (SINTERCARD ... LIMIT); on a
        cluster the two sets are in different slots, so the smaller is walked (SSCAN,
        SCAN_STEP at a time) and looked up in the other (SMISMEMBER), at most
        SCAN_LIMIT entries: past that the count is a lower bound (shown as `n+`)."""
        if not self.cluster:
            n = await self._call(self.redis.execute_command("SINTERCARD", 2, a, b, "LIMIT", cap))
            return int(n), True
        pipe = self._pipe()
        pipe.scard(a)
        pipe.scard(b)
        size_a, size_b = await self._call(pipe.execute())
        walk, probe = (a, b) if int(size_a) <= int(size_b) else (b, a)
        found = walked = 0
        cursor = 0
        while True:
            cursor, batch = await self._call(self.redis.sscan(walk, cursor, count=SCAN_STEP))
            if batch:
                hits = await self._call(self.redis.smismember(probe, batch))
                found += sum(1 for hit in hits if hit)
                walked += len(batch)
            if int(cursor) == 0:
                return min(found, cap), True
            if found >= cap:
                return cap, True
            if walked >= SCAN_LIMIT:
                return found, False

    async def active_chats_bounded(self, limit: int, cap: int) -> ChatList:
        """The `limit` largest chats and how many exist, each with its online members
        counted up to `cap` per live gateway (SINTERCARD ... LIMIT: no union of everyone
        online is built; a user online on two gateways counts twice)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(keys.chat_sizes(), 0, limit - 1, withscores=True)
        pipe.zcard(keys.chat_sizes())
        top, total = await self._call(pipe.execute())
        if not top:
            return ChatList([], int(total))
        live = await self._live_online_keys()
        pipe = self.redis.pipeline(transaction=False)
        for c, _ in top:
            pipe.hget(keys.chat(c), "name")
        names = await self._call(pipe.execute())
        infos = []
        for (c, count), name in zip(top, names, strict=True):
            counts = [await self._intercard(keys.members(c), k, cap) for k in live]
            online = sum(n for n, _ in counts)
            capped = online >= cap or not all(complete for _, complete in counts)
            infos.append(ChatInfo(name or c, int(count), min(online, cap), capped))
        infos.sort(key=lambda x: (-x.members, x.name.casefold()))
        return ChatList(infos, int(total))

    # -- history ranges (IRC CHATHISTORY) and one read position --------------------------

    async def read_range(self, conv: Conv, want: Range) -> list[Message]:
        """One single-key read: XRANGE for the oldest of the range, XREVRANGE for the
        newest; an `after` older than the lifetime reads from the oldest live message.
        With the loop turn's other commands: every web and IRC login reads a range, and
        redis-py's pool (64 connections) made a storm of them wait and fail."""
        stream = keys.conv_stream(conv)
        low = _low(self._floor(), want.after)
        high = "+" if want.before is None else "(" + keys.stream_id(want.before)
        if want.newest:
            (entries,) = await self._run([("XREVRANGE", stream, high, low, "COUNT", want.count)])
            entries.reverse()
        else:
            (entries,) = await self._run([("XRANGE", stream, low, high, "COUNT", want.count)])
        return _messages(conv, entries)

    async def latest_many(self, convs: Sequence[Conv]) -> list[Message | None]:
        """The newest live message of each conversation, one pipeline for all of them
        (CHATHISTORY TARGETS: one read per conversation would queue every other store
        call behind thousands of round trips)."""
        if not convs:
            return []
        floor = self._min_id()
        results = await self._run(
            [("XREVRANGE", keys.conv_stream(c), "+", floor, "COUNT", 1) for c in convs]
        )
        out: list[Message | None] = []
        for c, entries in zip(convs, results, strict=True):
            found = _messages(c, entries)
            out.append(found[0] if found else None)
        return out

    async def read_position(self, user: str, conv: Conv) -> Position | None:
        """The user's stored read position (last shown) in one conversation."""
        (mid,) = await self._run([("HGET", keys.cursors(user), keys.conv_id(conv))])
        return _position_or_none(mid)

    # -- logins in fewer round trips (a reconnect storm is thousands of them) ---------------

    async def token_login(
        self, user: str, address: str, limits: LoginLimits, token_hash: str
    ) -> TokenLogin:
        """token_login.lua in the user's slot, sent with the other logins of this loop turn:
        a valid token is the login (no gate: it cannot be guessed), with its records and
        state; a wrong one is counted as a failed login, at an address new to the nickname
        by the address's limit too (`{g}`)."""
        # token_login.lua's keys and arguments: the gate's, the token's, then enter.lua's
        # less those the gate already named (the pair counter, known addresses, address)
        gate_keys, gate_args = self._gate_parts(user, address, limits)
        enter_keys, enter_args = self._enter_args(user, address)
        ks = [*gate_keys, keys.tokens(user), keys.user(user), *enter_keys[2:]]
        args = [*gate_args, token_hash, *enter_args[1:]]
        sha = _SCRIPTS["token_login"].sha
        ((verdict, *rest),) = await self._run([("EVALSHA", sha, len(ks), *ks, *args)])
        if verdict == "ok":
            name, *state = rest
            self._recorded(self._turn.run(self._seen_commands(user, address)))
            return TokenLogin(LoginCheck(LoginGate.OK), str(name), await self._state(state))
        if verdict != "bad":
            return TokenLogin(LoginCheck(LoginGate(verdict), int(rest[0])))
        if int(rest[0]) and limits.nicks_per_address:  # a new address: it counts there too
            return TokenLogin(await self._address_gate(user, address, limits, take=True))
        return TokenLogin(LoginCheck(LoginGate.OK))

    async def enter(self, user: str, address: str) -> UserState:
        """enter.lua in the user's slot and the `{g}` records, with the other logins of
        this loop turn; the chats' display names from a short-lived cache (every user of a
        50,000-member #general asked for its name)."""
        ks, args = self._enter_args(user, address)
        state, *_ = await self._run(
            [
                ("EVALSHA", _SCRIPTS["enter"].sha, len(ks), *ks, *args),
                *self._seen_commands(user, address),
            ]
        )
        return await self._state(state)

    async def _state(self, reply: list[Any]) -> UserState:
        """A UserState from enter.lua's reply: chats, peers, cursors (flat), ban."""
        chats, peers, flat, ban = reply
        return UserState(
            chats=await self._chat_names(sorted(chats)),
            peers=set(peers),
            cursors=_cursors(flat),
            banned_until_ms=int(ban) if ban else None,
        )

    @staticmethod
    def _recorded(fut: asyncio.Future[list[Any]]) -> None:
        """Let a write nobody waits for go; a failure is logged (the next login or the
        presence heartbeat writes the same again)."""

        def done(f: asyncio.Future[list[Any]]) -> None:
            exc = f.exception()
            errors = [r for r in ([] if exc else f.result()) if _is_error(r)]
            if exc or errors:
                log.warning("event=login_record_failed error=%s", exc or errors[0])

        fut.add_done_callback(done)

    async def _chat_names(self, chats: list[str]) -> dict[str, str]:
        """Display names of chats, cached for CHAT_NAME_TTL seconds (a name changes only
        when a chat empties and is created again)."""
        cache: dict[str, tuple[str, float]] = self.__dict__.setdefault("_names_cache", {})
        now = time.monotonic()
        names: dict[str, str] = {}
        missing = []
        for c in chats:
            hit = cache.get(c)
            if hit is not None and hit[1] > now:
                names[c] = hit[0]
            else:
                missing.append(c)
        if missing:
            replies = await self._run([("HGET", keys.chat(c), "name") for c in missing])
            for c, n in zip(missing, replies, strict=True):
                names[c] = n or c
                if n:
                    if len(cache) >= CHAT_NAME_CACHE:
                        cache.clear()
                    cache[c] = (n, now + CHAT_NAME_TTL)
        return {c: names[c] for c in chats}

    async def set_online_many(self, users: Sequence[str]) -> None:
        """`set_online` for every user that logged in during one loop turn: one pipeline.
        The gateway's own live mark is renewed if it is missing (a store emptied under a
        running gateway): users who log in count as online at once, not only after the
        next heartbeat."""
        gw = self.gateway_id
        k = keys.gateway_online(gw)
        await self._run(
            [
                ("SADD", k, *users),
                ("EXPIRE", k, PRESENCE_TTL),
                ("SADD", keys.gateways(), gw),
                ("SET", keys.gateway_alive(gw), str(int(time.time())), "EX", PRESENCE_TTL, "NX"),
            ]
        )


class _Links:
    """The store's `Subscriptions`, chosen when the link starts: fan-out asks for it while
    the gateway is built, before `start` has found out whether Redis is a cluster."""

    def __init__(
        self,
        store: RedisStore,
        on_events: Callable[[list[StoreEvent]], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None],
    ) -> None:
        self._store = store
        self._args = (on_events, on_reconnect, on_state)
        self._link: Subscriptions | None = None

    @property
    def count(self) -> int:
        return self._link.count if self._link is not None else 0

    async def start(self) -> None:
        self._link = self._store._links(*self._args)
        await self._link.start()

    async def close(self) -> None:
        if self._link is not None:
            await self._link.close()

    async def add(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None:
        if self._link is None:
            raise StoreUnavailable("the pub/sub link has not started")
        await self._link.add(chats, users)

    def remove(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None:
        if self._link is not None:
            self._link.remove(chats, users)


def _refused(exc: Exception) -> StoreRefused | None:
    """A refusal to write as the contract's error (redis-py strips the OOM/READONLY
    prefix into the exception's class)."""
    if isinstance(exc, OutOfMemoryError | ReadOnlyError):
        return StoreRefused(f"{type(exc).__name__}: {exc}")
    return refusal(str(exc))


def _mapped(
    raw: asyncio.Future[Any],
    convert: Callable[[Any], T],
    unconfirmed: Callable[[], T] | None = None,
) -> asyncio.Future[T]:
    """A future of `convert(raw's result)`, failing as raw fails, without a task; a request
    sent but unanswered (`StoreNoReply`) resolves to `unconfirmed()` when given."""
    out: asyncio.Future[T] = raw.get_loop().create_future()

    def done(f: asyncio.Future[Any]) -> None:
        if out.done():
            return
        exc = f.exception()
        if isinstance(exc, StoreNoReply) and unconfirmed is not None:
            out.set_result(unconfirmed())
        elif exc is not None:
            out.set_exception(exc)
        else:
            try:
                out.set_result(convert(f.result()))
            except Exception as err:  # a reply of the wrong shape
                out.set_exception(err)

    raw.add_done_callback(done)
    return out


def _is_error(reply: Any) -> bool:
    return isinstance(reply, BaseException | hiredis.ReplyError)


#: Error replies that mean Redis cannot serve right now (loading its data, a script
#: running too long, no master): the contract's StoreUnavailable, as redis-py mapped them.
_NOT_NOW = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def _raised(error: Any) -> Exception:
    """What a caller raises for an error reply of the hot-path connection: a refusal to
    write or a Redis that cannot serve now as the contract's errors, anything else as a
    ResponseError; an exception instance (a cluster node lost) as a copy of its own, so
    that the callers of one batch do not share one traceback."""
    if isinstance(error, hiredis.ReplyError):
        text = str(error)
        if text.startswith(_NOT_NOW):
            return StoreUnavailable(text)
        return refusal(text) or ResponseError(text)
    return copy.copy(error) if isinstance(error, Exception) else StoreUnavailable(str(error))


def _messages(conv: Conv, entries: list[Any], chat_name: str | None = None) -> list[Message]:
    """Messages from a raw XRANGE/XREVRANGE reply ([id, [field, value, ...]] each)."""
    out = []
    for mid, flat in entries:
        f = dict(zip(flat[::2], flat[1::2], strict=False))
        out.append(_message(conv, mid, f, chat_name if chat_name is not None else f.get("r", "")))
    return out


def _message(conv: Conv, mid: str, f: dict[str, str], where: str) -> Message:
    """One stream entry (post_many.lua, post_private.lua: `n` sender, `t` text, `r` the
    recipient's name, `k` "N" for a notice, `g` client tags)."""
    pos, sender, text = keys.position(mid), f.get("n", "?"), f.get("t", "")
    if "k" not in f:
        return Message(pos, conv, sender, where, text)
    kind = Kind.NOTICE if f["k"] == "N" else Kind.MESSAGE
    return Message(pos, conv, sender, where, text, kind, f.get("g", ""))


def _low(floor: Position, after: Position | None) -> str:
    """The low XRANGE bound for messages after `after` (exclusive) that are still live."""
    if after is None or after < floor:
        return keys.stream_id(floor)
    return "(" + keys.stream_id(after)


def _position_or_none(mid: Any) -> Position | None:
    try:
        return keys.position(mid) if mid else None
    except ValueError:
        return None


def _cursors(flat: list[str]) -> dict[Conv, Position]:
    """A cursor hash (conversation id -> stream id, flat) as positions; a field that is
    not a conversation's, or a value that is not an id, is skipped."""
    out: dict[Conv, Position] = {}
    for field, mid in zip(flat[::2], flat[1::2], strict=True):
        conv, pos = Conv.parse(field), _position_or_none(mid)
        if conv is not None and pos is not None:
            out[conv] = pos
    return out
