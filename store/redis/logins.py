"""Logins: the login limits (per nickname and address pair, per nickname, per address),
a resume token's login, and `enter`, which records a login and reads the user's state.
A reconnect storm is thousands of logins, so these go through the loop turn's pipeline
(`Link.run`) with everything else asked for in that turn."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from store import keys
from store.contract import LoginCheck, LoginGate, LoginLimits, TokenLogin, UserState
from store.redis.errors import is_error
from store.redis.part import Part
from store.redis.policy import ADDRESS_MEMORY, CHAT_NAME_CACHE, CHAT_NAME_TTL, KNOWN_ADDRESSES
from store.redis.replies import cursor_positions
from store.scripts import SCRIPTS

log = logging.getLogger("chat.store")


class Logins(Part):
    """Login limits, token logins and what a login records and reads."""

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
            [address, KNOWN_ADDRESSES, self.policy.ban_address_memory, ADDRESS_MEMORY],
        )

    async def login_gate(
        self, user: str, address: str, limits: LoginLimits, *, take: bool
    ) -> LoginCheck:
        """The nickname's limits (its slot), then, from an address the nickname never
        logged in from, the address's limit (`{g}`)."""
        ((code, value),) = await self.link.run(
            [self._login_gate_command(user, address, limits, take)]
        )
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
        return ("EVALSHA", SCRIPTS["login_gate"].sha, len(ks), *ks, *args, 1 if take else 0)

    async def _address_gate(
        self, user: str, address: str, limits: LoginLimits, *, take: bool
    ) -> LoginCheck:
        """The distinct-nicknames-per-address limit (`{g}`). An attempt it refuses after
        the nickname's counters took it is given back to them."""
        gate, wait_ms = await self.link.eval(
            "address_gate",
            [keys.address_fails(address)],
            [user, limits.window, limits.nicks_per_address, 1 if take else 0],
        )
        if gate != "ok" and take:
            given_back = [keys.login_fails(user, address), keys.nick_fails(user)]
            pipe = self.link.pipe()
            for key in given_back:
                pipe.decr(key)
            left = await self.link.call(pipe.execute())
            gone = [k for k, n in zip(given_back, left, strict=True) if int(n) <= 0]
            for key in gone:  # expired meanwhile: DECR made it -1 with no expiry
                await self.link.call(self.redis.delete(key))
        return LoginCheck(LoginGate(gate), int(wait_ms))

    async def give_back_attempt(self, user: str, address: str) -> None:
        await self.link.run(
            [("EVALSHA", SCRIPTS["give_back"].sha, 1, keys.login_fails(user, address))]
        )

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
        sha = SCRIPTS["token_login"].sha
        ((verdict, *rest),) = await self.link.run([("EVALSHA", sha, len(ks), *ks, *args)])
        if verdict == "ok":
            name, *state = rest
            self._recorded(self.link.turn.run(self._seen_commands(user, address)))
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
        state, *_ = await self.link.run(
            [
                ("EVALSHA", SCRIPTS["enter"].sha, len(ks), *ks, *args),
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
            cursors=cursor_positions(flat),
            banned_until_ms=int(ban) if ban else None,
        )

    @staticmethod
    def _recorded(fut: asyncio.Future[list[Any]]) -> None:
        """Let a write nobody waits for go; a failure is logged (the next login or the
        presence heartbeat writes the same again)."""

        def done(f: asyncio.Future[list[Any]]) -> None:
            exc = f.exception()
            errors = [r for r in ([] if exc else f.result()) if is_error(r)]
            if exc or errors:
                log.warning("event=login_record_failed error=%s", exc or errors[0])

        fut.add_done_callback(done)

    async def _chat_names(self, chats: list[str]) -> dict[str, str]:
        """Display names of chats, cached for CHAT_NAME_TTL seconds (a name changes only
        when a chat empties and is created again)."""
        cache = self._chat_name_cache
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
            replies = await self.link.run([("HGET", keys.chat(c), "name") for c in missing])
            for c, n in zip(missing, replies, strict=True):
                names[c] = n or c
                if n:
                    if len(cache) >= CHAT_NAME_CACHE:
                        cache.clear()
                    cache[c] = (n, now + CHAT_NAME_TTL)
        return {c: names[c] for c in chats}
