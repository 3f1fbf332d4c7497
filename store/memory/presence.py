"""Presence, address counts, the audit trail and the store's epoch in memory."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from store.contract import (
    AuditEntry,
    ChatInfo,
    ChatList,
    OnlineList,
    Position,
)
from store.memory.server import (
    ADDRESS_COUNT_TTL_MS,
    EXACT_ONLINE,
    PRESENCE_TTL,
    SMALL_CHAT,
    Base,
)

__all__ = ["Presence"]


class Presence(Base):
    # -- presence ------------------------------------------------------------------------

    def _live(self) -> list[str]:
        gateways = self._members(("gateways",))
        dead = {gw for gw in gateways if not self.k.has(("alive", gw))}
        gateways -= dead
        return sorted(gateways)

    async def live_gateways(self) -> list[str]:
        self.server.now()
        return self._live()

    def _online_sets(self) -> list[set[str]]:
        return [self._members(("online", gw)) for gw in self._live()]

    async def heartbeat(self, online: set[str], seen: Collection[str] | None = None) -> None:
        now = self.server.now()
        marks = self._map(("seen",))
        for user in online if seen is None else seen:
            if user in marks:  # ZADD XX: only accounts already there
                marks[user] = now
        gw = self.gateway_id
        self._set(("gateways",)).add(gw)
        self.k.put(("alive", gw), now // 1000, PRESENCE_TTL * 1000)
        self.k.delete(("online", gw))
        if online:
            self.k.put(("online", gw), set(online), PRESENCE_TTL * 1000)

    async def set_online(self, user: str, online: bool) -> None:
        await (self.set_online_many if online else self.set_offline_many)([user])

    async def set_online_many(self, users: Sequence[str]) -> None:
        self.server.now()
        self._set(("online", self.gateway_id)).update(users)
        self.k.expire(("online", self.gateway_id), PRESENCE_TTL * 1000)

    async def set_offline_many(self, users: Sequence[str]) -> None:
        self.server.now()
        self._members(("online", self.gateway_id)).difference_update(users)
        self.k.tidy(("online", self.gateway_id))

    async def online_on(self, user: str, gateways: Sequence[str]) -> bool:
        self.server.now()
        return any(user in self._members(("online", gw)) for gw in gateways)

    async def gateway_gone(self) -> None:
        self.server.now()
        self._members(("gateways",)).discard(self.gateway_id)
        self.k.delete(("alive", self.gateway_id), ("online", self.gateway_id))

    async def count_address(self, address: str, change: int, live: Sequence[str]) -> int:
        self.server.now()
        key = ("addrconns", address)
        counts = self._map(key)
        mine = counts.get(self.gateway_id, 0) + change
        if mine <= 0:
            counts.pop(self.gateway_id, None)
            mine = 0
        else:
            counts[self.gateway_id] = mine
        self.k.expire(key, ADDRESS_COUNT_TTL_MS)
        total = mine + sum(counts.get(gw, 0) for gw in live if gw != self.gateway_id)
        self.k.tidy(key)
        return int(total)

    async def who_bounded(self, chat: str, limit: int, cap: int) -> OnlineList:
        self.server.now()
        members = self._members(("members", chat))
        sets = self._online_sets()
        if not sets or not members:
            return OnlineList([], 0)
        online = sorted(u for u in members if any(u in s for s in sets))
        if len(members) <= SMALL_CHAT:
            total, capped = len(online), False
        else:
            counted = sum(len(members & s) for s in sets)
            total, capped = max(min(counted, cap), min(len(online), cap)), counted >= cap
        present = online if len(online) <= limit else random.sample(online, limit)
        if not present:
            return OnlineList([], 0)
        names = [self._name(u) or u for u in present]
        return OnlineList(sorted(names, key=str.casefold), total, capped)

    async def active_chats_bounded(self, limit: int, cap: int) -> ChatList:
        self.server.now()
        sizes = self._scores(("chatsizes",))
        top = sorted(sizes.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:limit]
        sets = self._online_sets()
        infos = []
        for chat, count in top:
            members = self._members(("members", chat))
            if count <= EXACT_ONLINE:  # as the Redis store: each user once
                online = len(members & set().union(*sets))
            else:  # counted per gateway, never past the members
                online = min(sum(len(members & s) for s in sets), count)
            name = self.k.get(("chat", chat)) or chat
            infos.append(ChatInfo(name, count, min(online, cap), online >= cap))
        infos.sort(key=lambda x: (-x.members, x.name.casefold()))
        return ChatList(infos, len(sizes))

    async def audit(self, fields: dict[str, str], keep: int) -> None:
        self.server.now()
        trail: list[tuple[Position, dict[str, str]]] = self.k.upsert(("audit",), list)
        trail.append((self.server.position(trail[-1][0] if trail else None), dict(fields)))
        del trail[: max(0, len(trail) - keep)]

    async def audit_log(self, since_ms: int, limit: int) -> list[AuditEntry]:
        self.server.now()
        trail: list[tuple[Position, dict[str, str]]] = self.k.get(("audit",), [])
        found = [(pos, f) for pos, f in trail if pos.ms >= since_ms][-limit:] if limit else []
        return [AuditEntry(str(pos), pos.ms, dict(f)) for pos, f in found]

    # -- surviving a store that lost its data ----------------------------------------------

    async def claim_epoch(self, candidate: str) -> str:
        self.server.now()
        return str(self.k.upsert(("epoch",), lambda: candidate))

    async def reassert(self, chats: dict[str, dict[str, str]], peers: dict[str, set[str]]) -> None:
        self.server.now()
        for user, theirs in chats.items():
            for chat, name in theirs.items():
                if not self.k.has(("chat", chat)):  # HSETNX: a name already there stays
                    self.k.put(("chat", chat), name)
                self._set(("members", chat)).add(user)
                self._set(("chats", user)).add(chat)
        for user, known in peers.items():
            if known:
                self._set(("peers", user)).update(known)
                self.k.expire(("peers", user), self.ttl_ms)
        sizes = self._map(("chatsizes",))
        for chat in {c for theirs in chats.values() for c in theirs}:
            sizes[chat] = len(self._members(("members", chat)))
