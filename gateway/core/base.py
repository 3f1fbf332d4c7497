"""What every part of a session shares: the door's `Sink`, fan-out's `Readers`, the
gateway's `Core`, and `SessionBase` (its state, its phase moves, holding and releasing live
messages around stored ones). The parts: `login.py` (nickname, password, registration,
tokens at login), `moderation.py` (complaints, bans, kicks), `credentials.py` (/token,
/logout, /password), and `session.py` (the commands and what fan-out tells a session)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from gateway.core import events as ev
from gateway.core.addresses import address_group
from gateway.core.audit import record
from gateway.core.hashing import HashGone
from gateway.core.phases import Move, Phase, next_phase
from gateway.core.timefmt import wait_for
from gateway.metrics import METRICS
from store.contract import (
    GENERAL,
    Account,
    Change,
    Conv,
    LoginCheck,
    LoginGate,
    LoginLimits,
    Message,
    Position,
    UserState,
)

if TYPE_CHECKING:
    from gateway.core.session import Core, Session
    from gateway.core.user import LocalUser

__all__ = ["BACKLOG_CHUNK", "Readers", "SessionBase", "Sink"]

log = logging.getLogger("chat.session")
_ZERO = Position(0, 0)
#: Seconds a session remembers what a stored read showed (`SessionBase.stored`): a
#: message's live copy comes through pub/sub well within that, even on a loaded gateway
#: (a broadcast to 50,000 reaches its last member in seconds), and the memory is freed.
STORED_FOR = 60.0
#: Bytes of stored messages rendered before the session waits for the door to drain, so a
#: long backlog never sits in memory whole.
BACKLOG_CHUNK = 64 * 1024
#: What one held message is counted as, beyond its text, against the output bound.
_HELD_OVERHEAD = 64


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

    def detach(self, session: Session, user: LocalUser, reason: str | None = "") -> None: ...

    async def quitting(self, session: Session, user: LocalUser, reason: str) -> bool:
        """The session quits: if it is the user's last anywhere, small chats are told
        now; True if they were (its detach then tells nothing)."""

    async def announce(
        self, user: LocalUser, chats: list[str], change: Change, reason: str
    ) -> None:
        """Tell the other members of the small ones of `chats` (never raises)."""

    async def add_chat(self, user: LocalUser, chat: str, name: str) -> None: ...

    def remove_chat(self, user: LocalUser, chat: str) -> None: ...

    @property
    def settled(self) -> bool:
        """Pub/sub is up and no gap is being read: a message published before now has
        come live already, or comes again only through a gap read."""


class SessionBase:
    """A session's state and the steps its parts share; `Session` is the whole."""

    __slots__ = (
        "_account",
        "_held",
        "_held_bytes",
        "_holding",
        "_nick",
        "_number",
        "_quit",
        "_stored_timer",
        "_token",
        "_wrong",
        "core",
        "current",
        "key",
        "live",
        "name",
        "phase",
        "sink",
        "stored",
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
        #: Per conversation, the last message a stored read showed (a join's, a
        #: backlog's, /history's), until a live one past it comes or STORED_FOR has
        #: passed: a message stored just before the read is published on the pub/sub
        #: connection, whose copy can arrive after the read's reply and the release;
        #: fan-out does not show it again (`past_stored`). None: nothing to check (the
        #: common case).
        self.stored: dict[Conv, Position] | None = None
        self._stored_timer: asyncio.TimerHandle | None = None  # ends `stored`
        self._held_bytes = 0
        self._nick: tuple[str, str] | None = None  # (key, display name) being logged in
        self._account: Account | None = None
        self._wrong = 0
        #: What the user said when quitting (told to small chats); None: told already.
        self._quit: str | None = ""
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

    def _ask_again(self) -> None:
        if self.phase is Phase.NICK:
            self.sink.emit(ev.AskNick(first=False))
        elif self.phase is Phase.PASSWORD and self._nick is not None:
            self.sink.emit(ev.AskPassword(self._nick[1], new=self._account is None))

    def _move(self, move: Move) -> None:
        """Change phase, as the table in phases.py allows (PhaseError otherwise)."""
        self.phase = next_phase(self.phase, move)

    def _alive(self) -> bool:
        return self.phase is not Phase.CLOSED

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

    def _hash_refused(self, exc: Exception) -> None:
        """The hasher is full (say so; the same prompt again) or the connection is gone."""
        if isinstance(exc, HashGone) or self._gone():
            return
        METRICS.hash_busy.inc()
        self._error(ev.ErrorCode.BUSY, "server busy: too many logins right now, try again")
        self._ask_again()

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

    def past_stored(self, messages: ev.Messages) -> ev.Messages | None:
        """Of a live burst, what a stored read has not shown already (None: nothing);
        once one is past the read, its conversation is not checked again (a channel's
        messages come in order)."""
        stored = self.stored
        if stored is None:
            return messages
        conv = messages.items[0].conv
        after = stored.get(conv)
        if after is None:
            return messages
        fresh = tuple(m for m in messages.items if m.pos > after)
        if not fresh:
            return None
        del stored[conv]
        if not stored:
            self._forget_stored()
        return messages if len(fresh) == len(messages.items) else ev.Messages(messages.where, fresh)

    def _hold(self) -> None:
        self._holding = True
        self.live = False

    def _release(self, shown: dict[Conv, Position]) -> None:
        self._holding = False
        self.live = self.phase is Phase.READY
        if shown:
            self._remember(shown)
        held, self._held, self._held_bytes = self._held, None, 0
        for messages in held or ():
            # past this read and any earlier one: a late live copy of what an earlier
            # read showed may have come while this one held it
            burst = self.past_stored(messages)
            if burst is None:
                continue
            self.sink.show(burst)
            if self.user is not None:
                self.user.mark_shown(burst.items[0].conv, burst.items[-1].pos)

    def _remember(self, shown: dict[Conv, Position]) -> None:
        """Add what a stored read showed to `stored`, all of it kept STORED_FOR from now."""
        if self.phase is Phase.CLOSED:
            return
        stored = self.stored
        if stored is None:
            stored = self.stored = {}
        for conv, pos in shown.items():
            stored[conv] = max(pos, stored.get(conv, _ZERO))
        self._forget_later()

    def _forget_later(self) -> None:
        if self._stored_timer is not None:
            self._stored_timer.cancel()
        loop = asyncio.get_running_loop()
        self._stored_timer = loop.call_later(STORED_FOR, self._stored_expired)

    def _stored_expired(self) -> None:
        """STORED_FOR has passed; while pub/sub is down or a gap is read, a gap read may
        still bring what a read showed (from before the loss), so wait on. (A closed
        session's timer was cancelled.)"""
        self._stored_timer = None
        if not self.core.fanout.settled:
            self._forget_later()
        else:
            self._forget_stored()

    def _forget_stored(self) -> None:
        self.stored = None
        if self._stored_timer is not None:
            self._stored_timer.cancel()
            self._stored_timer = None

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


def _runs(messages: Iterable[Message]) -> list[list[Message]]:
    """Consecutive messages of the same conversation, grouped."""
    runs: list[list[Message]] = []
    for m in messages:
        if runs and runs[-1][0].conv == m.conv:
            runs[-1].append(m)
        else:
            runs.append([m])
    return runs
