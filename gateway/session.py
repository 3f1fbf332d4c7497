"""One connection's conversation with the gateway: login, then commands.

Lines are handled strictly in order, one at a time, by a task that exists only while
there is input to handle. Consecutive plain messages are posted together (one pipeline),
so a client that pastes 100 lines costs one Redis round trip, not 100.

While a session reads stored messages (backlog at login, history on /chats and /history)
it *holds* live deliveries, then releases them, dropping any the stored read already
showed: no message is shown twice or out of order.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from typing import TYPE_CHECKING

from gateway import commands as cmd
from gateway import render
from gateway.framing import BadEncoding, FrameEvent, Line, LineTooLong
from gateway.metrics import METRICS
from gateway.names import name_error, name_key, password_error, sanitize
from gateway.passwords import hash_password, verify_password
from store import keys
from store.base import PostResult, StoredMessage, StoreUnavailable

if TYPE_CHECKING:
    from gateway.connection import Connection
    from gateway.hub import LocalUser
    from gateway.server import GatewayServer

__all__ = ["Session", "State"]

log = logging.getLogger("chat.session")
GENERAL = keys.GENERAL
_ZERO = (0, 0)
_MAX_QUEUED_LINES = 256
_MAX_BATCH = 256
_MAX_WRONG_PASSWORDS = 3
_WHO_SHOWN = 200


class State(enum.Enum):
    NICK = "nick"
    PASSWORD = "password"
    LOADING = "loading"
    READY = "ready"
    CLOSED = "closed"


class Session:
    __slots__ = (
        "_held",
        "_held_bytes",
        "_holding",
        "_paused",
        "_pending",
        "_queue",
        "_task",
        "_wrong",
        "conn",
        "counted_pending",
        "current",
        "hub",
        "key",
        "live",
        "login_timer",
        "name",
        "server",
        "session_id",
        "settings",
        "state",
        "store",
        "user",
    )

    def __init__(self, conn: Connection, server: GatewayServer, number: int) -> None:
        self.conn = conn
        self.server = server
        self.settings = server.settings
        self.store = server.store
        self.hub = server.hub
        self.session_id = f"{server.gateway_id}:{number}"
        self.state = State.NICK
        #: READY and not holding: the hub may write live lines straight to the connection.
        self.live = False
        self.current = GENERAL
        self.key = ""
        self.name = ""
        self.user: LocalUser | None = None
        self._queue: deque[FrameEvent] | None = None  # created on first input: idle is cheap
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._holding = False
        self._held: list[tuple[str, tuple[int, int], str, bytes]] = []
        self._held_bytes = 0
        self._pending: tuple[str, str, object] | None = None
        self._wrong = 0
        #: Whether this session still counts against the gateway's pending-login limit.
        self.counted_pending = True
        self.login_timer: asyncio.TimerHandle | None = None

    def describe(self) -> str:
        return f"{self.session_id} user={self.name or '-'}"

    # -- output helpers ------------------------------------------------------------------

    def notice(self, text: str) -> None:
        self.conn.write(render.notice(text))

    def error(self, text: str) -> None:
        self.conn.write(render.error(text))

    def start(self) -> None:
        self.notice("Welcome to chat. Enter your nickname:")

    # -- input ---------------------------------------------------------------------------

    def feed(self, events: list[FrameEvent]) -> None:
        if not events or self.state is State.CLOSED:
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.extend(events)
        if len(self._queue) > _MAX_QUEUED_LINES and not self._paused and self.conn.transport:
            self._paused = True
            self.conn.transport.pause_reading()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._queue and self.state is not State.CLOSED:
                event = self._queue.popleft()
                try:
                    await self._handle(event)
                except StoreUnavailable as exc:
                    METRICS.redis_errors.inc()
                    log.warning("event=store_unavailable session=%s error=%s", self.describe(), exc)
                    self.error(
                        "the chat store is unavailable right now; nothing was done, "
                        "try again shortly"
                    )
                    if self.state is State.LOADING:
                        self._abort_login()
                except Exception:
                    log.exception("event=internal_error session=%s", self.describe())
                    self.error("internal error; nothing was done")
                if self._paused and len(self._queue or ()) < _MAX_QUEUED_LINES // 4:
                    self._paused = False
                    if self.conn.transport and not self.conn.closing:
                        self.conn.transport.resume_reading()
        finally:
            self._task = None
            if not self._queue:
                self._queue = None

    async def _handle(self, event: FrameEvent) -> None:
        if isinstance(event, LineTooLong):
            self.error(f"line too long (over {event.limit} bytes), discarded")
            self._reprompt()
            return
        if isinstance(event, BadEncoding):
            self.error("line is not valid UTF-8, discarded")
            self._reprompt()
            return
        assert isinstance(event, Line)
        if self.state is State.READY:
            await self._ready_line(event.text)
        elif self.state is State.NICK:
            await self._nick_line(event.text)
        elif self.state is State.PASSWORD:
            await self._password_line(event.text)

    def _reprompt(self) -> None:
        if self.state is State.NICK:
            self.notice("Enter your nickname:")
        elif self.state is State.PASSWORD and self._pending is not None:
            self._prompt_password()

    # -- login ---------------------------------------------------------------------------

    async def _nick_line(self, text: str) -> None:
        nick = sanitize(text).strip()
        if not nick:
            return
        err = name_error(nick)
        if err:
            self.error(f"bad nickname: {err}")
            self.notice("Enter your nickname:")
            return
        key = name_key(nick)
        by_nick, by_address = await self.store.login_failures(key, self.conn.address)
        limit = self.settings.max_login_failures
        if limit and (by_nick >= limit or by_address >= limit * 3):
            self.error("too many failed logins; try again later")
            log.warning("event=login_throttled peer=%s nick=%s", self.conn.address, nick)
            self.conn.close()
            return
        account = await self.store.get_account(key)
        self._pending = (key, account.name if account else nick, account)
        self.state = State.PASSWORD
        self._prompt_password()

    def _prompt_password(self) -> None:
        assert self._pending is not None
        _, nick, account = self._pending
        if account is None:
            self.notice(f"New nickname {nick}. Choose a password:")
        else:
            self.notice(f"Password for {nick}:")

    async def _password_line(self, password: str) -> None:
        if not password:
            return
        assert self._pending is not None
        key, nick, account = self._pending
        loop = asyncio.get_running_loop()
        if account is None:
            err = password_error(password)
            if err:
                self.error(f"bad password: {err}")
                self._prompt_password()
                return
            hashed = await loop.run_in_executor(
                None, hash_password, password, self.settings.scrypt_log_n
            )
            if await self.store.register(key, nick, hashed):
                log.info("event=register peer=%s user=%s", self.conn.address, nick)
                await self._enter(key, nick, first=True)
                return
            account = await self.store.get_account(key)  # registered meanwhile elsewhere
            if account is None:
                raise StoreUnavailable("account vanished")
        from store.base import Account

        assert isinstance(account, Account)
        ok = await loop.run_in_executor(None, verify_password, password, account.password_hash)
        if self.state is State.CLOSED:
            return
        if ok:
            await self._enter(key, account.name, first=False)
            return
        self._wrong += 1
        METRICS.login_failures.inc()
        log.warning(
            "event=wrong_password peer=%s user=%s tries=%d",
            self.conn.address,
            account.name,
            self._wrong,
        )
        await self.store.count_login_failure(
            key, self.conn.address, self.settings.login_fail_window
        )
        self.error("wrong password")
        if self._wrong >= _MAX_WRONG_PASSWORDS:
            self.error("too many wrong passwords; disconnecting")
            self.conn.close()
            return
        self._pending = (key, account.name, account)
        self._prompt_password()

    async def _enter(self, key: str, name: str, *, first: bool) -> None:
        """Logged in: subscribe, show the backlog, then go live."""
        self.state = State.LOADING
        self._pending = None
        self.key, self.name = key, name
        self._hold()
        state = await self.store.load_user(key)
        user = self.user = await self.hub.attach(self, key, name, state)
        self.server.logged_in(self)
        if first:
            messages = await self.store.history(
                GENERAL, user.chats.get(GENERAL, GENERAL), self.settings.history
            )
        else:
            for conv, mid in user.shown.items():  # this gateway may know newer positions
                state.cursors[conv] = mid
            state.peers |= user.peers
            state.chats = dict(user.chats)
            messages = await self.store.backlog(key, state)
        shown = await self._write_stored(messages)
        METRICS.logins.inc()
        log.info(
            "event=login peer=%s session=%s backlog=%d",
            self.conn.address,
            self.describe(),
            len(messages),
        )
        self.notice(f"ready: logged in as {name}, current chat #general (/help for commands)")
        self.state = State.READY
        self._release(shown)

    def _abort_login(self) -> None:
        self.error("login failed; please reconnect")
        self.conn.close()

    async def _write_stored(self, messages: list[StoredMessage]) -> dict[str, tuple[int, int]]:
        """Write stored messages in order, in chunks the socket can take; mark them shown."""
        assert self.user is not None
        shown: dict[str, tuple[int, int]] = {}
        chunk: list[bytes] = []
        size = 0
        for m in messages:
            line = self.hub.render_stored(self.key, self.user, m)
            chunk.append(line)
            size += len(line)
            shown[m.conv] = m.key
            self.user.mark_shown(m.conv, m.id)
            if size > 64 * 1024:
                self.conn.write(b"".join(chunk))
                chunk, size = [], 0
                await self.conn.drain()
        if chunk:
            self.conn.write(b"".join(chunk))
        return shown

    # -- live delivery (called by the hub) -----------------------------------------------

    def deliver(self, conv: str, key: tuple[int, int], mid: str, line: bytes) -> bool:
        if self.live:
            self.conn.write(line)
            return True
        if self._holding and self.state is not State.CLOSED:
            self._held.append((conv, key, mid, line))
            self._held_bytes += len(line)
            if self._held_bytes > self.settings.max_output:
                self.conn.overflow()
        return False

    def _hold(self) -> None:
        self._holding = True
        self.live = False

    def _release(self, shown: dict[str, tuple[int, int]]) -> None:
        self._holding = False
        self.live = self.state is State.READY
        held, self._held, self._held_bytes = self._held, [], 0
        for conv, key, mid, line in held:
            if key > shown.get(conv, _ZERO):
                self.conn.write(line)
                if self.user is not None:
                    self.user.mark_shown(conv, mid)

    # -- commands ------------------------------------------------------------------------

    async def _ready_line(self, text: str) -> None:
        command = cmd.parse(sanitize(text))
        if isinstance(command, cmd.Say):
            texts = [command.text]
            command = None
            while self._queue and len(texts) < _MAX_BATCH and isinstance(self._queue[0], Line):
                nxt = cmd.parse(sanitize(self._queue.popleft().text))  # type: ignore[union-attr]
                if isinstance(nxt, cmd.Say):
                    texts.append(nxt.text)
                elif nxt is not None:
                    command = nxt
                    break
            await self._say(self.current, texts)
        if command is not None:
            await self._command(command)

    async def _say(self, chat: str, texts: list[str]) -> None:
        assert self.user is not None
        name = self.user.chats.get(chat, chat)
        try:
            results = await self.store.post_chat(self.key, self.name, chat, name, texts)
        except StoreUnavailable:
            self._store_down(len(texts))
            return
        for i in range(0, len(results), 2):
            if results[i] == "ok":  # the common case, without building a PostResult
                METRICS.messages_in += 1
            else:
                self._post_outcome(
                    PostResult(results[i], results[i + 1]), f"you are not in #{name}"
                )

    async def _result(self, fut: asyncio.Future[list[str]]) -> PostResult | None:
        try:
            return PostResult(*(await fut))
        except StoreUnavailable:
            self._store_down(1)
            return None

    def _store_down(self, messages: int) -> None:
        """Redis refused a post: say so once per message, so no message is lost silently."""
        METRICS.redis_errors.inc()
        for _ in range(messages):
            self.error("not sent: the chat store is unavailable right now; try again shortly")

    def _post_outcome(self, result: PostResult | None, refused: str) -> None:
        if result is None:
            return
        if result.status == "ok":
            METRICS.messages_in += 1
        elif result.status == "banned":
            self.error(f"not sent: you are banned until {render.ban_end(int(result.value))}")
        elif result.status == "rate":
            METRICS.rate_limited.inc()
            self.error(
                f"slow down: not sent (at most {self.settings.rate:g} messages/s; "
                f"retry in {int(result.value) / 1000:.1f} s)"
            )
        else:
            self.error(f"not sent: {refused}")

    async def _command(self, command: cmd.Command | cmd.CommandError) -> None:
        assert self.user is not None
        match command:
            case cmd.CommandError(message):
                self.error(message)
            case cmd.SendPrivate(nick, text):
                peer = name_key(nick)
                if peer == self.key:
                    self.error("you cannot send a private message to yourself")
                    return
                fut = self.store.post_private(self.key, self.name, peer, text)
                self._post_outcome(await self._result(fut), f"no such user {nick}")
            case cmd.SendChat(chat, text):
                await self._say(name_key(chat), [text])
            case cmd.Join(chat):
                await self._join(chat)
            case cmd.Leave(chat):
                await self._leave(chat)
            case cmd.GetChats():
                infos = await self.store.active_chats()
                listing = ", ".join(
                    f"#{c.name} ({c.members} members, {c.online} online)" for c in infos
                )
                self.notice(f"chats: {listing}" if listing else "chats: none")
            case cmd.Who(chat):
                await self._who(chat)
            case cmd.History(count):
                await self._history(self.current, count or self.settings.history)
            case cmd.Ban(nick):
                await self._ban(nick)
            case cmd.Help():
                for line in cmd.HELP_LINES:
                    self.notice(line)
            case cmd.Quit():
                self.notice("bye")
                self.conn.close()
            case _:
                self.error("unsupported command")

    async def _join(self, typed: str) -> None:
        assert self.user is not None
        chat = name_key(typed)
        self._hold()
        try:
            added, name = await self.store.join(self.key, chat, typed, self.session_id)
            await self.hub.add_chat(self.user, chat, name)
            self.current = chat
            self.notice(f"joined #{name}" if added else f"you are in #{name}")
            messages = await self.store.history(chat, name, self.settings.history)
            shown = await self._write_stored(messages)
        except BaseException:
            self._release({})
            raise
        self._release(shown)

    async def _leave(self, typed: str) -> None:
        assert self.user is not None
        chat = name_key(typed)
        if chat == GENERAL:
            self.error("you cannot leave #general")
            return
        removed, name = await self.store.leave(self.key, chat, self.session_id)
        if not removed:
            self.error(f"you are not in #{typed}")
            return
        self.hub.remove_chat(self.user, chat)
        self.notice(f"left #{name}")
        if self.current == chat:
            self.current = GENERAL
            self.notice("current chat is now #general")

    async def _who(self, typed: str | None) -> None:
        assert self.user is not None
        chat = name_key(typed) if typed is not None else self.current
        name = self.user.chats.get(chat, typed or chat)
        if not await self.store.is_member(self.key, chat):
            self.error(f"you are not in #{name}")
            return
        names = await self.store.who(chat)
        shown = ", ".join(names[:_WHO_SHOWN])
        more = f" and {len(names) - _WHO_SHOWN} more" if len(names) > _WHO_SHOWN else ""
        self.notice(f"online in #{name} ({len(names)}): {shown}{more}")

    async def _history(self, chat: str, count: int) -> None:
        assert self.user is not None
        name = self.user.chats.get(chat, chat)
        if not await self.store.is_member(self.key, chat):  # left on another device
            self.error(f"you are not in #{name}")
            self.current = GENERAL
            self.notice("current chat is now #general")
            return
        self._hold()
        try:
            messages = await self.store.history(chat, name, count)
            shown = await self._write_stored(messages)
        except BaseException:
            self._release({})
            raise
        if not messages:
            self.notice(f"no messages in #{name} in the last {self.settings.message_ttl} s")
        self._release(shown)

    async def _ban(self, nick: str) -> None:
        target = name_key(nick)
        if target == self.key:
            self.error("you cannot complain about yourself")
            return
        result = await self.store.complain(self.key, target)
        threshold = self.settings.ban_threshold
        if result.status == "nouser":
            self.error(f"no such user {nick}")
        elif result.status == "banned":
            self.error(f"{result.name} is already banned until {render.ban_end(result.until_ms)}")
        elif result.status == "again":
            self.error(f"you already complained about {result.name} ({result.count}/{threshold})")
        elif result.status == "ban":
            self.notice(
                f"complaint about {result.name} recorded ({result.count}/{threshold}): "
                f"{result.name} is banned until {render.ban_end(result.until_ms)}"
            )
        else:
            self.notice(f"complaint about {result.name} recorded ({result.count}/{threshold})")

    # -- the end -------------------------------------------------------------------------

    def shutdown_notice(self) -> None:
        self.notice("server shutting down")

    def closed(self) -> None:
        if self.state is State.CLOSED:
            return
        was = self.state
        self.state = State.CLOSED
        self.live = False
        self._queue = None
        if self.login_timer is not None:
            self.login_timer.cancel()
        if self.user is not None:
            self.hub.detach(self, self.user)
        log.info(
            "event=disconnect peer=%s session=%s state=%s",
            self.conn.address,
            self.describe(),
            was.value,
        )
