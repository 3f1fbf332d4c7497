"""Complaints, bans, moderators and operators' records of accounts in memory
(complain.lua, mod_ban.lua, forget.lua)."""

from __future__ import annotations

from collections.abc import Iterable

from store.contract import (
    AddressHold,
    BanInfo,
    Complaint,
    ComplaintStatus,
    Conv,
    UserBanned,
    UserKicked,
    UserSeen,
    UserUnbanned,
)
from store.memory.server import (
    HOUR_MS,
    Base,
)

__all__ = ["Moderation"]


class Moderation(Base):
    # -- complaints and moderation -------------------------------------------------------

    def _held_addresses(self, user: str) -> list[str]:
        return sorted(self._scores(("addrs", user)), key=lambda a: self._scores(("addrs", user))[a])

    def _list_ban(self, user: str, till: int, addresses: Iterable[str], now: int) -> None:
        """The ban listed for operators, and (a ban after complaints) the user's addresses
        held back till then, each with the ban that holds it."""
        bans = self._map(("bans",))
        self._drop_below(bans, now)
        bans[user] = till
        held = self._map(("held",))
        reasons = self._map(("heldby",))
        self._drop_below(held, now)
        self._drop_below(reasons, now)
        for address in addresses:
            held[address] = max(held.get(address, 0), till)
            reasons[f"{address}|{user}"] = max(reasons.get(f"{address}|{user}", 0), till)
        self.k.tidy(("held",))
        self.k.tidy(("heldby",))

    def _lift_holds(self, by: str, value: str) -> list[str]:
        """lift_holds.lua: free the holds one user's ban made, or one address's."""
        now = self.server.now()
        held = self._map(("held",))
        reasons = self._map(("heldby",))
        self._drop_below(held, now)
        self._drop_below(reasons, now)
        freed: list[str] = []
        if by == "address":
            for member in [m for m in reasons if m.rpartition("|")[0] == value]:
                del reasons[member]
            if held.pop(value, None) is not None:
                freed.append(value)
        else:
            touched = [m.rpartition("|")[0] for m in reasons if m.rpartition("|")[2] == value]
            for address in touched:
                del reasons[f"{address}|{value}"]
                left = [ms for m, ms in reasons.items() if m.rpartition("|")[0] == address]
                if left:
                    held[address] = max(left)
                elif held.pop(address, None) is not None:
                    freed.append(address)
        self.k.tidy(("held",))
        self.k.tidy(("heldby",))
        return freed

    async def holds(self) -> list[AddressHold]:
        now = self.server.now()
        held = self._scores(("held",))
        why: dict[str, list[tuple[str, int]]] = {}
        for member, ms in self._scores(("heldby",)).items():
            if ms > now:
                address, _, user = member.rpartition("|")
                why.setdefault(address, []).append((user, int(ms)))
        live = sorted(((ms, a) for a, ms in held.items() if ms > now))
        return [
            AddressHold(
                a,
                int(ms),
                tuple(BanInfo(u, self._name(u) or u, t) for u, t in sorted(why.get(a, []))),
            )
            for ms, a in live
        ]

    async def lift_hold(self, address: str) -> bool:
        return bool(self._lift_holds("address", address))

    async def complain(self, user: str, target: str, address: str) -> Complaint:
        now = self.server.now()
        account = self.k.get(("user", user))
        young = 0
        if self.complaint_min_age_ms:
            created = int(account["created"]) if account is not None else 0
            young = max(0, created * 1000 + self.complaint_min_age_ms - now)
        rate_wait = 0
        made = self._scores(("complained", user))
        if self.complaints_per_hour:
            self._drop_below(made, now - HOUR_MS)
            if len(made) >= self.complaints_per_hour and made:
                rate_wait = max(1, min(made.values()) + HOUR_MS - now)
        name = self._name(target)
        if name is None:
            return Complaint(ComplaintStatus.NO_USER)
        ban = self.k.get(("ban", target))
        if ban is not None:
            return Complaint(ComplaintStatus.ALREADY_BANNED, until_ms=int(ban), name=name)
        key = ("complaints", target)
        complaints = self._scores(key)
        self._drop_below(complaints, now - self.ban_ms)
        if user in complaints:
            return Complaint(ComplaintStatus.AGAIN, count=len(complaints), name=name)
        if young > 0:
            return Complaint(ComplaintStatus.TOO_NEW, wait_ms=young, name=name)
        if rate_wait > 0:
            return Complaint(ComplaintStatus.RATE, wait_ms=rate_wait, name=name)
        if self.complaints_per_address > 0:
            per = self._map(("complaintaddrs", target))
            if per.get(address, 0) >= self.complaints_per_address:
                self.k.tidy(("complaintaddrs", target))
                return Complaint(ComplaintStatus.ADDRESS, count=len(complaints), name=name)
            per[address] = per.get(address, 0) + 1
            self.k.expire(("complaintaddrs", target), self.ban_ms)
        complaints = self._map(key)
        complaints[user] = now
        self.k.expire(key, self.ban_ms)
        count = len(complaints)
        if self.complaints_per_hour:
            self._map(("complained", user))[target] = now
            self.k.expire(("complained", user), HOUR_MS)
        if count < self.ban_threshold:
            return Complaint(ComplaintStatus.RECORDED, count=count, name=name)
        till = now + self.ban_ms
        self.k.put(("ban", target), till, self.ban_ms)
        self.k.delete(key, ("complaintaddrs", target))
        self._user_channel(target, UserBanned(target, till, False))
        self._list_ban(target, till, self._held_addresses(target), now)
        return Complaint(ComplaintStatus.BANNED, count=count, until_ms=till, name=name)

    async def is_moderator(self, user: str) -> bool:
        self.server.now()
        return user in self._members(("mods",))

    async def set_moderator(self, user: str, on: bool) -> bool:
        self.server.now()
        if self._name(user) is None:
            return False
        if on:
            self._set(("mods",)).add(user)
        else:
            self._members(("mods",)).discard(user)
        return True

    async def ban(self, user: str, duration: int) -> BanInfo | None:
        now = self.server.now()
        name = self._name(user)
        if name is None:
            return None
        till = now + duration * 1000
        self.k.put(("ban", user), till, duration * 1000)
        self.k.delete(("complaints", user), ("complaintaddrs", user))
        self._user_channel(user, UserBanned(user, till, True))
        self._list_ban(user, till, (), now)  # a moderator's ban holds no address back
        return BanInfo(user, name, till)

    async def unban(self, user: str) -> bool:
        self.server.now()
        was = self.k.has(("ban", user))
        self.k.delete(("ban", user), ("complaints", user), ("complaintaddrs", user))
        self._map(("bans",)).pop(user, None)
        self._lift_holds("user", user)
        if was:
            self._user_channel(user, UserUnbanned(user))
        return was

    async def kick(self, user: str) -> None:
        self.server.now()
        self._user_channel(user, UserKicked(user))

    async def bans(self) -> list[BanInfo]:
        now = self.server.now()
        bans = self._map(("bans",))
        self._drop_below(bans, now)
        listed = sorted(bans.items(), key=lambda kv: (kv[1], kv[0]))
        return [BanInfo(u, self._name(u) or u, till) for u, till in listed]

    async def complaints_about(self, user: str) -> list[tuple[str, int]]:
        self.server.now()
        found = sorted(self._scores(("complaints", user)).items(), key=lambda kv: (kv[1], kv[0]))
        return [(self._name(u) or u, ms) for u, ms in found]

    async def users(self, limit: int) -> list[UserSeen]:
        self.server.now()
        seen = sorted(self._scores(("seen",)).items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        mods = self._members(("mods",))
        return [
            UserSeen(u, self._name(u) or u, ms, int(self.k.get(("ban", u), 0)), u in mods)
            for u, ms in seen[:limit]
        ]

    async def delete_user(self, user: str, skeleton: str) -> bool:
        self.server.now()
        if self._name(user) is None:
            return False
        for peer in self._members(("peers", user)):
            self.k.delete(("msgs", Conv.private(user, peer)))
            self._members(("peers", peer)).discard(user)
        self._forget(user)
        if self.k.get(("skel", skeleton)) == user:
            self.k.delete(("skel", skeleton))
        return True

    def _forget(self, user: str) -> None:
        """forget.lua and what follows it: the user's own keys, memberships, listings."""
        for chat in self._members(("chats", user)):
            self._leave_chat(user, chat)
        own = ["user", "chats", "peers", "cursor", "ban", "rate", "complaints", "complaintaddrs"]
        own += ["complained", "tokens", "addrs", "known", "creations"]
        self.k.delete(*((kind, user) for kind in own), ("nickfails", user))
        self._members(("mods",)).discard(user)
        for listing in (("bans",), ("seen",)):
            self._scores(listing).pop(user, None)

    async def forget_unseen(self, limit: int) -> int:
        now = self.server.now()
        cutoff = now - self.account_ttl_ms
        seen = self._scores(("seen",))
        old = sorted((ms, u) for u, ms in seen.items() if ms <= cutoff)[:limit]
        for _, user in old:
            self._forget(user)
        return len(old)
