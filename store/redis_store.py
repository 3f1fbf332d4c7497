"""The store on Redis (real, or the embedded fakeredis server).

Commands from many users travel together: posts go through `_Batcher`, which sends every
post requested in one event-loop turn as one pipeline, so ingest costs one round trip per
batch rather than one per message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import hiredis
import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store import keys
from store.base import (
    Account,
    ChatInfo,
    Complaint,
    StoredMessage,
    StoreUnavailable,
    UserState,
    id_tuple,
)
from store.pubsub import Batch, PubSubLink
from store.resp import RespPipeline

__all__ = ["GENERAL", "RedisStore"]

log = logging.getLogger("chat.store")
GENERAL = keys.GENERAL
_LUA = Path(__file__).with_name("lua")
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class _Script:
    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (_LUA / f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


_SCRIPTS = {
    name: _Script(name)
    for name in (
        "post_private",
        "post_many",
        "join",
        "leave",
        "register",
        "complain",
        "advance",
        "count_failure",
    )
}


_MAX_GROUP = 500  # chat messages per post_many call


class _Batcher:
    """Sends everything requested in one loop turn as one pipeline, one batch in flight.

    Chat messages are grouped per chat into one `post_many.lua` call each (a Lua call costs
    Redis about 30 us whatever it does, so per-message calls would cap ingest near 30k/s);
    other script calls go as they are. Each caller gets its own future.
    """

    def __init__(self, pipeline: RespPipeline, load: Callable[[], Awaitable[None]]) -> None:
        self._pipeline = pipeline
        self._load = load
        self._pending: list[tuple[Any, ...]] = []
        self._running = False

    def _push(self, item: tuple[Any, ...]) -> asyncio.Future[Any]:
        self._pending.append(item)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return item[-1]

    def call(self, script: _Script, keys_: list[str], args: list[Any]) -> asyncio.Future[Any]:
        fut = asyncio.get_running_loop().create_future()
        return self._push(("script", script, keys_, args, fut))

    def chat(
        self, chat: str, common: tuple[Any, ...], user: str, name: str, texts: list[str]
    ) -> asyncio.Future[Any]:
        """One user's messages to one chat; resolves to status, value for each text."""
        fut = asyncio.get_running_loop().create_future()
        return self._push(("chat", chat, common, user, name, texts, fut))

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._send(self._calls(batch), retry=True)
                except Exception as exc:  # never leave a caller waiting forever
                    log.exception("post batch failed")
                    _fail([item[-1] for item in batch], exc)
        finally:
            self._running = False

    @staticmethod
    def _calls(
        batch: list[tuple[Any, ...]],
    ) -> list[tuple[_Script, list[Any], list[Any], list[asyncio.Future[Any]]]]:
        """(script, keys, args, futures) per Redis call; chat posts grouped per chat in the
        order of their first message."""
        calls: list[tuple[_Script, list[Any], list[Any], list[asyncio.Future[Any]]]] = []
        groups: dict[str, int] = {}
        many = _SCRIPTS["post_many"]
        for item in batch:
            if item[0] == "script":
                _, script, k, a, fut = item
                calls.append((script, k, a, [fut]))
                continue
            _, chat, common, user, name, texts, fut = item
            at = groups.get(chat)
            if at is None or len(calls[at][2]) >= 6 + 3 * _MAX_GROUP:
                stream, members, clock, *args = common
                groups[chat] = at = len(calls)
                calls.append((many, [stream, members, clock], list(args), []))
            _, k, a, futs = calls[at]
            ban, rate = keys.ban(user), keys.rate(user)
            for text in texts:
                k += (ban, rate)
                a += (user, name, text)
            futs.append((fut, len(texts)))
        return calls

    async def _send(
        self,
        calls: list[tuple[_Script, list[Any], list[Any], list[asyncio.Future[Any]]]],
        retry: bool,
    ) -> None:
        commands = [("EVALSHA", script.sha, len(k), *k, *a) for script, k, a, _ in calls]
        try:
            results = await self._pipeline.execute(commands)
        except StoreUnavailable as exc:
            for *_, futs in calls:
                _fail(futs, exc)
            return
        again = []
        for call, result in zip(calls, results, strict=True):
            futs = call[3]
            if isinstance(result, hiredis.ReplyError):
                if str(result).startswith("NOSCRIPT") and retry:
                    again.append(call)
                else:
                    _fail(futs, ResponseError(str(result)))
            elif call[0] is _SCRIPTS["post_many"]:
                at = 0
                for fut, count in futs:  # each caller gets the results of its own lines
                    if not fut.done():
                        fut.set_result(result[at : at + 2 * count])
                    at += 2 * count
            elif not futs[0].done():
                futs[0].set_result(result)
        if again:
            await self._load()
            await self._send(again, retry=False)


def _fail(futs: list[Any], exc: Exception) -> None:
    for fut in futs:
        if isinstance(fut, tuple):  # (future, line count) of a chat group
            fut = fut[0]
        if not fut.done():
            fut.set_exception(exc)


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        message_ttl: int,
        history: int,
        ban_threshold: int,
        ban_duration: int,
        rate: float,
        burst: int,
        gateway_id: str,
    ) -> None:
        self.url = url
        # Bounded: under a login burst, callers wait for one of these connections instead
        # of failing with "Too many connections"; most traffic is pipelined anyway.
        pool = aredis.BlockingConnectionPool.from_url(
            url,
            max_connections=64,
            timeout=10,
            protocol=2,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=10,
            health_check_interval=30,
        )
        self.redis = aredis.Redis(connection_pool=pool)
        self.ttl_ms = message_ttl * 1000
        self.history_n = history
        self.ban_threshold = ban_threshold
        self.ban_ms = ban_duration * 1000
        self.rate = rate
        self.burst = burst
        self.gateway_id = gateway_id
        self._pipeline = RespPipeline(url)
        self._batcher = _Batcher(self._pipeline, self.load_scripts)

    # -- plumbing -------------------------------------------------------------------------

    async def load_scripts(self) -> None:
        try:
            for script in _SCRIPTS.values():
                await self.redis.script_load(script.source)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _eval(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        script = _SCRIPTS[name]
        try:
            try:
                return await self.redis.evalsha(script.sha, len(keys_), *keys_, *args)
            except NoScriptError:
                await self.load_scripts()
                return await self.redis.evalsha(script.sha, len(keys_), *keys_, *args)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _call(self, coro: Awaitable[Any]) -> Any:
        try:
            return await coro
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    def pubsub(
        self,
        on_messages: Callable[[Batch], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None] | None = None,
    ) -> PubSubLink:
        return PubSubLink(self.url, on_messages, on_reconnect, on_state=on_state)

    async def close(self) -> None:
        self._pipeline.close()
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    def _min_id(self) -> str:
        return f"{max(0, int(time.time() * 1000) - self.ttl_ms)}-0"

    # -- accounts ------------------------------------------------------------------------

    async def get_account(self, user: str) -> Account | None:
        data = await self._call(self.redis.hmget(keys.user(user), "name", "pw"))
        if not data[0]:
            return None
        return Account(data[0], data[1] or "")

    async def register(self, user: str, name: str, password_hash: str) -> bool:
        created = await self._eval(
            "register",
            [
                keys.user(user),
                keys.user_chats(user),
                keys.members(GENERAL),
                keys.chat(GENERAL),
                keys.chats(),
            ],
            [user, name, password_hash, GENERAL],
        )
        return bool(created)

    async def login_failures(self, user: str, address: str) -> tuple[int, int]:
        a, b = await self._call(
            self.redis.mget(keys.fails("nick", user), keys.fails("ip", address))
        )
        return int(a or 0), int(b or 0)

    async def count_login_failure(self, user: str, address: str, window: int) -> None:
        await self._eval(
            "count_failure", [keys.fails("nick", user), keys.fails("ip", address)], [window]
        )

    # -- a user's state ------------------------------------------------------------------

    async def load_user(self, user: str) -> UserState:
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(keys.user_chats(user))
        pipe.smembers(keys.user_peers(user))
        pipe.hgetall(keys.cursors(user))
        chat_keys, peers, cursors = await self._call(pipe.execute())
        chat_keys = sorted(chat_keys)
        pipe = self.redis.pipeline(transaction=False)
        for c in chat_keys:
            pipe.hget(keys.chat(c), "name")
        names = await self._call(pipe.execute()) if chat_keys else []
        chats = {c: (n or c) for c, n in zip(chat_keys, names, strict=False)}
        return UserState(chats=chats, peers=set(peers), cursors=cursors)

    async def backlog(self, user: str, state: UserState) -> list[StoredMessage]:
        """Every message of the user's conversations after their cursor, oldest first."""
        convs = [keys.chat_conv(c) for c in state.chats]
        convs += [keys.dm_conv(user, p) for p in state.peers]
        return await self.read_after(convs, state.cursors)

    async def read_after(self, convs: list[str], after: dict[str, str]) -> list[StoredMessage]:
        """Messages of each conversation after the given id (all live ones if none), merged."""
        if not convs:
            return []
        floor = self._min_id()
        pipe = self.redis.pipeline(transaction=False)
        for conv in convs:
            start = after.get(conv)
            start = floor if start is None or id_tuple(start) < id_tuple(floor) else "(" + start
            pipe.xrange(keys.conv_stream(conv), start, "+")
        results = await self._call(pipe.execute())
        out = [
            StoredMessage(mid, conv, f.get("n", "?"), f.get("r", ""), f.get("t", ""))
            for conv, entries in zip(convs, results, strict=False)
            for mid, f in entries
        ]
        out.sort(key=lambda m: m.key)
        return out

    async def history(self, chat: str, name: str, count: int) -> list[StoredMessage]:
        entries = await self._call(
            self.redis.xrevrange(keys.stream(chat), "+", self._min_id(), count=count)
        )
        conv = keys.chat_conv(chat)
        return [
            StoredMessage(mid, conv, f.get("n", "?"), name, f.get("t", ""))
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
            return

    # -- messages ------------------------------------------------------------------------

    def _post_args(self) -> list[Any]:
        return [self.ttl_ms, self.rate, self.burst]

    def post_chat(
        self, user: str, name: str, chat: str, chat_name: str, texts: list[str]
    ) -> asyncio.Future[list[str]]:
        """Queue one user's chat messages for the next pipeline. Resolves to a flat list:
        status, value for each text, in order (see `PostResult`)."""
        common = (
            keys.stream(chat),
            keys.members(chat),
            keys.clock(),
            chat_name,
            self.ttl_ms,
            self.rate,
            self.burst,
            keys.chat_conv(chat),
            keys.chat_channel(chat),
        )
        return self._batcher.chat(chat, common, user, name, texts)

    def post_private(self, user: str, name: str, peer: str, text: str) -> asyncio.Future[list[str]]:
        conv = keys.dm_conv(user, peer)
        return self._batcher.call(
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
                *self._post_args(),
                conv,
                keys.user_channel(user),
                keys.user_channel(peer),
            ],
        )

    # -- chats ---------------------------------------------------------------------------

    async def join(self, user: str, chat: str, typed: str, origin: str) -> tuple[bool, str]:
        added, name = await self._eval(
            "join",
            [keys.chat(chat), keys.members(chat), keys.user_chats(user), keys.chats()],
            [user, chat, typed, keys.user_channel(user), origin],
        )
        return bool(added), name

    async def leave(self, user: str, chat: str, origin: str) -> tuple[bool, str]:
        removed, name = await self._eval(
            "leave",
            [keys.chat(chat), keys.members(chat), keys.user_chats(user), keys.chats()],
            [user, chat, keys.user_channel(user), origin],
        )
        return bool(removed), name

    async def chat_name(self, chat: str) -> str | None:
        return await self._call(self.redis.hget(keys.chat(chat), "name"))

    async def _online_users(self) -> set[str]:
        gws = await self._call(self.redis.smembers(keys.gateways()))
        if not gws:
            return set()
        gws = sorted(gws)
        pipe = self.redis.pipeline(transaction=False)
        for gw in gws:
            pipe.exists(keys.gateway_alive(gw))
            pipe.smembers(keys.gateway_online(gw))
        res = await self._call(pipe.execute())
        online: set[str] = set()
        dead = []
        for i, gw in enumerate(gws):
            if res[2 * i]:
                online |= res[2 * i + 1]
            else:
                dead.append(gw)
        if dead:
            await self._call(self.redis.srem(keys.gateways(), *dead))
        return online

    async def active_chats(self) -> list[ChatInfo]:
        online = await self._online_users()
        chat_keys = sorted(await self._call(self.redis.smembers(keys.chats())))
        pipe = self.redis.pipeline(transaction=False)
        for c in chat_keys:
            pipe.hget(keys.chat(c), "name")
            pipe.scard(keys.members(c))
            if online:
                pipe.smismember(keys.members(c), sorted(online))
        res = await self._call(pipe.execute())
        step = 3 if online else 2
        infos = []
        for i, c in enumerate(chat_keys):
            name, count = res[step * i], res[step * i + 1]
            on = sum(res[step * i + 2]) if online else 0
            if count:
                infos.append(ChatInfo(name or c, int(count), int(on)))
        infos.sort(key=lambda x: (-x.members, x.name.casefold()))
        return infos

    async def who(self, chat: str) -> list[str]:
        online = await self._online_users()
        if not online:
            return []
        users = sorted(online)
        flags = await self._call(self.redis.smismember(keys.members(chat), users))
        present = [u for u, f in zip(users, flags, strict=False) if f]
        if not present:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for u in present:
            pipe.hget(keys.user(u), "name")
        names = await self._call(pipe.execute())
        return sorted((n or u for u, n in zip(present, names, strict=False)), key=str.casefold)

    async def is_member(self, user: str, chat: str) -> bool:
        return bool(await self._call(self.redis.sismember(keys.members(chat), user)))

    # -- complaints ----------------------------------------------------------------------

    async def complain(self, user: str, target: str) -> Complaint:
        res = await self._eval(
            "complain",
            [keys.complaints(target), keys.ban(target), keys.user(target)],
            [user, self.ban_threshold, self.ban_ms, keys.user_channel(target)],
        )
        status = res[0]
        if status == "nouser":
            return Complaint(status)
        if status == "banned":
            return Complaint(status, until_ms=int(res[1]), name=res[2])
        if status == "ban":
            return Complaint(status, count=int(res[1]), until_ms=int(res[2]), name=res[3])
        return Complaint(status, count=int(res[1]), name=res[2])

    async def ban_until(self, user: str) -> int | None:
        value = await self._call(self.redis.get(keys.ban(user)))
        return int(value) if value else None

    # -- presence ------------------------------------------------------------------------

    async def heartbeat(self, online: set[str], ttl: int = 15) -> None:
        gw = self.gateway_id
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(keys.gateways(), gw)
        pipe.set(keys.gateway_alive(gw), str(int(time.time())), ex=ttl)
        pipe.delete(keys.gateway_online(gw))
        if online:
            pipe.sadd(keys.gateway_online(gw), *online)
            pipe.expire(keys.gateway_online(gw), ttl)
        await self._call(pipe.execute())

    async def set_online(self, user: str, online: bool) -> None:
        k = keys.gateway_online(self.gateway_id)
        if online:
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(k, user)
            pipe.expire(k, 15)
            await self._call(pipe.execute())
        else:
            await self._call(self.redis.srem(k, user))

    async def gateway_gone(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.srem(keys.gateways(), self.gateway_id)
        pipe.delete(keys.gateway_alive(self.gateway_id), keys.gateway_online(self.gateway_id))
        await self._call(pipe.execute())
