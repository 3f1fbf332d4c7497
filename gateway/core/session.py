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
from gateway.core.hashing import HashBusy, Hasher, HashGone
from gateway.core.names import name_error, name_key, password_error
from gateway.core.timefmt import ban_end
from gateway.metrics import METRICS
from gateway.settings import Settings
from store import keys
from store.contract import (
    Account,
    ComplaintStatus,
    Message,
    PostResult,
    PostStatus,
    Store,
    StoreUnavailable,
    UserState,
)

if TYPE_CHECKING:
    from gateway.core.user import LocalUser

__all__ = ["Core", "Phase", "Readers", "Session", "Sink"]

log = logging.getLogger("chat.session")
GENERAL = keys.GENERAL
_ZERO = (0, 0)
#: Wrong passwords on one connection before it is closed (the contract says 3).
MAX_WRONG_PASSWORDS = 3
#: Names listed by /who; the rest are counted ("and N more"), so one reply stays small.
WHO_SHOWN = 200
#: Bytes of stored messages rendered before the session waits for the door to drain, so a
#: long backlog never sits in memory whole.
BACKLOG_CHUNK = 64 * 1024
#: What one held message is counted as, beyond its text, against the output bound.
_HELD_OVERHEAD = 64


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
        return Session(self, sink, f"{self.gateway_id}:{self._numbers}")


class Session:
    __slots__ = (
        "_account",
        "_held",
        "_held_bytes",
        "_holding",
        "_nick",
        "_wrong",
        "core",
        "current",
        "key",
        "live",
        "name",
        "phase",
        "session_id",
        "sink",
        "user",
    )

    def __init__(self, core: Core, sink: Sink, session_id: str) -> None:
        self.core = core
        self.sink = sink
        self.session_id = session_id
        self.phase = Phase.NICK
        #: READY and not holding: fan-out may show live messages straight to the sink.
        self.live = False
        self.current = GENERAL
        self.key = ""
        self.name = ""
        self.user: LocalUser | None = None
        self._holding = False
        self._held: list[ev.Messages] = []
        self._held_bytes = 0
        self._nick: tuple[str, str] | None = None  # (key, display name) being logged in
        self._account: Account | None = None
        self._wrong = 0

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
            self._error(
                ev.ErrorCode.STORE_DOWN,
                "the chat store is unavailable right now; nothing was done, try again shortly",
            )
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
            await self._take_nick(command.text)
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

    async def _take_nick(self, nick: str) -> None:
        err = name_error(nick)
        if err:
            self._error(ev.ErrorCode.BAD_NAME, f"bad nickname: {err}")
            self.sink.emit(ev.AskNick(first=False))
            return
        key = name_key(nick)
        if await self._locked_out(key):
            return
        account = await self.core.store.get_account(key)
        self._nick = (key, account.name if account else nick)
        self._account = account
        self.phase = Phase.PASSWORD
        self._ask_again()

    async def _locked_out(self, key: str) -> bool:
        by_nick, by_address = await self.core.store.login_failures(key, self.sink.address)
        limit = self.core.settings.max_login_failures
        if limit and (by_nick >= limit or by_address >= limit * 3):
            self._error(ev.ErrorCode.LOCKED_OUT, "too many failed logins; try again later")
            log.warning("event=login_throttled peer=%s nick=%s", self.sink.address, key)
            self.sink.close()
            return True
        return False

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
            if await self.core.store.register(key, nick, hashed):
                if self._gone():  # registered, but nobody is there to log in
                    return
                log.info("event=register peer=%s user=%s", self.sink.address, nick)
                await self._enter(key, nick, first=True)
                return
            account = await self.core.store.get_account(key)  # registered meanwhile elsewhere
            if account is None:
                raise StoreUnavailable("account vanished")
        try:
            ok = await hasher.verify(password, account.password_hash, alive)
        except (HashBusy, HashGone) as exc:
            self._account = account
            self._hash_refused(exc)
            return
        if self.phase is Phase.CLOSED:
            return
        if ok:
            await self._enter(key, account.name, first=False)
            return
        self._wrong += 1
        METRICS.login_failures.inc()
        log.warning(
            "event=wrong_password peer=%s user=%s tries=%d",
            self.sink.address,
            account.name,
            self._wrong,
        )
        await self.core.store.count_login_failure(
            key, self.sink.address, settings.login_fail_window
        )
        self._error(ev.ErrorCode.WRONG_PASSWORD, "wrong password")
        if self._wrong >= MAX_WRONG_PASSWORDS:
            self._error(ev.ErrorCode.LOCKED_OUT, "too many wrong passwords; disconnecting")
            self.sink.close()
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

    async def _enter(self, key: str, name: str, *, first: bool) -> None:
        """Logged in: subscribe, show the backlog, then go live."""
        self.phase = Phase.LOADING
        self._nick = self._account = None
        self.key, self.name = key, name
        self._hold()
        store = self.core.store
        state = await store.load_user(key)
        user = self.user = await self.core.fanout.attach(self, key, name, state)
        if self._gone():  # the connection went while we waited: no ghost
            self.core.fanout.detach(self, user)
            return
        if first:
            messages = await store.history(
                GENERAL, user.chats.get(GENERAL, GENERAL), self.core.settings.history
            )
        else:
            for conv, mid in user.shown.items():  # this gateway may know newer positions
                state.cursors[conv] = mid
            state.peers |= user.peers
            state.chats = dict(user.chats)
            messages = await store.backlog(key, state)
        shown = await self._show_stored(messages)
        METRICS.logins.inc()
        log.info(
            "event=login peer=%s session=%s backlog=%d",
            self.sink.address,
            self.describe(),
            len(messages),
        )
        self.sink.emit(ev.Ready(name, GENERAL))
        self.phase = Phase.READY
        self._release(shown)

    def _abort_login(self) -> None:
        self._error(ev.ErrorCode.STORE_DOWN, "login failed; please reconnect")
        self.sink.close()

    # -- stored messages, hold and release -------------------------------------------------

    async def _show_stored(self, messages: list[Message]) -> dict[str, tuple[int, int]]:
        """Show stored messages in order, waiting for the door every BACKLOG_CHUNK bytes;
        mark them shown. Returns the last id shown per conversation."""
        user = self.user
        assert user is not None
        shown: dict[str, tuple[int, int]] = {}
        size = 0
        for run in _runs(messages):
            self.sink.show(ev.Messages(user.view(run[0]), tuple(run)))
            last = run[-1]
            shown[last.conv] = last.key
            user.mark_shown(last.conv, last.id)
            size += sum(len(m.text) + _HELD_OVERHEAD for m in run)
            if size > BACKLOG_CHUNK:
                size = 0
                await self.sink.drain()
        return shown

    def hold(self, messages: ev.Messages) -> None:
        """Fan-out's delivery while this session is not live: keep them for `_release`."""
        if not self._holding or self.phase is Phase.CLOSED:
            return
        self._held.append(messages)
        self._held_bytes += sum(len(m.text) + _HELD_OVERHEAD for m in messages.items)
        if self._held_bytes > self.core.settings.max_output:
            self.sink.overflow()

    def _hold(self) -> None:
        self._holding = True
        self.live = False

    def _release(self, shown: dict[str, tuple[int, int]]) -> None:
        self._holding = False
        self.live = self.phase is Phase.READY
        held, self._held, self._held_bytes = self._held, [], 0
        for messages in held:
            conv = messages.items[0].conv
            after = shown.get(conv, _ZERO)
            fresh = tuple(m for m in messages.items if m.key > after)
            if not fresh:
                continue
            whole = len(fresh) == len(messages.items)
            self.sink.show(messages if whole else ev.Messages(messages.where, fresh))
            if self.user is not None:
                self.user.mark_shown(conv, fresh[-1].id)

    # -- what other devices and users did (called by fan-out) ------------------------------

    def joined_elsewhere(self, name: str) -> None:
        self.sink.emit(ev.Joined(name))

    def left_elsewhere(self, chat: str, name: str) -> None:
        self.sink.emit(ev.Left(name))
        if self.current == chat:
            self.current = GENERAL
            self.sink.emit(ev.CurrentChat(GENERAL))

    def banned(self, until_ms: int) -> None:
        self.sink.emit(ev.Banned(until_ms))

    def shutting_down(self) -> None:
        self.sink.emit(ev.ShuttingDown())

    # -- commands ----------------------------------------------------------------------------

    async def _command(self, command: cmd.Command) -> None:
        match command:
            case cmd.Say(texts):
                await self._say(self.current, list(texts))
            case cmd.SendPrivate(nick, text):
                await self._send_private(nick, text)
            case cmd.SendChat(chat, text):
                await self._say(name_key(chat), [text])
            case cmd.Join(chat):
                await self._join(chat)
            case cmd.Leave(chat):
                await self._leave(chat)
            case cmd.GetChats():
                infos = await self.core.store.active_chats()
                self.sink.emit(ev.ChatList(tuple(infos)))
            case cmd.Who(chat):
                await self._who(chat)
            case cmd.History(count):
                await self._history(self.current, count or self.core.settings.history)
            case cmd.Ban(nick):
                await self._ban(nick)
            case cmd.Help():
                self.sink.emit(ev.HelpWanted())
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
        except StoreUnavailable:
            self._store_down(len(texts))
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
        except StoreUnavailable:
            self._store_down(1)
            return
        self._post_outcome(result, f"no such user {nick}")

    def _store_down(self, messages: int) -> None:
        """Redis refused a post: say so once per message, so no message is lost silently."""
        METRICS.redis_errors.inc()
        for _ in range(messages):
            self._error(
                ev.ErrorCode.STORE_DOWN,
                "not sent: the chat store is unavailable right now; try again shortly",
            )

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
        elif result.status is PostStatus.NO_USER:
            self._error(ev.ErrorCode.NO_SUCH_USER, f"not sent: {refused}")
        else:
            self._error(ev.ErrorCode.NOT_MEMBER, f"not sent: {refused}")

    async def _join(self, typed: str) -> None:
        assert self.user is not None
        chat = name_key(typed)
        self._hold()
        shown: dict[str, tuple[int, int]] = {}
        try:
            joined = await self.core.store.join(self.key, chat, typed, self.session_id)
            await self.core.fanout.add_chat(self.user, chat, joined.name)
            self.current = chat
            self.sink.emit(ev.Joined(joined.name, already=not joined.changed))
            messages = await self.core.store.history(chat, joined.name, self.core.settings.history)
            shown = await self._show_stored(messages)
        finally:
            self._release(shown)

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
        names = await self.core.store.who(chat)
        self.sink.emit(ev.Online(name, tuple(names[:WHO_SHOWN]), len(names)))

    async def _history(self, chat: str, count: int) -> None:
        assert self.user is not None
        name = self.user.chats.get(chat, chat)
        if not await self.core.store.is_member(self.key, chat):  # left on another device
            self._error(ev.ErrorCode.NOT_MEMBER, f"you are not in #{name}")
            self.current = GENERAL
            self.sink.emit(ev.CurrentChat(GENERAL))
            return
        self._hold()
        shown: dict[str, tuple[int, int]] = {}
        try:
            messages = await self.core.store.history(chat, name, count)
            shown = await self._show_stored(messages)
            if not messages:
                self.sink.emit(ev.NoHistory(name, self.core.settings.message_ttl))
        finally:
            self._release(shown)

    async def _ban(self, nick: str) -> None:
        target = name_key(nick)
        if target == self.key:
            self._error(ev.ErrorCode.REFUSED, "you cannot complain about yourself")
            return
        result = await self.core.store.complain(self.key, target)
        threshold = self.core.settings.ban_threshold
        if result.status is ComplaintStatus.NO_USER:
            self._error(ev.ErrorCode.NO_SUCH_USER, f"no such user {nick}")
        elif result.status is ComplaintStatus.ALREADY_BANNED:
            self._error(
                ev.ErrorCode.REFUSED,
                f"{result.name} is already banned until {ban_end(result.until_ms)}",
            )
        elif result.status is ComplaintStatus.AGAIN:
            self._error(
                ev.ErrorCode.REFUSED,
                f"you already complained about {result.name} ({result.count}/{threshold})",
            )
        else:
            until = result.until_ms if result.status is ComplaintStatus.BANNED else None
            self.sink.emit(ev.Complained(result.name, result.count, threshold, until))

    # -- the end -----------------------------------------------------------------------------

    def closed(self) -> None:
        """The door's connection is gone: detach from fan-out (idempotent)."""
        if self.phase is Phase.CLOSED:
            return
        was = self.phase
        self.phase = Phase.CLOSED
        self.live = False
        self._held = []
        if self.user is not None:
            self.core.fanout.detach(self, self.user)
        log.info(
            "event=disconnect peer=%s session=%s state=%s",
            self.sink.address,
            self.describe(),
            was.value,
        )


def _runs(messages: Iterable[Message]) -> list[list[Message]]:
    """Consecutive messages of the same conversation, grouped."""
    runs: list[list[Message]] = []
    for m in messages:
        if runs and runs[-1][0].conv == m.conv:
            runs[-1].append(m)
        else:
            runs.append([m])
    return runs
