"""The store on Redis (standalone, or the embedded fakeredis server): `Store` implemented.

Posts go through the `Batcher` (one pipeline per loop turn on a dedicated RESP2
connection); everything else uses redis-py's asyncio client. Every Redis error that means
"not reachable" becomes `StoreUnavailable`; script replies become the contract's types here
and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store import keys
from store.batcher import Batcher, ChatTarget
from store.contract import (
    ACCEPTED,
    Account,
    AuditEntry,
    Backlog,
    BanInfo,
    ChatInfo,
    ChatList,
    Complaint,
    ComplaintStatus,
    JoinStatus,
    LoginCheck,
    LoginGate,
    LoginLimits,
    Membership,
    Message,
    NewName,
    OnlineList,
    PostResult,
    PostStatus,
    Registration,
    StoreEvent,
    StoreNoReply,
    StoreRefused,
    StoreUnavailable,
    UserSeen,
    UserState,
    id_key,
)
from store.pubsub import PubSubLink
from store.resp import RespPipeline, refusal
from store.scripts import SCRIPTS as _SCRIPTS

__all__ = ["GENERAL", "PRESENCE_TTL", "RedisStore"]

log = logging.getLogger("chat.store")
GENERAL = keys.GENERAL
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
#: How long a gateway's union of online users is kept (it is rebuilt on every use).
SCRATCH_MS = 5000
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
    ) -> None:
        self.url = url
        pool = aredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=POOL_TIMEOUT,
            protocol=2,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=reply_timeout,
            health_check_interval=HEALTH_CHECK_INTERVAL,
        )
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
        self._pipeline = RespPipeline(url, reply_timeout)
        self._batcher = Batcher(self._pipeline, _SCRIPTS["post_many"], self.load_scripts)

    # -- plumbing -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.load_scripts()

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

    @staticmethod
    async def _call(coro: Awaitable[T] | Coroutine[Any, Any, T]) -> T:
        try:
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
    ) -> PubSubLink:
        return PubSubLink(self.url, on_events, on_reconnect, on_state)

    async def close(self) -> None:
        self._pipeline.close()
        await self.redis.aclose()

    def _min_id(self) -> str:
        return f"{max(0, int(time.time() * 1000) - self.ttl_ms)}-0"

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
        created = await self._eval(
            "register",
            [
                keys.user(user),
                keys.user_chats(user),
                keys.members(GENERAL),
                keys.chat(GENERAL),
                keys.chat_sizes(),
                keys.seen(),
                keys.registrations(address),
                keys.skeleton(skeleton),
            ],
            [user, name, password_hash, GENERAL, self.max_registrations if address else 0],
        )
        if created == 1:
            return Registration.CREATED
        if created == -1:
            return Registration.LIMITED
        return Registration.TAKEN if created == 0 else Registration.LOOK_ALIKE

    async def seen(self, user: str, address: str) -> None:
        now = int(time.time() * 1000)
        known = keys.known_addresses(user)
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(keys.login_fails(user, address))
        pipe.zrem(keys.address_fails(address), user)
        pipe.zadd(known, {address: now})
        pipe.zremrangebyrank(known, 0, -KNOWN_ADDRESSES - 1)
        pipe.expire(known, ADDRESS_MEMORY)
        if self.ban_address_memory:
            key = keys.user_addresses(user)
            pipe.zadd(key, {address: now})
            pipe.zremrangebyrank(key, 0, -self.ban_address_memory - 1)
            pipe.expire(key, ADDRESS_MEMORY)
        await self._call(pipe.execute())

    async def login_gate(
        self, user: str, address: str, limits: LoginLimits, *, take: bool
    ) -> LoginCheck:
        gate, wait_ms = await self._eval(
            "login_gate",
            [
                keys.login_fails(user, address),
                keys.nick_fails(user),
                keys.address_fails(address),
                keys.known_addresses(user),
            ],
            [
                user,
                address,
                limits.window,
                limits.per_pair,
                limits.per_nick,
                limits.nicks_per_address,
                ADDRESS_MEMORY * 1000,
                1 if take else 0,
            ],
        )
        return LoginCheck(LoginGate(gate), int(wait_ms))

    async def set_password(self, user: str, password_hash: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
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

    async def check_token(self, user: str, token_hash: str) -> str | None:
        name = await self._eval("token_check", [keys.tokens(user), keys.user(user)], [token_hash])
        return str(name) if name else None

    async def revoke_token(self, user: str, token_hash: str) -> None:
        await self._call(self.redis.hdel(keys.tokens(user), token_hash))

    # -- a user's state ------------------------------------------------------------------

    async def load_user(self, user: str) -> UserState:
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(keys.user_chats(user))
        pipe.smembers(keys.user_peers(user))
        pipe.hgetall(keys.cursors(user))
        pipe.zadd(keys.seen(), {user: int(time.time() * 1000)})  # a login: seen now
        pipe.get(keys.ban.__wrapped__(user))  # not cached: idle users' logins would fill it
        chat_set, peers, cursors, _, ban = await self._call(pipe.execute())
        chat_keys = sorted(chat_set)
        pipe = self.redis.pipeline(transaction=False)
        for c in chat_keys:
            pipe.hget(keys.chat(c), "name")
        names = await self._call(pipe.execute()) if chat_keys else []
        chats = {c: (n or c) for c, n in zip(chat_keys, names, strict=False)}
        return UserState(
            chats=chats,
            peers=set(peers),
            cursors=cursors,
            banned_until_ms=int(ban) if ban else None,
        )

    async def backlog(self, user: str, state: UserState, limit: int) -> Backlog:
        """The newest `limit` messages of the user's conversations after their cursors,
        oldest first, and how many older unread ones each conversation left out.

        Each conversation is read newest first with COUNT limit + 1, BACKLOG_GROUP
        conversations at a time, keeping only the newest `limit` overall: memory stays
        bounded whatever was missed."""
        convs = [keys.chat_conv(c) for c in state.chats]
        convs += [keys.dm_conv(user, p) for p in state.peers]
        floor = self._min_id()
        kept: list[Message] = []
        cut: dict[str, int] = {}
        for at in range(0, len(convs), BACKLOG_GROUP):
            group = convs[at : at + BACKLOG_GROUP]
            pipe = self.redis.pipeline(transaction=False)
            for conv in group:
                start = state.cursors.get(conv)
                low = floor if start is None or id_key(start) < id_key(floor) else "(" + start
                pipe.xrevrange(keys.conv_stream(conv), "+", low, count=limit + 1)
            results = await self._call(pipe.execute())
            for conv, entries in zip(group, results, strict=False):
                if len(entries) > limit:  # one more than shown exists: say so
                    cut[conv] = len(entries) - limit
                    entries = entries[:limit]
                kept += [
                    Message(mid, id_key(mid), conv, f.get("n", "?"), f.get("r", ""), f.get("t", ""))
                    for mid, f in entries
                ]
            kept.sort(key=lambda m: m.key)
            if len(kept) > limit:
                for m in kept[: len(kept) - limit]:
                    cut[m.conv] = cut.get(m.conv, 0) + 1
                kept = kept[len(kept) - limit :]
        return Backlog(kept, cut)

    async def read_after(self, convs: list[str], after: dict[str, str]) -> list[Message]:
        """Messages of each conversation after the given id (all live ones if none), merged
        in id order."""
        if not convs:
            return []
        floor = self._min_id()
        pipe = self.redis.pipeline(transaction=False)
        for conv in convs:
            start = after.get(conv)
            start = floor if start is None or id_key(start) < id_key(floor) else "(" + start
            pipe.xrange(keys.conv_stream(conv), start, "+")
        results = await self._call(pipe.execute())
        out = [
            Message(mid, id_key(mid), conv, f.get("n", "?"), f.get("r", ""), f.get("t", ""))
            for conv, entries in zip(convs, results, strict=False)
            for mid, f in entries
        ]
        out.sort(key=lambda m: m.key)
        return out

    async def history(self, chat: str, name: str, count: int) -> list[Message]:
        entries = await self._call(
            self.redis.xrevrange(keys.stream(chat), "+", self._min_id(), count=count)
        )
        conv = keys.chat_conv(chat)
        return [
            Message(mid, id_key(mid), conv, f.get("n", "?"), name, f.get("t", ""))
            for mid, f in reversed(entries)
        ]

    async def advance_cursors(self, updates: dict[str, dict[str, str]]) -> None:
        """Flush shown positions: user -> {conversation: last shown id}, one round trip."""
        if not updates:
            return
        script = _SCRIPTS["advance"]
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for user, convs in updates.items():
                args: list[Any] = [self.ttl_ms]
                for conv, mid in convs.items():
                    args += [conv, mid]
                pipe.evalsha(script.sha, 1, keys.cursors(user), *args)
            results = await self._call(pipe.execute(raise_on_error=False))
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in results):
                await self.load_scripts()
                continue
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise _refused(errors[0]) or errors[0]
            return

    # -- messages ------------------------------------------------------------------------

    def post_chat(
        self, user: str, name: str, chat: str, chat_name: str, texts: list[str]
    ) -> asyncio.Future[list[PostResult]]:
        """Queue one user's chat messages for the next pipeline; one result per text."""
        target = ChatTarget(
            chat,
            (keys.stream(chat), keys.members(chat), keys.clock()),
            (
                chat_name,
                self.ttl_ms,
                self.rate,
                self.burst,
                keys.chat_conv(chat),
                keys.chat_channel(chat),
                self.max_stored,
            ),
        )
        return self._batcher.chat(target, user, name, texts, _post_result)

    def post_private(
        self, user: str, name: str, peer: str, text: str
    ) -> asyncio.Future[PostResult]:
        conv = keys.dm_conv(user, peer)
        raw = self._batcher.call(
            _SCRIPTS["post_private"],
            [
                keys.conv_stream(conv),
                keys.ban(user),
                keys.rate(user),
                keys.user(peer),
                keys.clock(),
                keys.user_peers(user),
                keys.user_peers(peer),
            ],
            [
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
            ],
        )
        return _mapped(
            raw, lambda r: _post_result(r[0], r[1] if len(r) > 1 else ""), lambda: _UNCONFIRMED
        )

    # -- chats ---------------------------------------------------------------------------

    async def join(self, user: str, chat: str, typed: str, origin: str) -> Membership:
        status, name = await self._eval(
            "join",
            [
                keys.chat(chat),
                keys.members(chat),
                keys.user_chats(user),
                keys.chat_sizes(),
                keys.creations(user),
            ],
            [
                user,
                chat,
                typed,
                keys.user_channel(user),
                origin,
                self.max_user_chats,
                self.max_chats,
                self.chat_creations,
            ],
        )
        if status in ("joined", "already"):
            return Membership(status == "joined", name)
        return Membership(False, typed, JoinStatus(status))

    async def leave(self, user: str, chat: str, origin: str) -> Membership:
        removed, name = await self._eval(
            "leave",
            [keys.chat(chat), keys.members(chat), keys.user_chats(user), keys.chat_sizes()],
            [user, chat, keys.user_channel(user), origin],
        )
        return Membership(bool(removed), name)

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

    async def _online_union(self) -> str | None:
        """Store the union of every live gateway's online users under this gateway's
        scratch key (in Redis: nothing is read here) and return that key; None when no
        gateway is alive."""
        live = [keys.gateway_online(gw) for gw in await self.live_gateways()]
        if not live:
            return None
        scratch = keys.gateway_scratch(self.gateway_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.sunionstore(scratch, live)
        pipe.pexpire(scratch, SCRATCH_MS)
        await self._call(pipe.execute())
        return scratch

    async def active_chats(self, limit: int) -> ChatList:
        """The `limit` largest chats, and how many exist: reads `limit` chats, not all."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(keys.chat_sizes(), 0, limit - 1, withscores=True)
        pipe.zcard(keys.chat_sizes())
        top, total = await self._call(pipe.execute())
        if not top:
            return ChatList([], int(total))
        online = await self._online_union()
        pipe = self.redis.pipeline(transaction=True)  # one scratch key: read it at once
        for c, _ in top:
            pipe.hget(keys.chat(c), "name")
            if online:
                pipe.execute_command("SINTERCARD", 2, keys.members(c), online)
        res = await self._call(pipe.execute())
        step = 2 if online else 1
        infos = [
            ChatInfo(res[step * i] or c, int(count), int(res[step * i + 1]) if online else 0)
            for i, (c, count) in enumerate(top)
        ]
        infos.sort(key=lambda x: (-x.members, x.name.casefold()))
        return ChatList(infos, int(total))

    async def who(self, chat: str, limit: int) -> OnlineList:
        """At most `limit` of the chat's online members (by name), and how many there are.
        Redis intersects the sets; only `limit` names travel."""
        online = await self._online_union()
        if not online:
            return OnlineList([], 0)
        found = f"{online}:who"
        pipe = self.redis.pipeline(transaction=True)
        pipe.sinterstore(found, [keys.members(chat), online])
        pipe.srandmember(found, limit)
        pipe.delete(found)
        total, present, _ = await self._call(pipe.execute())
        if not present:
            return OnlineList([], 0)
        pipe = self.redis.pipeline(transaction=False)
        for u in present:
            pipe.hget(keys.user(u), "name")
        names = await self._call(pipe.execute())
        shown = sorted((n or u for u, n in zip(present, names, strict=False)), key=str.casefold)
        return OnlineList(shown, int(total))

    async def is_member(self, user: str, chat: str) -> bool:
        return bool(await self._call(self.redis.sismember(keys.members(chat), user)))

    # -- complaints ----------------------------------------------------------------------

    async def complain(self, user: str, target: str, address: str) -> Complaint:
        res = await self._eval(
            "complain",
            [
                keys.complaints(target),
                keys.ban(target),
                keys.user(target),
                keys.user(user),
                keys.complaints_by(user),
                keys.complaint_addresses(target),
                keys.user_addresses(target),
                keys.held_addresses(),
                keys.bans(),
            ],
            [
                user,
                self.ban_threshold,
                self.ban_ms,
                keys.user_channel(target),
                address,
                self.complaint_min_age_ms,
                self.complaints_per_hour,
                self.complaints_per_address,
                target,
            ],
        )
        status = ComplaintStatus(res[0])
        if status is ComplaintStatus.NO_USER:
            return Complaint(status)
        if status in (ComplaintStatus.TOO_NEW, ComplaintStatus.RATE):
            return Complaint(status, wait_ms=int(res[1]), name=res[2])
        if status is ComplaintStatus.ALREADY_BANNED:
            return Complaint(status, until_ms=int(res[1]), name=res[2])
        if status is ComplaintStatus.BANNED:
            return Complaint(status, count=int(res[1]), until_ms=int(res[2]), name=res[3])
        return Complaint(status, count=int(res[1]), name=res[2])

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
                keys.bans(),
                keys.complaints(user),
                keys.complaint_addresses(user),
            ],
            [user, duration * 1000, keys.user_channel(user)],
        )
        if res[0] == "nouser":
            return None
        return BanInfo(user, str(res[2]), int(res[1]))

    async def unban(self, user: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.exists(keys.ban(user))
        pipe.delete(keys.ban(user), keys.complaints(user), keys.complaint_addresses(user))
        pipe.zrem(keys.bans(), user)
        was, _, _ = await self._call(pipe.execute())
        return bool(was)

    async def kick(self, user: str) -> None:
        await self._call(self.redis.publish(keys.user_channel(user), "K"))

    async def bans(self) -> list[BanInfo]:
        now = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(keys.bans(), "-inf", now)
        pipe.zrangebyscore(keys.bans(), now, "+inf", withscores=True)
        _, found = await self._call(pipe.execute())
        names = await self._names([u for u, _ in found])
        return [BanInfo(u, names[u], int(ms)) for u, ms in found]

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
        pipe.delete(
            keys.tokens(user),
            keys.user_addresses(user),
            keys.complaints_by(user),
            keys.complaint_addresses(user),
        )
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
        return int(
            await self._eval(
                "forget",
                [
                    keys.seen(),
                    keys.chat_sizes(),
                    keys.user(u),
                    keys.user_chats(u),
                    keys.user_peers(u),
                    keys.cursors(u),
                    keys.ban(u),
                    keys.rate(u),
                    keys.complaints(u),
                    keys.tokens(u),
                    keys.moderators(),
                    keys.bans(),
                    keys.user_addresses(u),
                    keys.known_addresses(u),
                ],
                [u, cutoff, keys.chat_prefix()],
            )
        )

    async def audit(self, fields: dict[str, str], keep: int) -> None:
        await self._call(self.redis.xadd(keys.audit(), fields, maxlen=keep, approximate=True))

    async def audit_log(self, since_ms: int, limit: int) -> list[AuditEntry]:
        entries = await self._call(
            self.redis.xrevrange(keys.audit(), "+", f"{since_ms}-0", count=limit)
        )
        return [AuditEntry(mid, id_key(mid)[0], dict(f)) for mid, f in reversed(entries)]

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
        counted up to `cap`. No union of every online user is built (`who` builds one:
        O(everyone online) per call, about 100 ms of Redis at 50,000): a chat of at most
        SMALL_CHAT members is read and checked against each live gateway's online set
        (exact); a larger one is counted with SINTERCARD ... LIMIT per gateway and its
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
                pipe.execute_command("SINTERCARD", 2, members, online_key, "LIMIT", cap)
                pipe.srandmember(online_key, 2 * limit)
            pipe.srandmember(members, 2 * limit)
            res = await self._call(pipe.execute())
            counted = sum(int(n) for n in res[0:-1:2])
            candidates = sorted({u for drawn in res[1:-1:2] for u in drawn} | set(res[-1]))
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
            for online_key in live:
                pipe.execute_command("SINTERCARD", 2, keys.members(c), online_key, "LIMIT", cap)
        res = await self._call(pipe.execute())
        step = 1 + len(live)
        infos = []
        for i, (c, count) in enumerate(top):
            online = sum(int(n) for n in res[step * i + 1 : step * (i + 1)])
            infos.append(ChatInfo(res[step * i] or c, int(count), min(online, cap), online >= cap))
        infos.sort(key=lambda x: (-x.members, x.name.casefold()))
        return ChatList(infos, int(total))

    # -- logins in fewer round trips (a reconnect storm is thousands of them) ---------------

    async def token_login(
        self, user: str, address: str, limits: LoginLimits, token_hash: str
    ) -> tuple[LoginCheck, str | None]:
        """`login_gate(take=True)` and `check_token` in one round trip. The pipeline runs
        them in order, so the attempt is counted before the token is checked; the token's
        answer is used only if the gate let the attempt through (checking it costs nothing
        else: at most an expired token is removed)."""
        gate, check = _SCRIPTS["login_gate"], _SCRIPTS["token_check"]
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            pipe.evalsha(
                gate.sha,
                4,
                keys.login_fails(user, address),
                keys.nick_fails(user),
                keys.address_fails(address),
                keys.known_addresses(user),
                user,
                address,
                limits.window,
                limits.per_pair,
                limits.per_nick,
                limits.nicks_per_address,
                ADDRESS_MEMORY * 1000,
                1,
            )
            pipe.evalsha(check.sha, 2, keys.tokens(user), keys.user(user), token_hash)
            res = await self._call(pipe.execute(raise_on_error=False))
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in res):
                await self.load_scripts()
                continue
            errors = [r for r in res if isinstance(r, Exception)]
            if errors:
                raise _refused(errors[0]) or errors[0]
            (code, wait_ms), name = res
            return LoginCheck(LoginGate(code), int(wait_ms)), (str(name) if name else None)
        raise AssertionError("unreachable")

    async def enter(self, user: str, address: str) -> UserState:
        """`seen` and `load_user` in one round trip, and the chats' display names from a
        short-lived cache (every user of a 50,000-member #general asked for its name)."""
        now = int(time.time() * 1000)
        known = keys.known_addresses(user)
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(keys.login_fails(user, address))
        pipe.zrem(keys.address_fails(address), user)
        pipe.zadd(known, {address: now})
        pipe.zremrangebyrank(known, 0, -KNOWN_ADDRESSES - 1)
        pipe.expire(known, ADDRESS_MEMORY)
        if self.ban_address_memory:
            held = keys.user_addresses(user)
            pipe.zadd(held, {address: now})
            pipe.zremrangebyrank(held, 0, -self.ban_address_memory - 1)
            pipe.expire(held, ADDRESS_MEMORY)
        first = len(pipe)
        pipe.smembers(keys.user_chats(user))
        pipe.smembers(keys.user_peers(user))
        pipe.hgetall(keys.cursors(user))
        pipe.zadd(keys.seen(), {user: now})
        pipe.get(keys.ban.__wrapped__(user))
        res = await self._call(pipe.execute())
        chat_set, peers, cursors, _, ban = res[first:]
        return UserState(
            chats=await self._chat_names(sorted(chat_set)),
            peers=set(peers),
            cursors=cursors,
            banned_until_ms=int(ban) if ban else None,
        )

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
            pipe = self.redis.pipeline(transaction=False)
            for c in missing:
                pipe.hget(keys.chat(c), "name")
            for c, n in zip(missing, await self._call(pipe.execute()), strict=True):
                names[c] = n or c
                if n:
                    if len(cache) >= CHAT_NAME_CACHE:
                        cache.clear()
                    cache[c] = (n, now + CHAT_NAME_TTL)
        return {c: names[c] for c in chats}

    async def set_online_many(self, users: Sequence[str]) -> None:
        """`set_online` for every user that logged in during one loop turn: one pipeline."""
        k = keys.gateway_online(self.gateway_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(k, *users)
        pipe.expire(k, PRESENCE_TTL)
        await self._call(pipe.execute())


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
