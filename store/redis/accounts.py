"""Accounts: names and their look-alikes, registration, passwords, resume tokens, the
last-seen list, and forgetting accounts (deleted by an operator, or unseen for the
account lifetime)."""

from __future__ import annotations

import time

from store import keys
from store.contract import GENERAL, NewName, Registration, UserSeen
from store.redis.part import Part


class Accounts(Part):
    """Accounts, their names, passwords, tokens and lifetimes."""

    async def new_name(self, user: str, skeleton: str, address: str) -> NewName:
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.skeleton(skeleton))
        pipe.zscore(keys.held_addresses(), address)
        owner, held = await self.link.call(pipe.execute())
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
        if await self.link.call(self.redis.exists(keys.user(user))):
            return Registration.TAKEN  # before the claim: a taken name costs no registration
        claimed = await self.link.eval(
            "register_claim",
            [keys.skeleton(skeleton), keys.registrations(address)],
            [user, self.policy.max_registrations if address else 0],
        )
        if claimed == -1:
            return Registration.LIMITED
        if claimed == -2:
            return Registration.LOOK_ALIKE
        created = await self.link.eval(
            "register",
            [keys.user(user), keys.user_chats(user)],
            [name, password_hash, GENERAL],
        )
        if created != 1:
            return Registration.TAKEN
        _, _, count = await self.link.eval(
            "join", [keys.chat(GENERAL), keys.members(GENERAL)], [user, GENERAL, 1, "ok"]
        )
        pipe = self.link.pipe()
        pipe.zadd(keys.chat_sizes(), {GENERAL: int(count)})
        pipe.zadd(keys.seen(), {user: int(time.time() * 1000)})
        await self.link.call(pipe.execute())
        return Registration.CREATED

    async def set_password(self, user: str, password_hash: str) -> None:
        pipe = self.link.pipe(transaction=True)
        pipe.hset(keys.user(user), "pw", password_hash)
        pipe.delete(keys.tokens(user))
        await self.link.call(pipe.execute())

    async def users(self, limit: int) -> list[UserSeen]:
        found = await self.link.call(
            self.redis.zrevrange(keys.seen(), 0, limit - 1, withscores=True)
        )
        if not found:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for u, _ in found:
            pipe.hget(keys.user(u), "name")
            pipe.get(keys.ban(u))
        pipe.smismember(keys.moderators(), [u for u, _ in found])
        res = await self.link.call(pipe.execute())
        mods = res[-1]
        return [
            UserSeen(u, res[2 * i] or u, int(ms), int(res[2 * i + 1] or 0), bool(mods[i]))
            for i, (u, ms) in enumerate(found)
        ]

    async def delete_user(self, user: str, skeleton: str) -> bool:
        if await self.get_account(user) is None:
            return False
        peers = await self.link.call(self.redis.smembers(keys.user_peers(user)))
        pipe = self.redis.pipeline(transaction=False)
        for peer in peers:  # the private conversations go with the account
            pipe.delete(keys.conv_stream(keys.dm_conv(user, peer)))
            pipe.srem(keys.user_peers(peer), user)
        pipe.srem(keys.moderators(), user)
        pipe.zrem(keys.bans(), user)
        pipe.zadd(keys.seen(), {user: 0})  # so that forget.lua's cutoff takes it
        await self.link.call(pipe.execute())
        await self._forget(user, 0)
        # the nickname's look is free again only if this account held it
        if await self.link.call(self.redis.get(keys.skeleton(skeleton))) == user:
            await self.link.call(self.redis.delete(keys.skeleton(skeleton)))
        return True

    async def _forget(self, u: str, cutoff: int) -> int:
        """Forget user `u` if not seen after `cutoff`: its own keys (its slot), then its
        memberships (each chat's slot) and the shared lists (`{g}`). A login between the
        look at last-seen and the deletion would be undone by it; an account unseen for
        the account lifetime that logs in at that very instant is the only one at risk."""
        seen = await self.link.call(self.redis.zscore(keys.seen(), u))
        if seen is None or float(seen) > cutoff:
            return 0
        chats = await self.link.eval("forget", keys.own_keys(u), [])
        pipe = self.link.pipe()
        for chat in chats:
            removed, _, left = await self.link.eval(
                "leave", [keys.chat(chat), keys.members(chat)], [u, chat]
            )
            if removed and int(left) == 0:
                pipe.zrem(keys.chat_sizes(), chat)
            elif removed:
                pipe.zadd(keys.chat_sizes(), {chat: int(left)})
        pipe.srem(keys.moderators(), u)
        pipe.zrem(keys.bans(), u)
        pipe.zrem(keys.seen(), u)
        await self.link.call(pipe.execute())
        return 1

    async def forget_unseen(self, limit: int) -> int:
        """Forget at most `limit` accounts not seen for the account lifetime (the oldest
        first); returns how many. Gateways call it on their ticker, so the sweep goes in
        bounded steps and never scans every account."""
        cutoff = int(time.time() * 1000) - self.policy.account_ttl_ms
        users = await self.link.call(
            self.redis.zrangebyscore(keys.seen(), "-inf", cutoff, start=0, num=limit)
        )
        forgotten = 0
        for u in users:
            forgotten += await self._forget(u, cutoff)
        return forgotten

    async def issue_token(
        self, user: str, token_hash: str, ttl: int, replaces: str | None, keep: int
    ) -> None:
        await self.link.eval(
            "token_issue", [keys.tokens(user)], [token_hash, ttl * 1000, replaces or "", keep]
        )

    async def revoke_token(self, user: str, token_hash: str) -> None:
        await self.link.call(self.redis.hdel(keys.tokens(user), token_hash))
