"""Accounts, login limits and resume tokens in memory (register.lua, enter.lua,
gate_fn.lua, address_gate.lua, token_*.lua)."""

from __future__ import annotations

from collections.abc import Sequence

from store.contract import (
    GENERAL,
    Account,
    LoginCheck,
    LoginGate,
    LoginLimits,
    NewName,
    Registration,
    TokenLogin,
    UserState,
)
from store.memory.server import (
    ADDRESS_MEMORY,
    HOUR_MS,
    KNOWN_ADDRESSES,
    Base,
    Key,
)

__all__ = ["Accounts"]


class Accounts(Base):
    # -- accounts ------------------------------------------------------------------------

    async def get_account(self, user: str) -> Account | None:
        self.server.now()
        account = self.k.get(("user", user))
        return None if account is None else Account(account["name"], account["pw"])

    async def names(self, users: Sequence[str]) -> list[str | None]:
        self.server.now()
        found = [self.k.get(("user", u)) for u in users]
        return [None if a is None else str(a["name"]) for a in found]

    async def new_name(self, user: str, skeleton: str, address: str) -> NewName:
        now = self.server.now()
        owner = self.k.get(("skel", skeleton))
        held = self._scores(("held",)).get(address, 0)
        return NewName(owner is not None and owner != user, held if held > now else 0)

    async def register(
        self, user: str, name: str, password_hash: str, skeleton: str, address: str = ""
    ) -> Registration:
        now = self.server.now()
        if self.k.has(("user", user)):
            return Registration.TAKEN
        owner = self.k.get(("skel", skeleton))
        if owner is not None and owner != user:
            return Registration.LOOK_ALIKE
        limit = self.max_registrations if address else 0
        if limit > 0:
            regs = ("regs", address)
            if int(self.k.get(regs, 0)) >= limit:
                return Registration.LIMITED
            if self.k.incr(regs) == 1:
                self.k.expire(regs, HOUR_MS)
        self.k.put(("skel", skeleton), user)
        self.k.put(("user", user), {"name": name, "pw": password_hash, "created": now // 1000})
        self._set(("chats", user)).add(GENERAL)
        count = self._join_chat(user, GENERAL, GENERAL)
        self._map(("chatsizes",))[GENERAL] = count
        self._map(("seen",))[user] = now
        return Registration.CREATED

    async def seen(self, user: str, address: str) -> None:
        await self.enter(user, address)

    async def enter(self, user: str, address: str) -> UserState:
        now = self.server.now()
        return self._enter(user, address, now, forgive=True)

    def _enter(self, user: str, address: str, now: int, *, forgive: bool) -> UserState:
        """enter_fn.lua, then the `{g}` records (the address's failures of this nickname
        forgiven, the user seen now)."""
        if forgive:
            self.k.delete(("fails", user, address))
        memory_ms = ADDRESS_MEMORY * 1000
        known = self._map(("known", user))
        known[address] = now
        self._trim_rank(known, KNOWN_ADDRESSES)
        self.k.expire(("known", user), memory_ms)
        if self.ban_address_memory > 0:
            held = self._map(("addrs", user))
            held[address] = now
            self._trim_rank(held, self.ban_address_memory)
            self.k.expire(("addrs", user), memory_ms)
        fails = self._scores(("addrfails", address))
        fails.pop(user, None)
        self.k.tidy(("addrfails", address))
        self._map(("seen",))[user] = now
        ban = self.k.get(("ban", user))
        return UserState(
            chats={c: self.k.get(("chat", c)) or c for c in sorted(self._members(("chats", user)))},
            peers=set(self._members(("peers", user))),
            cursors=dict(self._positions(user)),
            banned_until_ms=int(ban) if ban is not None else None,
        )

    # -- login limits --------------------------------------------------------------------

    def _gate(
        self, user: str, address: str, limits: LoginLimits, now: int, take: bool
    ) -> tuple[LoginGate, int, bool]:
        """gate_fn.lua: (verdict, wait ms, whether the address is known to the nickname)."""
        window_ms = limits.window * 1000
        pair, nick = ("fails", user, address), ("nickfails", user)

        def wait(key: Key) -> int:
            left = self.k.ttl_ms(key)
            return window_ms if left is None or left < 0 else left

        if limits.per_pair > 0 and int(self.k.get(pair, 0)) >= limits.per_pair:
            return LoginGate.PAIR, wait(pair), False
        seen_at = self._scores(("known", user)).get(address)
        known = seen_at is not None and seen_at > now - ADDRESS_MEMORY * 1000
        if not known and limits.per_nick > 0 and int(self.k.get(nick, 0)) >= limits.per_nick:
            return LoginGate.NICK, wait(nick), known
        if take:
            for key in (pair,) if known else (pair, nick):
                if self.k.incr(key) == 1:
                    self.k.expire(key, window_ms)
        return LoginGate.OK, 0, known

    def _address_gate(
        self, user: str, address: str, limits: LoginLimits, now: int, take: bool
    ) -> LoginCheck:
        """address_gate.lua, and the nickname's counters given back when it refuses."""
        window_ms = limits.window * 1000
        key = ("addrfails", address)
        failed = self._scores(key)
        self._drop_below(failed, now - window_ms)
        limit = limits.nicks_per_address
        if limit > 0 and user not in failed and len(failed) >= limit:
            wait = max(1, min(failed.values()) + window_ms - now)
            if take:
                for counter in (("fails", user, address), ("nickfails", user)):
                    if self.k.incr(counter, -1) <= 0:
                        self.k.delete(counter)
            self.k.tidy(key)
            return LoginCheck(LoginGate.ADDRESS, wait)
        if take:
            self._map(key)[user] = now
            self.k.expire(key, window_ms)
        self.k.tidy(key)
        return LoginCheck(LoginGate.OK, 0)

    async def login_gate(
        self, user: str, address: str, limits: LoginLimits, *, take: bool
    ) -> LoginCheck:
        now = self.server.now()
        gate, wait, known = self._gate(user, address, limits, now, take)
        if gate is not LoginGate.OK:
            return LoginCheck(gate, wait)
        if known or not limits.nicks_per_address:
            return LoginCheck(LoginGate.OK, 0)
        return self._address_gate(user, address, limits, now, take)

    async def give_back_attempt(self, user: str, address: str) -> None:
        self.server.now()
        pair = ("fails", user, address)
        if self.k.incr(pair, -1) <= 0:
            self.k.delete(pair)

    async def set_password(self, user: str, password_hash: str) -> None:
        self.server.now()
        account = self.k.get(("user", user))
        if account is not None:
            account["pw"] = password_hash
        self.k.delete(("tokens", user))

    # -- resume tokens -------------------------------------------------------------------

    def _tokens(self, user: str, now: int) -> dict[str, int]:
        """The user's live tokens (expired ones dropped)."""
        tokens: dict[str, int] = self._map(("tokens", user))
        for dead in [t for t, at in tokens.items() if at <= now]:
            del tokens[dead]
        return tokens

    async def issue_token(
        self, user: str, token_hash: str, ttl: int, replaces: str | None, keep: int
    ) -> None:
        now = self.server.now()
        tokens = self._tokens(user, now)
        if replaces:
            tokens.pop(replaces, None)
        if len(tokens) >= keep:
            for old, _ in sorted(tokens.items(), key=lambda kv: kv[1])[: len(tokens) - keep + 1]:
                del tokens[old]
        tokens[token_hash] = now + ttl * 1000
        self.k.expire_at(("tokens", user), max(tokens.values()))

    async def revoke_token(self, user: str, token_hash: str) -> None:
        self.server.now()
        self._map(("tokens", user)).pop(token_hash, None)
        self.k.tidy(("tokens", user))

    async def token_login(
        self, user: str, address: str, limits: LoginLimits, token_hash: str
    ) -> TokenLogin:
        now = self.server.now()
        expiry = self._scores(("tokens", user)).get(token_hash)
        name = None
        if expiry is not None and expiry <= now:
            self._map(("tokens", user)).pop(token_hash, None)
            self.k.tidy(("tokens", user))
        elif expiry is not None:
            name = self._name(user)
        if name is not None:
            failed = int(self.k.get(("fails", user, address), 0))
            forgive = limits.per_pair == 0 or failed < limits.per_pair
            state = self._enter(user, address, now, forgive=forgive)
            return TokenLogin(LoginCheck(LoginGate.OK), name, state)
        gate, wait, known = self._gate(user, address, limits, now, True)
        if gate is not LoginGate.OK:
            return TokenLogin(LoginCheck(gate, wait))
        if not known and limits.nicks_per_address:
            return TokenLogin(self._address_gate(user, address, limits, now, True))
        return TokenLogin(LoginCheck(LoginGate.OK))
