"""Moderation: complaints and the bans they lead to (with the addresses held back from
registering), moderators, operator bans, kicks, and the audit trail."""

from __future__ import annotations

import time
from typing import Any

from store import keys
from store.contract import AddressHold, AuditEntry, BanInfo, Complaint, ComplaintStatus
from store.payloads import kicked_record, payload, unbanned_record
from store.redis.part import Part
from store.redis.policy import HOUR_MS


class Moderation(Part):
    """Complaints, bans, address holds, moderators and the audit trail."""

    async def complain(self, user: str, target: str, address: str) -> Complaint:
        """The complainer's age and hourly allowance are read first (the complainer's
        slot), the complaint is decided and counted in the target's slot, then recorded
        in the complainer's allowance and, on a ban, listed with the held addresses
        (`{g}`). The allowance is the only check not in the deciding step: complaints
        sent at the same instant from several sessions of one complainer can each pass
        it, so it may be exceeded by that number; each still counts once per complainer
        and per address, which the deciding step enforces."""
        now = int(time.time() * 1000)
        pipe = self.link.pipe()
        pipe.hget(keys.user(user), "created")
        recent = keys.complaints_by(user)
        if self.policy.complaints_per_hour:
            pipe.zremrangebyscore(recent, "-inf", now - HOUR_MS)
            pipe.zcard(recent)
            pipe.zrange(recent, 0, 0, withscores=True)
        res = await self.link.call(pipe.execute())
        young = 0
        if self.policy.complaint_min_age_ms:
            young = max(0, int(res[0] or 0) * 1000 + self.policy.complaint_min_age_ms - now)
        rate_wait = 0
        if (
            self.policy.complaints_per_hour
            and int(res[2]) >= self.policy.complaints_per_hour
            and res[3]
        ):
            rate_wait = max(1, int(res[3][0][1]) + HOUR_MS - now)
        res = await self.link.eval(
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
                self.policy.ban_threshold,
                self.policy.ban_ms,
                keys.user_channel(target),
                address,
                young,
                rate_wait,
                self.policy.complaints_per_address,
                self.link.publish,
            ],
        )
        status = ComplaintStatus(res[0])
        if status in (ComplaintStatus.RECORDED, ComplaintStatus.BANNED):
            pipe = self.link.pipe()
            if self.policy.complaints_per_hour:
                pipe.zadd(recent, {keys.user_channel(target): now})
                pipe.pexpire(recent, HOUR_MS)
            if status is ComplaintStatus.BANNED:
                till = int(res[2])
                self._list_ban(pipe, target, till)
                self._hold(pipe, target, res[4:], till)
            if len(pipe):
                await self.link.call(pipe.execute())
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

    async def is_moderator(self, user: str) -> bool:
        return bool(await self.link.call(self.redis.sismember(keys.moderators(), user)))

    async def set_moderator(self, user: str, on: bool) -> bool:
        if await self.get_account(user) is None:
            return False
        if on:
            await self.link.call(self.redis.sadd(keys.moderators(), user))
        else:
            await self.link.call(self.redis.srem(keys.moderators(), user))
        return True

    async def ban(self, user: str, duration: int) -> BanInfo | None:
        res = await self.link.eval(
            "mod_ban",
            [
                keys.ban(user),
                keys.user(user),
                keys.complaints(user),
                keys.complaint_addresses(user),
            ],
            [duration * 1000, keys.user_channel(user), self.link.publish],
        )
        if res[0] == "nouser":
            return None
        pipe = self.link.pipe()
        self._list_ban(pipe, user, int(res[1]))
        await self.link.call(pipe.execute())
        return BanInfo(user, str(res[2]), int(res[1]))

    async def unban(self, user: str) -> bool:
        pipe = self.link.pipe()
        pipe.exists(keys.ban(user))
        pipe.delete(keys.ban(user))
        pipe.delete(keys.complaints(user))
        pipe.delete(keys.complaint_addresses(user))
        pipe.zrem(keys.bans(), user)
        was, *_ = await self.link.call(pipe.execute())
        await self._lift_holds("user", user)
        if was:  # the user's sessions are told they may send again
            await self.link.call(
                self.redis.execute_command(
                    self.link.publish, keys.user_channel(user), payload([unbanned_record()])
                )
            )
        return bool(was)

    async def kick(self, user: str) -> None:
        await self.link.call(
            self.redis.execute_command(
                self.link.publish, keys.user_channel(user), payload([kicked_record()])
            )
        )

    async def bans(self) -> list[BanInfo]:
        now = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(keys.bans(), "-inf", now)
        pipe.zrangebyscore(keys.bans(), now, "+inf", withscores=True)
        _, found = await self.link.call(pipe.execute())
        names = await self._names([u for u, _ in found])
        return [BanInfo(u, names[u], int(ms)) for u, ms in found]

    async def holds(self) -> list[AddressHold]:
        now = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(keys.held_addresses(), now, "+inf", withscores=True)
        pipe.zrangebyscore(keys.held_reasons(), now, "+inf", withscores=True)
        held, reasons = await self.link.call(pipe.execute())
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
        freed = await self.link.eval(
            "lift_holds", [keys.held_addresses(), keys.held_reasons()], [by, value]
        )
        return [str(a) for a in freed]

    async def complaints_about(self, user: str) -> list[tuple[str, int]]:
        found = await self.link.call(
            self.redis.zrange(keys.complaints(user), 0, -1, withscores=True)
        )
        names = await self._names([u for u, _ in found])
        return [(names[u], int(ms)) for u, ms in found]

    async def audit(self, fields: dict[str, str], keep: int) -> None:
        await self.link.call(self.redis.xadd(keys.audit(), fields, maxlen=keep, approximate=True))

    async def audit_log(self, since_ms: int, limit: int) -> list[AuditEntry]:
        entries = await self.link.call(
            self.redis.xrevrange(keys.audit(), "+", f"{since_ms}-0", count=limit)
        )
        return [AuditEntry(mid, keys.position(mid).ms, dict(f)) for mid, f in reversed(entries)]
