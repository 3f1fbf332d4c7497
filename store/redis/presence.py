"""Presence: which gateways are live, who is online on each, the per-address connection
counts, the bounded /who and /get_chats counts, and what a gateway writes back after
Redis lost its data (the store epoch, memberships)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Collection, Sequence
from typing import TypeVar

from redis.exceptions import ResponseError

from store import keys
from store.contract import ChatInfo, ChatList, OnlineList, StoreRefused
from store.redis.part import Part
from store.redis.policy import (
    ADDRESS_COUNT_TTL_MS,
    EXACT_ONLINE,
    PRESENCE_TTL,
    SCAN_LIMIT,
    SCAN_STEP,
    SMALL_CHAT,
)

log = logging.getLogger("chat.store")

#: Members per command when the online set or last-seen times are written: one command
#: over thousands of members holds Redis's only thread for tens of milliseconds.
ONLINE_CHUNK = 1000
T = TypeVar("T")
#: Every this many heartbeats the online set is built anew and swapped in, whatever the
#: gateway believes it holds (a minute at 5 s a beat).
ONLINE_REBUILD_EVERY = 12


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _adds(key: str, users: set[str]) -> list[tuple[object, ...]]:
    """SADDs of `users` to the set `key`, ONLINE_CHUNK a command, the first followed by
    an EXPIRE: a gateway killed while the rest are written leaves nothing without one."""
    adds: list[tuple[object, ...]] = [
        ("SADD", key, *c) for c in _chunks(sorted(users), ONLINE_CHUNK)
    ]
    return [*adds[:1], ("EXPIRE", key, PRESENCE_TTL), *adds[1:]] if adds else []


class Presence(Part):
    """Live gateways, who is online, bounded counts, and recovery after a data loss."""

    #: The online set as this gateway last wrote it; None: not known (see `heartbeat`).
    _online_written: set[str] | None = None
    _beats = 0
    _no_swap = False  # the ACL refused UNLINK or RENAME (see `_rebuild`)

    async def online_on(self, user: str, gateways: Sequence[str]) -> bool:
        if not gateways:
            return False
        pipe = self.link.pipe()
        for gw in gateways:
            pipe.sismember(keys.gateway_online(gw), user)
        return any(await self.link.call(pipe.execute()))

    async def live_gateways(self) -> list[str]:
        """The gateways whose heartbeat is current (dead ones are dropped from the set)."""
        gws = sorted(await self.link.call(self.redis.smembers(keys.gateways())))
        if not gws:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for gw in gws:
            pipe.exists(keys.gateway_alive(gw))
        alive = await self.link.call(pipe.execute())
        dead = [gw for gw, ok in zip(gws, alive, strict=True) if not ok]
        if dead:
            await self.link.call(self.redis.srem(keys.gateways(), *dead))
        return [gw for gw, ok in zip(gws, alive, strict=True) if ok]

    async def count_address(self, address: str, change: int, live: Sequence[str]) -> int:
        """Count a connection from `address` opened (+1) or closed (-1) on this gateway;
        returns the address's connections on the `live` gateways after the change."""
        return int(
            await self.link.eval(
                "address_count",
                [keys.address_connections(address)],
                [self.policy.gateway_id, change, ADDRESS_COUNT_TTL_MS, *live],
            )
        )

    async def heartbeat(self, online: set[str], seen: Collection[str] | None = None) -> None:
        """Renew this gateway's live mark and online set. Only what changed since the
        last beat is written, ONLINE_CHUNK members a command: rewriting the whole set at
        every beat (DEL, then one SADD of every user) held Redis's only thread 15-300 ms
        for a gateway of 16,667 users, and everyone on every gateway waited."""
        gw = self.policy.gateway_id
        seen = online if seen is None else seen
        now = int(time.time() * 1000)
        k = keys.gateway_online(gw)
        commands: list[tuple[object, ...]] = [
            ("ZADD", keys.seen(), "XX", *pairs)  # online users count as seen
            for pairs in _chunks([x for u in seen for x in (str(now), u)], 2 * ONLINE_CHUNK)
        ]
        commands += [
            ("SADD", keys.gateways(), gw),
            ("SET", keys.gateway_alive(gw), str(now // 1000), "EX", PRESENCE_TTL),
            ("SCARD", k),
            ("EXPIRE", k, PRESENCE_TTL),
        ]
        written, self._online_written = self._online_written, None  # unknown until done
        *_, size, there = await self.link.run(commands)  # EXPIRE: 0 if the set is gone
        self._beats += 1
        if written is not None and size < len(written):  # it lost members: a set made
            written = None  # anew by logins after Redis lost its data, or after it expired
        changes: list[tuple[object, ...]] = []
        if not there:  # never written, emptied, or lost with Redis' data: all of it
            changes = _adds(k, online)
        elif written is not None and self._beats % ONLINE_REBUILD_EVERY:
            changes = _adds(k, online - written)
            changes += [("SREM", k, *c) for c in _chunks(sorted(written - online), ONLINE_CHUNK)]
        else:  # not known (a beat failed part-way), or now and then: a new set, swapped in
            await self._rebuild(k, online)
        if changes:
            await self.link.run([*changes, ("EXPIRE", k, PRESENCE_TTL)])
        self._online_written = set(online)

    async def _rebuild(self, k: str, online: set[str]) -> None:
        """The online set built aside and swapped in: UNLINK frees the old one off Redis's
        main thread (a RENAME over it would not). Under an ACL without UNLINK and RENAME
        (docs/REDIS.md before session 9) the set is rewritten in place, once logged."""
        fresh = keys.gateway_online_next(self.policy.gateway_id)
        if not self._no_swap:
            try:
                swap: tuple[object, ...] = ("RENAME", fresh, k) if online else ("UNLINK", k)
                await self.link.run([("DEL", fresh), *_adds(fresh, online), swap])
                return
            except (ResponseError, StoreRefused) as exc:
                if "NOPERM" not in str(exc):
                    raise
                self._no_swap = True
                log.warning(
                    "event=redis_acl_missing commands=unlink,rename error=%r hint=%r",
                    str(exc),
                    "add +unlink +rename to the gateway's ACL (docs/REDIS.md)",
                )
                await self.link.run([("DEL", fresh)])
        await self.link.run([("DEL", k), *_adds(k, online)])

    async def set_online(self, user: str, online: bool) -> None:
        await (self.set_online_many if online else self.set_offline_many)([user])

    async def set_offline_many(self, users: Sequence[str]) -> None:
        """`set_online(user, False)` for every user who left during one loop turn: one
        SREM on the hot-path connection, not a redis-py call each (bench/logins.py). On
        failure they stay in `_online_written`: the next beat removes them."""
        k = keys.gateway_online(self.policy.gateway_id)
        await self.link.run([("SREM", k, *c) for c in _chunks(list(users), ONLINE_CHUNK)])
        if self._online_written is not None:
            self._online_written.difference_update(users)

    def _written(self, *users: str) -> None:
        """Users now in the online set, so that a beat without them takes them out."""
        if self._online_written is not None:
            self._online_written.update(users)

    async def set_online_many(self, users: Sequence[str]) -> None:
        """`set_online` for every user that logged in during one loop turn: one pipeline.
        The gateway's own live mark is renewed if it is missing (a store emptied under a
        running gateway): users who log in count as online at once, not only after the
        next heartbeat."""
        gw = self.policy.gateway_id
        k = keys.gateway_online(gw)
        await self.link.run(
            [
                *(("SADD", k, *c) for c in _chunks(list(users), ONLINE_CHUNK)),
                ("EXPIRE", k, PRESENCE_TTL),
                ("SADD", keys.gateways(), gw),
                ("SET", keys.gateway_alive(gw), str(int(time.time())), "EX", PRESENCE_TTL, "NX"),
            ]
        )
        self._written(*users)

    async def gateway_gone(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.srem(keys.gateways(), self.policy.gateway_id)
        pipe.unlink(  # the online set may hold thousands: freed off Redis's main thread
            keys.gateway_alive(self.policy.gateway_id), keys.gateway_online(self.policy.gateway_id)
        )
        await self.link.call(pipe.execute())

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
        size = int(await self.link.call(self.redis.scard(members)))
        if size == 0:
            return OnlineList([], 0)
        if size <= SMALL_CHAT:
            users = sorted(await self.link.call(self.redis.smembers(members)))
            pipe = self.redis.pipeline(transaction=False)
            for online_key in live:
                pipe.smismember(online_key, users)
            found = await self.link.call(pipe.execute())
            online = [u for i, u in enumerate(users) if any(f[i] for f in found)]
            total, capped = len(online), False
        else:
            pipe = self.redis.pipeline(transaction=False)
            for online_key in live:
                pipe.srandmember(online_key, 2 * limit)
            pipe.srandmember(members, 2 * limit)
            res = await self.link.call(pipe.execute())
            counts = [await self._intercard(members, k, cap) for k in live]
            counted = sum(n for n, _ in counts)
            if not all(complete for _, complete in counts):
                counted = max(counted, cap)  # walked as far as allowed: at least this many
            candidates = sorted({u for drawn in res[:-1] for u in drawn} | set(res[-1]))
            pipe = self.redis.pipeline(transaction=False)
            pipe.smismember(members, candidates)
            for online_key in live:
                pipe.smismember(online_key, candidates)
            checks = await self.link.call(pipe.execute())
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
        if not self.link.cluster:
            n = await self.link.call(
                self.redis.execute_command("SINTERCARD", 2, a, b, "LIMIT", cap)
            )
            return int(n), True
        pipe = self.link.pipe()
        pipe.scard(a)
        pipe.scard(b)
        size_a, size_b = await self.link.call(pipe.execute())
        walk, probe = (a, b) if int(size_a) <= int(size_b) else (b, a)
        found = walked = 0
        cursor = 0
        while True:
            cursor, batch = await self.link.call(self.redis.sscan(walk, cursor, count=SCAN_STEP))
            if batch:
                hits = await self.link.call(self.redis.smismember(probe, batch))
                found += sum(1 for hit in hits if hit)
                walked += len(batch)
            if int(cursor) == 0:
                return min(found, cap), True
            if found >= cap:
                return cap, True
            if walked >= SCAN_LIMIT:
                return found, False

    async def active_chats_bounded(self, limit: int, cap: int) -> ChatList:
        """The `limit` largest chats and how many exist, each with its online members:
        exact for a chat of at most EXACT_ONLINE members (its members checked against each
        live gateway's online set: a user on two gateways counts once), else counted up
        to `cap` per live gateway (SINTERCARD ... LIMIT: no union of everyone online is
        built; a user online on two gateways may count twice, never past the members)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(keys.chat_sizes(), 0, limit - 1, withscores=True)
        pipe.zcard(keys.chat_sizes())
        top, total = await self.link.call(pipe.execute())
        if not top:
            return ChatList([], int(total))
        live = await self._live_online_keys()
        pipe = self.redis.pipeline(transaction=False)
        for c, _ in top:
            pipe.hget(keys.chat(c), "name")
        names = await self.link.call(pipe.execute())
        exact = await self._online_of_small([c for c, n in top if int(n) <= EXACT_ONLINE], live)
        infos = []
        for (c, count), name in zip(top, names, strict=True):
            if c in exact:
                online, capped = min(exact[c], cap), exact[c] >= cap
            else:
                counts = [await self._intercard(keys.members(c), k, cap) for k in live]
                online = min(sum(n for n, _ in counts), int(count))
                capped = online >= cap or not all(complete for _, complete in counts)
                online = min(online, cap)
            infos.append(ChatInfo(name or c, int(count), online, capped))
        infos.sort(key=lambda x: (-x.members, x.name.casefold()))
        return ChatList(infos, int(total))

    async def _online_of_small(self, chats: list[str], live: list[str]) -> dict[str, int]:
        """Online members of each of `chats` (small ones), each user once: two pipelines."""
        if not chats or not live:
            return dict.fromkeys(chats, 0)
        pipe = self.redis.pipeline(transaction=False)
        for c in chats:
            pipe.smembers(keys.members(c))
        members = [sorted(m) for m in await self.link.call(pipe.execute())]
        pipe = self.redis.pipeline(transaction=False)
        for users in members:
            for online_key in live:
                if users:
                    pipe.smismember(online_key, users)
        found = iter(await self.link.call(pipe.execute()))
        out = {}
        for c, users in zip(chats, members, strict=True):
            hits = [next(found) for _ in live] if users else []
            out[c] = sum(1 for i in range(len(users)) if any(h[i] for h in hits))
        return out

    async def claim_epoch(self, candidate: str) -> str:
        """The store's epoch, set to `candidate` first if there is none (SET NX), so all
        gateways that find it gone agree on one new value."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(keys.epoch(), candidate, nx=True)
        pipe.get(keys.epoch())
        _, current = await self.link.call(pipe.execute())
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
                pipe.pexpire(keys.user_peers(user), self.policy.ttl_ms)
        if len(pipe):
            await self.link.call(pipe.execute())
        touched = sorted({chat for theirs in chats.values() for chat in theirs})
        if touched:  # the member counts /get_chats lists by, from the sets just written
            pipe = self.redis.pipeline(transaction=False)
            for chat in touched:
                pipe.scard(keys.members(chat))
            counts = await self.link.call(pipe.execute())
            sizes = dict(zip(touched, counts, strict=True))
            await self.link.call(self.redis.zadd(keys.chat_sizes(), sizes))
