"""One user session's logic, whatever the door: login, commands, backlog, hold-and-release.

A door hands in typed commands one at a time (`await session.handle(command)`, strictly in
order) and receives typed events through its `Sink`. The session never sees bytes, sockets
or transports; it asks the `Store` and gets values back.

While the session reads stored messages (backlog at login, history on join and /history)
it *holds* live deliveries, then releases them, dropping any the stored read already
showed: no message is shown twice or out of order.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.addresses import address_group
from gateway.core.audit import record
from gateway.core.hashing import HashBusy, Hasher, HashGone
from gateway.core.names import (
    bound_blanks,
    name_error,
    name_key,
    name_skeleton,
    password_error,
)
from gateway.core.timefmt import ban_end, wait_for
from gateway.core.tokens import new_token, token_hash
from gateway.metrics import METRICS
from gateway.settings import Settings
from store.contract import (
    GENERAL,
    Account,
    ComplaintStatus,
    Conv,
    JoinStatus,
    LoginCheck,
    LoginGate,
    LoginLimits,
    Message,
    Position,
    PostResult,
    PostStatus,
    Registration,
    Store,
    StoreRefused,
    StoreUnavailable,
    UserState,
)

if TYPE_CHECKING:
    from gateway.core.user import LocalUser

__all__ = ["Core", "Phase", "Readers", "Session", "Sink"]

log = logging.getLogger("chat.session")
_ZERO = Position(0, 0)
#: Wrong passwords on one connection before it is closed (the contract says 3).
MAX_WRONG_PASSWORDS = 3
#: Resume tokens kept per user: a device's token beyond this revokes the one that expires
#: first, so one user's many devices cannot grow Redis without bound (64 x ~100 bytes).
MAX_TOKENS = 64
#: Names listed by /who; the rest are counted ("and N more"), so one reply stays small.
WHO_SHOWN = 200
#: Online members /who and /get_chats count at most per chat ("1000+"): the Redis work
#: of one reply stays bounded in a chat of 50,000 (counting them all, with the union of
#: everyone online, took about 100 ms of Redis per /who).
ONLINE_COUNTED = 1000
#: Bytes of stored messages rendered before the session waits for the door to drain, so a
#: long backlog never sits in memory whole.
BACKLOG_CHUNK = 64 * 1024
_UNCONFIRMED = (
    "the chat store did not confirm your message in time; it may have been delivered "
    "(check before sending it again)"
)
_REGISTRATIONS_LIMITED = (
    "too many new nicknames from your address this hour; log in with an existing one or try later"
)
#: What one held message is counted as, beyond its text, against the output bound.
_HELD_OVERHEAD = 64
_LOOK_ALIKE = "bad nickname: too similar to an existing nickname"


class Phase(enum.Enum):
    """Where a session is; a door reads it to know what an input line means."""

    NICK = "nick"
    PASSWORD = "password"
    LOADING = "loading"
    READY = "ready"
    CLOSED = "closed"


class Sink(Protocol):
    """What the core needs of a door's connection."""

    @property
    def address(self) -> str: ...

    def emit(self, event: ev.Event) -> None:
        """Queue an event for the peer (never blocks; the door bounds its own output)."""

    def show(self, messages: ev.Messages) -> None:
        """Queue messages (the fan-out hot path: the same object for every reader)."""

    async def drain(self) -> None:
        """Wait until the peer has taken most of what was queued."""

    def close(self) -> None:
        """Send what is queued, then close."""

    def overflow(self) -> None:
        """The peer fell too far behind: drop it."""


class Readers(Protocol):
    """What the core needs of fan-out: who on this gateway reads what."""

    async def attach(self, session: Session, key: str, name: str, state: UserState) -> LocalUser:
        """From now on the user's conversations reach `session`."""

    def detach(self, session: Session, user: LocalUser) -> None: ...

    async def add_chat(self, user: LocalUser, chat: str, name: str) -> None: ...

    def remove_chat(self, user: LocalUser, chat: str) -> None: ...


class Core:
    """What every session shares: the store, fan-out and settings of one gateway."""

    def __init__(self, store: Store, fanout: Readers, settings: Settings, gateway_id: str) -> None:
        self.store = store
        self.fanout = fanout
        self.settings = settings
        self.gateway_id = gateway_id
        self.hasher = Hasher(settings.hash_threads, settings.max_pending_hashes)
        self._numbers = 0

    def session(self, sink: Sink) -> Session:
        self._numbers += 1
        return Session(self, sink, self._numbers)


class Session:
    __slots__ = (
        "_account",
        "_held",
        "_held_bytes",
        "_holding",
        "_nick",
        "_number",
        "_token",
        "_wrong",
        "core",
        "current",
        "key",
        "live",
        "name",
        "phase",
        "sink",
        "user",
    )

    def __init__(self, core: Core, sink: Sink, number: int) -> None:
        self.core = core
        self.sink = sink
        self._number = number
        self.phase = Phase.NICK
        #: READY and not holding: fan-out may show live messages straight to the sink.
        self.live = False
        self.current = GENERAL
        self.key = ""
        self.name = ""
        self.user: LocalUser | None = None
        self._holding = False
        self._held: list[ev.Messages] | None = None  # created when something is held
        self._held_bytes = 0
        self._nick: tuple[str, str] | None = None  # (key, display name) being logged in
        self._account: Account | None = None
        self._wrong = 0
        #: The hash of this device's resume token: the one it logged in with or was issued.
        self._token: str | None = None

    @property
    def session_id(self) -> str:
        """`gateway:number`, built when asked (logs, join and leave origins): an idle
        session keeps an int, not a string."""
        return f"{self.core.gateway_id}:{self._number}"

    def _gone(self) -> bool:
        """Whether the door's connection closed (checked after every await of login)."""
        return self.phase is Phase.CLOSED

    def describe(self) -> str:
        return f"{self.session_id} user={self.name or '-'}"

    def start(self) -> None:
        self.sink.emit(ev.AskNick(first=True))

    def _error(self, code: ev.ErrorCode, text: str) -> None:
        self.sink.emit(ev.Error(code, text))

    # -- input -----------------------------------------------------------------------------

    async def handle(self, command: cmd.Command) -> None:
        """Carry out one command; every outcome, failures included, becomes events."""
        if self.phase is Phase.CLOSED:
            return
        try:
            await self._dispatch(command)
        except StoreUnavailable as exc:
            METRICS.redis_errors.inc()
            log.warning("event=store_unavailable session=%s error=%s", self.describe(), exc)
            self._error(ev.ErrorCode.STORE_DOWN, _store_text(exc, True))
            if self.phase is Phase.LOADING:
                self._abort_login()
        except Exception:
            log.exception("event=internal_error session=%s", self.describe())
            self._error(ev.ErrorCode.INTERNAL, "internal error; nothing was done")
            if self.phase is Phase.LOADING:
                self._abort_login()

    async def _dispatch(self, command: cmd.Command) -> None:
        if isinstance(command, cmd.Rejected):
            self._error(ev.ErrorCode.BAD_INPUT, command.text)
            self._ask_again()
        elif self.phase is Phase.READY:
            await self._command(command)
        elif self.phase is Phase.NICK and isinstance(command, cmd.Nick):
            if command.token is None:
                await self._take_nick(command.text)
            else:
                await self._token_login(command.text, command.token)
        elif self.phase is Phase.PASSWORD and isinstance(command, cmd.Password):
            await self._password(command.text)
        elif isinstance(command, cmd.Quit):
            self.sink.emit(ev.Bye())
            self.sink.close()
        else:
            self._error(ev.ErrorCode.BAD_INPUT, "log in first")
            self._ask_again()

    def _ask_again(self) -> None:
        if self.phase is Phase.NICK:
            self.sink.emit(ev.AskNick(first=False))
        elif self.phase is Phase.PASSWORD and self._nick is not None:
            self.sink.emit(ev.AskPassword(self._nick[1], new=self._account is None))

    # -- login -------------------------------------------------------------------------------

    def _bad_nick(self, nick: str) -> bool:
        """Refuse a nickname that breaks the rules, and ask again."""
        err = name_error(nick)
        if err:
            self._error(ev.ErrorCode.BAD_NAME, f"bad nickname: {err}")
            self.sink.emit(ev.AskNick(first=False))
        return err is not None

    async def _take_nick(self, nick: str) -> None:
        if self._bad_nick(nick):
            return
        key = name_key(nick)
        account = await self.core.store.get_account(key)
        if account is None and await self._refused_new_name(key, nick):
            return
        if account is not None and await self._locked_out(key, account.name, take=False):
            return  # said now, not after the password is typed (checked again before it)
        self._nick = (key, account.name if account else nick)
        self._account = account
        self.phase = Phase.PASSWORD
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

    def _login_limits(self) -> LoginLimits:
        s = self.core.settings
        return LoginLimits(
            s.max_login_failures,
            s.max_login_failures_per_nick,
            s.max_failed_nicks_per_ip,
            s.login_fail_window,
        )

    async def _refused_attempt(self, key: str, name: str, *, take: bool) -> str | None:
        """Why a login attempt at `key` from here may not be checked, or None. With `take`
        the attempt is counted now, before its check (see `Store.login_gate`)."""
        address = address_group(self.sink.address)
        check = await self.core.store.login_gate(key, address, self._login_limits(), take=take)
        return self._gate_refusal(check, key, name)

    def _gate_refusal(self, check: LoginCheck, key: str, name: str) -> str | None:
        if check.gate is LoginGate.OK:
            return None
        METRICS.login_throttled.inc()
        log.warning(
            "event=login_throttled peer=%s nick=%s limit=%s",
            self.sink.address,
            key,
            check.gate.value,
        )
        wait = wait_for(check.wait_ms)
        if check.gate is LoginGate.PAIR:
            return f"too many failed logins for {name} from your address; try again in {wait}"
        if check.gate is LoginGate.NICK:
            return (
                f"too many failed logins for {name} from new addresses; try again in {wait}, "
                "or from where you logged in before"
            )
        return f"too many failed logins from your address; try again in {wait}"

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
            if outcome is Registration.LIMITED:
                self._error(ev.ErrorCode.REFUSED, _REGISTRATIONS_LIMITED)
                self.phase, self._nick = Phase.NICK, None
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
                self.phase = Phase.NICK
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

    def _alive(self) -> bool:
        return self.phase is not Phase.CLOSED

    def _hash_refused(self, exc: Exception) -> None:
        """The hasher is full (say so; the same prompt again) or the connection is gone."""
        if isinstance(exc, HashGone) or self._gone():
            return
        METRICS.hash_busy.inc()
        self._error(ev.ErrorCode.BUSY, "server busy: too many logins right now, try again")
        self._ask_again()

    async def _enter(
        self, key: str, name: str, *, first: bool, method: str, state: UserState | None = None
    ) -> None:
        """Logged in: subscribe, show the backlog, then go live. `state`: the login already
        entered it in the store (a token login does, in the same call as the check)."""
        self.phase = Phase.LOADING
        self._nick = self._account = None
        self.key, self.name = key, key if name == key else name  # one string if equal
        self._hold()
        store = self.core.store
        if state is None:
            state = await store.enter(key, address_group(self.sink.address))
        user = self.user = await self.core.fanout.attach(self, key, name, state)
        if self._gone():  # the connection went while we waited: no ghost
            self.core.fanout.detach(self, user)
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
        shown = await self._show_stored(messages)
        METRICS.logins.inc()
        log.info(
            "event=login peer=%s session=%s method=%s backlog=%d",
            self.sink.address,
            self.describe(),
            method,
            len(messages),
        )
        chats = sorted(user.chats.values(), key=lambda n: (name_key(n) != GENERAL, n.casefold()))
        self.sink.emit(ev.Ready(name, GENERAL, tuple(chats)))
        if state.banned_until_ms:  # a ban older than this session: said at once
            self.sink.emit(ev.Banned(state.banned_until_ms, None))
        self.phase = Phase.READY
        self._release(shown)

    def _abort_login(self) -> None:
        self._error(ev.ErrorCode.STORE_DOWN, "login failed; please reconnect")
        self.sink.close()

    # -- stored messages, hold and release -------------------------------------------------

    async def _show_stored(self, messages: list[Message]) -> dict[Conv, Position]:
        """Show stored messages in order, at most BACKLOG_CHUNK bytes at a time, waiting
        for the door to take each chunk; a message counts as shown only once handed to a
        connection that is still open. Returns the last id shown per conversation."""
        user = self.user
        assert user is not None
        shown: dict[Conv, Position] = {}
        for run in _runs(messages):
            where = user.view(run[0])
            start = 0
            while start < len(run):
                size, end = 0, start
                while end < len(run) and (end == start or size < BACKLOG_CHUNK):
                    size += len(run[end].text) + _HELD_OVERHEAD
                    end += 1
                self.sink.show(ev.Messages(where, tuple(run[start:end])))
                await self.sink.drain()
                if self._gone():  # dropped (or closed) before taking it: not shown
                    return shown
                last = run[end - 1]
                shown[last.conv] = last.pos
                user.mark_shown(last.conv, last.pos)
                start = end
        return shown

    def hold(self, messages: ev.Messages) -> None:
        """Fan-out's delivery while this session is not live: keep them for `_release`."""
        if not self._holding or self.phase is Phase.CLOSED:
            return
        if self._held is None:
            self._held = []
        self._held.append(messages)
        self._held_bytes += sum(len(m.text) + _HELD_OVERHEAD for m in messages.items)
        if self._held_bytes > self.core.settings.max_output:
            self.sink.overflow()

    def _hold(self) -> None:
        self._holding = True
        self.live = False

    def _release(self, shown: dict[Conv, Position]) -> None:
        self._holding = False
        self.live = self.phase is Phase.READY
        held, self._held, self._held_bytes = self._held, None, 0
        for messages in held or ():
            conv = messages.items[0].conv
            after = shown.get(conv, _ZERO)
            fresh = tuple(m for m in messages.items if m.pos > after)
            if not fresh:
                continue
            whole = len(fresh) == len(messages.items)
            self.sink.show(messages if whole else ev.Messages(messages.where, fresh))
            if self.user is not None:
                self.user.mark_shown(conv, fresh[-1].pos)

    # -- what other devices and users did (called by fan-out) ------------------------------

    def joined_elsewhere(self, name: str) -> None:
        self.sink.emit(ev.Joined(name))

    def left_elsewhere(self, chat: str, name: str) -> None:
        self.sink.emit(ev.Left(name))
        if self.current == chat:
            self.current = GENERAL
            self.sink.emit(ev.CurrentChat(GENERAL))

    def banned(self, until_ms: int, by_moderator: bool = False) -> None:
        self.sink.emit(ev.Banned(until_ms, by_moderator))

    def unbanned(self) -> None:
        """A moderator or operator lifted this user's ban."""
        self.sink.emit(ev.BanLifted())

    def kicked(self) -> None:
        """A moderator or operator disconnects this user: say so, then close."""
        self.sink.emit(ev.Kicked())
        self.sink.close()

    def shutting_down(self) -> None:
        self.sink.emit(ev.ShuttingDown())

    def store_reset(self) -> None:
        if self.phase is Phase.READY:  # a session still loading read the new store anyway
            self.sink.emit(ev.StoreReset())

    # -- commands ----------------------------------------------------------------------------

    def _bad_names(self, command: cmd.Command) -> bool:
        """Every name a command carries follows the rules, whatever door it came from:
        names become Redis keys and other users' lines (a `:`, `|` or control character
        in one could reach another key or forge a line). Says why and returns True if not."""
        chats: tuple[str | None, ...] = ()
        nicks: tuple[str, ...] = ()
        match command:
            case (
                cmd.SendChat(chat, _) | cmd.SendChatMany(chat, _) | cmd.Join(chat) | cmd.Leave(chat)
            ):
                chats = (chat,)
            case cmd.Who(chat):
                chats = (chat,)
            case cmd.SendPrivate(nick, _) | cmd.Ban(nick, _) | cmd.Unban(nick) | cmd.Kick(nick):
                nicks = (nick,)
        for what, name in [("chat name", c) for c in chats if c is not None] + [
            ("nickname", n) for n in nicks
        ]:
            err = name_error(name)
            if err:
                self._error(ev.ErrorCode.BAD_NAME, f"bad {what} {name!r}: {err}")
                return True
        return False

    async def _command(self, command: cmd.Command) -> None:
        if self._bad_names(command):
            return
        match command:
            case cmd.Say(texts):
                await self._say(self.current, [bound_blanks(t) for t in texts])
            case cmd.SendPrivate(nick, text):
                await self._send_private(nick, bound_blanks(text))
            case cmd.SendChat(chat, text):
                await self._say(name_key(chat), [bound_blanks(text)])
            case cmd.SendChatMany(chat, texts):
                await self._say(name_key(chat), [bound_blanks(t) for t in texts])
            case cmd.Join(chat):
                await self._join(chat)
            case cmd.Leave(chat):
                await self._leave(chat)
            case cmd.GetChats():
                listed = await self.core.store.active_chats_bounded(
                    self.core.settings.chats_listed, ONLINE_COUNTED
                )
                self.sink.emit(ev.ChatList(tuple(listed.chats), listed.total))
            case cmd.Who(chat):
                await self._who(chat)
            case cmd.History(count):
                await self._history(self.current, count or self.core.settings.history)
            case cmd.Ban(nick, duration):
                await self._ban(nick, duration)
            case cmd.Unban(nick):
                await self._unban(nick)
            case cmd.Kick(nick):
                await self._kick(nick)
            case cmd.Where():
                assert self.user is not None
                chats = sorted(
                    self.user.chats.values(), key=lambda n: (name_key(n) != GENERAL, n.casefold())
                )
                current = self.user.chats.get(self.current, self.current)
                self.sink.emit(ev.WhereNow(current, tuple(chats)))
            case cmd.Help():
                self.sink.emit(ev.HelpWanted())
            case cmd.IssueToken():
                await self._issue_token()
            case cmd.Logout():
                await self._logout()
            case cmd.ChangePassword(old, new):
                await self._change_password(old, new)
            case cmd.Quit():
                self.sink.emit(ev.Bye())
                self.sink.close()
            case _:
                self._error(ev.ErrorCode.BAD_INPUT, "not now: you are logged in")

    async def _say(self, chat: str, texts: list[str]) -> None:
        assert self.user is not None
        name = self.user.chats.get(chat, chat)
        try:
            results = await self.core.store.post_chat(self.key, self.name, chat, name, texts)
        except StoreUnavailable as exc:
            self._store_down(len(texts), exc)
            return
        for result in results:
            if result.status is PostStatus.OK:  # the common case
                METRICS.messages_in += 1
            else:
                self._post_outcome(result, f"you are not in #{name}")

    async def _send_private(self, nick: str, text: str) -> None:
        peer = name_key(nick)
        if peer == self.key:
            self._error(ev.ErrorCode.REFUSED, "you cannot send a private message to yourself")
            return
        try:
            result = await self.core.store.post_private(self.key, self.name, peer, text)
        except StoreUnavailable as exc:
            self._store_down(1, exc)
            return
        self._post_outcome(result, f"no such user {nick}")

    def _store_down(self, messages: int, exc: StoreUnavailable) -> None:
        """Redis refused a post: say so once per message, so no message is lost silently."""
        METRICS.redis_errors.inc()
        text = "not sent: " + _store_text(exc, False)
        for _ in range(messages):
            self._error(ev.ErrorCode.STORE_DOWN, text)

    def _post_outcome(self, result: PostResult, refused: str) -> None:
        if result.status is PostStatus.OK:
            METRICS.messages_in += 1
        elif result.status is PostStatus.BANNED:
            until = ban_end(result.until_ms)
            self._error(ev.ErrorCode.BANNED, f"not sent: you are banned until {until}")
        elif result.status is PostStatus.RATE:
            METRICS.rate_limited.inc()
            self._error(
                ev.ErrorCode.RATE_LIMITED,
                f"slow down: not sent (at most {self.core.settings.rate:g} messages/s; "
                f"retry in {result.retry_ms / 1000:.1f} s)",
            )
        elif result.status is PostStatus.UNCONFIRMED:
            METRICS.redis_errors.inc()
            self._error(ev.ErrorCode.STORE_DOWN, _UNCONFIRMED)
        elif result.status is PostStatus.NO_USER:
            self._error(ev.ErrorCode.NO_SUCH_USER, f"not sent: {refused}")
        else:
            self._error(ev.ErrorCode.NOT_MEMBER, f"not sent: {refused}")

    async def _join(self, typed: str) -> None:
        assert self.user is not None
        chat = name_key(typed)
        self._hold()
        shown: dict[Conv, Position] = {}
        try:
            joined = await self.core.store.join(self.key, chat, typed, self.session_id)
            if self._gone():  # closed meanwhile: fan-out already let this user go
                return
            if joined.status is not JoinStatus.OK:
                self._error(ev.ErrorCode.REFUSED, self._join_refused(joined.status, typed))
                return
            await self.core.fanout.add_chat(self.user, chat, joined.name)
            moved = self.current != chat
            self.current = chat
            self.sink.emit(ev.Joined(joined.name, already=not joined.changed))
            if moved:  # a telnet user sees which chat plain lines now go to
                self.sink.emit(ev.CurrentChat(joined.name))
            messages = await self.core.store.history(chat, joined.name, self.core.settings.history)
            shown = await self._show_stored(messages)
        finally:
            self._release(shown)

    def _join_refused(self, status: JoinStatus, typed: str) -> str:
        settings = self.core.settings
        if status is JoinStatus.USER_LIMIT:
            return (
                f"cannot join #{typed}: you are in {settings.max_user_chats} chats, "
                "the most allowed; /leave one first"
            )
        if status is JoinStatus.CHAT_LIMIT:
            return (
                f"cannot create #{typed}: the server has as many chats as it allows "
                f"({settings.max_chats}); join an existing one"
            )
        return (
            f"cannot create #{typed}: at most {settings.chat_creations} new chats per hour; "
            "join an existing one"
        )

    async def _leave(self, typed: str) -> None:
        assert self.user is not None
        chat = name_key(typed)
        if chat == GENERAL:
            self._error(ev.ErrorCode.REFUSED, "you cannot leave #general")
            return
        left = await self.core.store.leave(self.key, chat, self.session_id)
        if not left.changed:
            self._error(ev.ErrorCode.NOT_MEMBER, f"you are not in #{typed}")
            return
        self.core.fanout.remove_chat(self.user, chat)
        self.sink.emit(ev.Left(left.name))
        if self.current == chat:
            self.current = GENERAL
            self.sink.emit(ev.CurrentChat(GENERAL))

    async def _who(self, typed: str | None) -> None:
        assert self.user is not None
        chat = name_key(typed) if typed is not None else self.current
        name = self.user.chats.get(chat, typed or chat)
        if not await self.core.store.is_member(self.key, chat):
            self._error(ev.ErrorCode.NOT_MEMBER, f"you are not in #{name}")
            return
        online = await self.core.store.who_bounded(chat, WHO_SHOWN, ONLINE_COUNTED)
        self.sink.emit(ev.Online(name, tuple(online.names), online.total, online.capped))

    async def _history(self, chat: str, count: int) -> None:
        assert self.user is not None
        name = self.user.chats.get(chat, chat)
        if not await self.core.store.is_member(self.key, chat):  # left on another device
            self._error(ev.ErrorCode.NOT_MEMBER, f"you are not in #{name}")
            self.current = GENERAL
            self.sink.emit(ev.CurrentChat(GENERAL))
            return
        self._hold()
        shown: dict[Conv, Position] = {}
        try:
            messages = await self.core.store.history(chat, name, count)
            shown = await self._show_stored(messages)
            if not messages:
                self.sink.emit(ev.NoHistory(name, self.core.settings.message_ttl))
        finally:
            self._release(shown)

    async def _audit(self, action: str, target: str, **detail: str) -> None:
        """One audit entry for what this session's user did (see gateway/core/audit.py)."""
        await record(
            self.core.store,
            self.core.settings.audit_keep,
            action,
            self.name,
            target,
            f"gateway:{self.core.gateway_id}",
            peer=self.sink.address,
            **detail,
        )

    async def _moderator(self, what: str) -> bool:
        """Whether this user is a moderator; if not, say that `what` needs one."""
        if await self.core.store.is_moderator(self.key):
            return True
        self._error(ev.ErrorCode.REFUSED, f"only moderators can {what}")
        return False

    async def _ban(self, nick: str, duration: int | None = None) -> None:
        target = name_key(nick)
        if target == self.key:
            self._error(ev.ErrorCode.REFUSED, "you cannot complain about yourself")
            return
        store = self.core.store
        if duration is not None and not await self._moderator(
            "ban for a set time (/ban <nick> alone is a complaint)"
        ):
            return
        if duration is not None or await store.is_moderator(self.key):
            await self._mod_ban(nick, target, duration or self.core.settings.ban_duration)
            return
        address = address_group(self.sink.address)
        result = await store.complain(self.key, target, address)
        threshold = self.core.settings.ban_threshold
        if result.status in (ComplaintStatus.RECORDED, ComplaintStatus.BANNED):
            banned = result.status is ComplaintStatus.BANNED
            await self._audit(
                "complaint",
                result.name,
                count=f"{result.count}/{threshold}",
                **({"banned_until_ms": str(result.until_ms)} if banned else {}),
            )
        if result.status is ComplaintStatus.NO_USER:
            self._error(ev.ErrorCode.NO_SUCH_USER, f"no such user {nick}")
        elif result.status is ComplaintStatus.ALREADY_BANNED:
            self._error(
                ev.ErrorCode.REFUSED,
                f"{result.name} is already banned until {ban_end(result.until_ms)}",
            )
        elif result.status is ComplaintStatus.TOO_NEW:
            self._error(
                ev.ErrorCode.REFUSED,
                "your account is too new for complaints to count; "
                f"try again in {wait_for(result.wait_ms)}",
            )
        elif result.status is ComplaintStatus.RATE:
            self._error(
                ev.ErrorCode.RATE_LIMITED,
                f"too many complaints: at most {self.core.settings.complaints_per_hour} an "
                f"hour; try again in {wait_for(result.wait_ms)}",
            )
        elif result.status is ComplaintStatus.ADDRESS:
            self._error(
                ev.ErrorCode.REFUSED,
                f"a complaint about {result.name} from your address was already counted "
                f"({result.count}/{threshold})",
            )
        elif result.status is ComplaintStatus.AGAIN:
            self._error(
                ev.ErrorCode.REFUSED,
                f"you already complained about {result.name} ({result.count}/{threshold})",
            )
        else:
            until = result.until_ms if result.status is ComplaintStatus.BANNED else None
            self.sink.emit(ev.Complained(result.name, result.count, threshold, until))

    async def _mod_ban(self, nick: str, target: str, duration: int) -> None:
        """A moderator's ban: at once, for `duration` seconds, no complaints needed."""
        placed = await self.core.store.ban(target, duration)
        if placed is None:
            self._error(ev.ErrorCode.NO_SUCH_USER, f"no such user {nick}")
            return
        await self._audit("ban", placed.name, until_ms=str(placed.until_ms), seconds=str(duration))
        self.sink.emit(ev.BanPlaced(placed.name, placed.until_ms))

    async def _unban(self, nick: str) -> None:
        if not await self._moderator("unban"):
            return
        target = name_key(nick)
        account = await self.core.store.get_account(target)
        if account is None:
            self._error(ev.ErrorCode.NO_SUCH_USER, f"no such user {nick}")
            return
        was = await self.core.store.unban(target)
        if was:
            await self._audit("unban", account.name)
        self.sink.emit(ev.Unbanned(account.name, was))

    async def _kick(self, nick: str) -> None:
        if not await self._moderator("kick"):
            return
        target = name_key(nick)
        if target == self.key:
            self._error(ev.ErrorCode.REFUSED, "you cannot kick yourself (/quit)")
            return
        account = await self.core.store.get_account(target)
        if account is None:
            self._error(ev.ErrorCode.NO_SUCH_USER, f"no such user {nick}")
            return
        await self.core.store.kick(target)
        await self._audit("kick", account.name)
        self.sink.emit(ev.KickSent(account.name))

    # -- resume tokens and the password ---------------------------------------------------

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

    # -- the end -----------------------------------------------------------------------------

    def closed(self, how: str = "") -> None:
        """The door's connection is gone: detach from fan-out (idempotent). `how`: who
        ended it, as the door tells (logged)."""
        if self.phase is Phase.CLOSED:
            return
        was = self.phase
        self.phase = Phase.CLOSED
        self.live = False
        self._held = None
        if self.user is not None:
            self.core.fanout.detach(self, self.user)
        log.info(
            "event=disconnect peer=%s session=%s state=%s by=%s",
            self.sink.address,
            self.describe(),
            was.value,
            how or "-",
        )


def _store_text(exc: StoreUnavailable, nothing_done: bool) -> str:
    """Why the store failed, as a user can act on it: refused (full or read-only, until an
    operator acts) or unavailable (try again shortly)."""
    if isinstance(exc, StoreRefused):
        why, when = "the chat store refused it (full or read-only)", "later"
    else:
        why, when = "the chat store is unavailable right now", "shortly"
    return f"{why}; {'nothing was done, ' if nothing_done else ''}try again {when}"


def _runs(messages: Iterable[Message]) -> list[list[Message]]:
    """Consecutive messages of the same conversation, grouped."""
    runs: list[list[Message]] = []
    for m in messages:
        if runs and runs[-1][0].conv == m.conv:
            runs[-1].append(m)
        else:
            runs.append([m])
    return runs
