"""A logged-in user's credentials: resume tokens (/token, /logout) and the password
(/password)."""

from __future__ import annotations

import logging

from gateway.core import events as ev
from gateway.core.addresses import address_group
from gateway.core.base import SessionBase
from gateway.core.hashing import HashBusy, HashGone
from gateway.core.names import (
    password_error,
)
from gateway.core.tokens import new_token, token_hash
from gateway.metrics import METRICS
from store.contract import (
    StoreUnavailable,
)

__all__ = ["Credentials"]

log = logging.getLogger("chat.session")
#: Resume tokens kept per user: a device's token beyond this revokes the one that expires
#: first, so one user's many devices cannot grow Redis without bound (64 x ~100 bytes).
MAX_TOKENS = 64


class Credentials(SessionBase):
    """/token, /logout and /password."""

    __slots__ = ()

    async def _issue_token(self) -> None:
        """A new token for this device; the store revokes the one it had."""
        token = new_token()
        hashed = token_hash(token)
        ttl = self.core.settings.token_ttl
        await self.core.store.issue_token(self.key, hashed, ttl, self._token, MAX_TOKENS)
        self._token = hashed
        log.info("event=token_issued peer=%s session=%s", self.sink.address, self.describe())
        self.sink.emit(ev.TokenIssued(token, ttl))

    async def _logout(self) -> None:
        if self._token is not None:
            await self.core.store.revoke_token(self.key, self._token)
            self._token = None
        log.info("event=logout peer=%s session=%s", self.sink.address, self.describe())
        self.sink.emit(ev.Bye())
        self.sink.close()

    async def _change_password(self, old: str, new: str) -> None:
        store, settings = self.core.store, self.core.settings
        err = password_error(new)
        if err:
            self._error(ev.ErrorCode.BAD_PASSWORD, f"bad password: {err}")
            return
        account = await store.get_account(self.key)
        if account is None:
            raise StoreUnavailable("account vanished")
        hasher = self.core.hasher
        if hasher.full:
            self._hash_refused(HashBusy())
            return
        why = await self._refused_attempt(self.key, self.name, take=True)  # a guessing oracle too
        if why is not None:
            self._error(ev.ErrorCode.LOCKED_OUT, why)
            return
        try:  # through the bounded hasher like every login: no unbounded scrypt queue
            ok = await hasher.verify(old, account.password_hash, self._alive)
        except (HashBusy, HashGone) as exc:
            await self.core.store.give_back_attempt(self.key, address_group(self.sink.address))
            self._hash_refused(exc)
            return
        if not ok:
            METRICS.login_failures.inc()
            log.warning(
                "event=wrong_password peer=%s user=%s during=password_change",
                self.sink.address,
                self.name,
            )
            self._error(ev.ErrorCode.WRONG_PASSWORD, "wrong password")
            return
        await store.seen(self.key, address_group(self.sink.address))  # forgive the attempt
        try:
            hashed = await hasher.hash(new, settings.scrypt_log_n, self._alive)
        except (HashBusy, HashGone) as exc:
            self._hash_refused(exc)
            return
        await store.set_password(self.key, hashed)
        self._token = None
        log.info("event=password_changed peer=%s session=%s", self.sink.address, self.describe())
        self.sink.emit(ev.PasswordChanged())
