"""Logging in: the nickname, the password or a resume token, registration, the failure
limits, and entering (the backlog, then live). Each step says what happens if the
connection closes while it waits."""

from __future__ import annotations

import logging
import unicodedata
from typing import TYPE_CHECKING, cast

from gateway.core import events as ev
from gateway.core.addresses import address_group
from gateway.core.base import SessionBase
from gateway.core.hashing import HashBusy, HashGone
from gateway.core.names import (
    name_error,
    name_key,
    name_skeleton,
    password_error,
)
from gateway.core.phases import Move, Phase
from gateway.core.timefmt import ban_end
from gateway.core.tokens import token_hash
from gateway.metrics import METRICS
from store.contract import (
    GENERAL,
    Conv,
    LoginCheck,
    Message,
    Position,
    Registration,
    StoreUnavailable,
    UserState,
)

if TYPE_CHECKING:
    from gateway.core.session import Session

__all__ = ["PRIVATES_LISTED", "Login"]

#: Private conversations a login lists (`Ready.privates`), the most recent: a user's
#: peers are not bounded, and a listed one may need the other's name read.
PRIVATES_LISTED = 100
_START = Position(0, 0)

log = logging.getLogger("chat.session")
#: Wrong passwords on one connection before it is closed (the contract says 3).
MAX_WRONG_PASSWORDS = 3
_REGISTRATIONS_LIMITED = (
    "too many new nicknames from your address this hour; log in with an existing one or try later"
)
_LOOK_ALIKE = "bad nickname: too similar to an existing nickname"


class Login(SessionBase):
    """The NICK, PASSWORD and LOADING phases of a session."""

    __slots__ = ()

    def _bad_nick(self, nick: str) -> bool:
        """Refuse a nickname that breaks the rules, and ask again."""
        err = name_error(nick)
        if err:
            self._error(ev.ErrorCode.BAD_NAME, f"bad nickname: {err}")
            self.sink.emit(ev.AskNick(first=False))
        return err is not None

    async def _take_nick(self, nick: str) -> None:
        if not nick.isascii():  # a new account's name is kept composed (name_error's NFC)
            nick = unicodedata.normalize("NFC", nick)
        if self._bad_nick(nick):
            return
        key = name_key(nick)
        account = await self.core.store.get_account(key)
        if account is None and await self._refused_new_name(key, nick):
            return
        if account is not None and await self._locked_out(key, account.name, take=False):
            return  # said now, not after the password is typed (checked again before it)
        if self._gone():  # the connection went while the store answered
            return
        self._nick = (key, account.name if account else nick)
        self._account = account
        self._move(Move.NICK_TAKEN)
        self._ask_again()

    async def _refused_new_name(self, key: str, nick: str) -> bool:
        """A new nickname that looks like another user's, or from an address held back by
        a ban, is refused before the password is asked (register checks the look again)."""
        check = await self.core.store.new_name(
            key, name_skeleton(nick), address_group(self.sink.address)
        )
        if check.look_alike:
            self._error(ev.ErrorCode.BAD_NAME, _LOOK_ALIKE)
        elif check.held_until_ms:
            self._error(
                ev.ErrorCode.REFUSED,
                "no new accounts from your address until "
                f"{ban_end(check.held_until_ms)}: a user here is banned after complaints",
            )
        else:
            return False
        self.sink.emit(ev.AskNick(first=False))
        return True

    async def _token_login(self, nick: str, token: str) -> None:
        """Log in with a resume token: one Redis script, no password hash."""
        if self._bad_nick(nick):
            return
        key = name_key(nick)
        hashed = token_hash(token)
        address = address_group(self.sink.address)
        login = await self.core.store.token_login(key, address, self._login_limits(), hashed)
        if self._refused_by_gate(login.check, key, nick) or self._gone():
            return
        if login.name is not None:
            self._token = hashed
            await self._enter(key, login.name, first=False, method="token", state=login.state)
            return
        refused = ev.Error(ev.ErrorCode.BAD_TOKEN, "invalid or expired token")
        if not self._failed("bad_token", nick, refused):
            self.sink.emit(ev.AskNick(first=False))

    def _failed(self, event: str, name: str, refused: ev.Error) -> bool:
        """Count a failed login on this connection (the store counted it before the check)
        and say `refused`; True if this connection is closed for it."""
        self._wrong += 1
        METRICS.login_failures.inc()
        log.warning(
            "event=%s peer=%s user=%s tries=%d", event, self.sink.address, name, self._wrong
        )
        self.sink.emit(refused)
        if self._wrong >= MAX_WRONG_PASSWORDS:
            self._error(ev.ErrorCode.LOCKED_OUT, "too many wrong passwords; disconnecting")
            self.sink.close()
            return True
        return False

    def _refused_by_gate(self, check: LoginCheck, key: str, name: str) -> bool:
        """`_locked_out` for a gate answer already in hand (the token login asks the
        gate and the token in one round trip)."""
        why = self._gate_refusal(check, key, name)
        if why is None:
            return False
        self._error(ev.ErrorCode.LOCKED_OUT, why)
        self.sink.close()
        return True

    async def _locked_out(self, key: str, name: str, *, take: bool) -> bool:
        """Refuse (and close) a login attempt over a failure limit; True if refused."""
        why = await self._refused_attempt(key, name, take=take)
        if why is None:
            return False
        self._error(ev.ErrorCode.LOCKED_OUT, why)
        self.sink.close()
        return True

    async def _password(self, password: str) -> None:
        assert self._nick is not None
        key, nick = self._nick
        settings = self.core.settings
        hasher = self.core.hasher
        alive = self._alive
        account = self._account
        if account is None:
            err = password_error(password)
            if err:
                self._error(ev.ErrorCode.BAD_PASSWORD, f"bad password: {err}")
                self._ask_again()
                return
            try:
                hashed = await hasher.hash(password, settings.scrypt_log_n, alive)
            except (HashBusy, HashGone) as exc:
                self._hash_refused(exc)
                return
            if self.phase is Phase.CLOSED:
                return
            outcome = await self.core.store.register(
                key, nick, hashed, name_skeleton(nick), self.sink.address
            )
            if self._gone() and outcome is not Registration.CREATED:
                return  # nobody to ask again (a created account is logged below)
            if outcome is Registration.LIMITED:
                self._error(ev.ErrorCode.REFUSED, _REGISTRATIONS_LIMITED)
                self._nick = None
                self._move(Move.NICK_AGAIN)
                self._ask_again()
                return
            if outcome is Registration.CREATED:
                if self._gone():  # registered, but nobody is there to log in
                    return
                log.info("event=register peer=%s user=%s", self.sink.address, nick)
                await self._enter(key, nick, first=True, method="register")
                return
            if outcome is Registration.LOOK_ALIKE:  # a look-alike registered meanwhile
                self._nick = self._account = None
                self._move(Move.NICK_AGAIN)
                self._error(ev.ErrorCode.BAD_NAME, _LOOK_ALIKE)
                self._ask_again()
                return
            account = await self.core.store.get_account(key)  # registered meanwhile elsewhere
            if account is None:
                raise StoreUnavailable("account vanished")
        if hasher.full:  # before the attempt is counted: a busy server costs no tries
            self._account = account
            self._hash_refused(HashBusy())
            return
        if await self._locked_out(key, account.name, take=True):
            return
        address = address_group(self.sink.address)
        if self._gone():  # counted, never checked
            await self.core.store.give_back_attempt(key, address)
            return
        try:
            ok = await hasher.verify(password, account.password_hash, alive)
        except (HashBusy, HashGone) as exc:
            await self.core.store.give_back_attempt(key, address)  # never checked
            self._account = account
            self._hash_refused(exc)
            return
        if self.phase is Phase.CLOSED:
            return
        if ok:
            await self._enter(key, account.name, first=False, method="password")
            return
        refused = ev.Error(ev.ErrorCode.WRONG_PASSWORD, "wrong password")
        if self._failed("wrong_password", account.name, refused):
            return
        self._nick, self._account = (key, account.name), account
        self._ask_again()

    async def _enter(
        self, key: str, name: str, *, first: bool, method: str, state: UserState | None = None
    ) -> None:
        """Logged in: subscribe, show the backlog, then go live. `state`: the login already
        entered it in the store (a token login does, in the same call as the check)."""
        self._move(Move.LOGGED_IN)
        self._nick = self._account = None
        self.key, self.name = key, key if name == key else name  # one string if equal
        self._hold()
        store = self.core.store
        if state is None:
            state = await store.enter(key, address_group(self.sink.address))
        whole = cast("Session", self)  # a Login is always a part of a Session
        user = self.user = await self.core.fanout.attach(whole, key, name, state)
        if self._gone():  # the connection went while we waited: no ghost
            self.core.fanout.detach(whole, user)
            return
        if first:
            messages = await store.history(
                GENERAL, user.chats.get(GENERAL, GENERAL), self.core.settings.history
            )
        else:
            state.cursors.update(user.shown_all())  # this gateway may know newer positions
            state.peers |= user.peers
            state.chats = dict(user.chats)
            limit = self.core.settings.max_backlog
            backlog = await store.backlog(key, state, limit)
            messages = backlog.messages
            for conv in backlog.cut:  # before the messages they precede
                self.sink.emit(ev.BacklogCut(user.where(conv), limit))
        privates = () if first else await self._privates(state, messages)
        shown = await self._show_stored(messages)
        if self._gone():  # closed while the backlog was shown: it never became live
            return
        METRICS.logins.inc()
        log.info(
            "event=login peer=%s session=%s method=%s backlog=%d",
            self.sink.address,
            self.describe(),
            method,
            len(messages),
        )
        chats = sorted(user.chats.values(), key=lambda n: (name_key(n) != GENERAL, n.casefold()))
        self.sink.emit(ev.Ready(name, GENERAL, tuple(chats), privates))
        if state.banned_until_ms:  # a ban older than this session: said at once
            self.sink.emit(ev.Banned(state.banned_until_ms, None))
        self._move(Move.LOADED)
        self._release(shown)

    async def _privates(
        self, state: UserState, messages: list[Message]
    ) -> tuple[ev.PrivateConv, ...]:
        """The user's private conversations for `Ready`: the PRIVATES_LISTED most recent
        (by the newest message in the backlog, else the read position), named as the
        backlog names them, else by the other user's account (a deleted one is left out)."""
        user = self.user
        if not state.peers or user is None:
            return ()
        newest: dict[str, Position] = {}
        names: dict[str, str] = {}
        for m in messages:  # oldest first: the last one seen is the newest
            if not m.conv.is_chat:
                where = user.view(m)
                assert isinstance(where, ev.PrivateConv)
                newest[where.peer] = m.pos
                names[where.peer] = where.name

        def recency(peer: str) -> tuple[Position, str]:
            at = newest.get(peer) or state.cursors.get(Conv.private(self.key, peer)) or _START
            return at, peer

        chosen = sorted(state.peers, key=recency, reverse=True)[:PRIVATES_LISTED]
        unnamed = [p for p in chosen if p not in names]
        for peer, name in zip(unnamed, await self.core.store.names(unnamed), strict=True):
            if name is not None:
                names[peer] = name
        return tuple(ev.PrivateConv(p, names[p]) for p in chosen if p in names)

    def _abort_login(self) -> None:
        self._error(ev.ErrorCode.STORE_DOWN, "login failed; please reconnect")
        self.sink.close()
