"""One user session's logic, whatever the door: login, commands, backlog, hold-and-release.

A door hands in typed commands one at a time (`await session.handle(command)`, strictly in
order) and receives typed events through its `Sink`. The session never sees bytes, sockets
or transports; it asks the `Store` and gets values back.

While the session reads stored messages (backlog at login, history on join and /history)
it *holds* live deliveries, then releases them, dropping any the stored read already
showed: no message is shown twice or out of order.
"""

from __future__ import annotations

import logging
import time

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core import history
from gateway.core.base import Readers, Sink
from gateway.core.budget import Budget
from gateway.core.credentials import Credentials
from gateway.core.hashing import Hasher
from gateway.core.login import Login
from gateway.core.moderation import Moderation
from gateway.core.names import (
    bound_blanks,
    name_error,
    name_key,
    name_skeleton,
)
from gateway.core.phases import Move, Phase, accepts
from gateway.core.timefmt import ban_end, wait_for
from gateway.metrics import METRICS
from gateway.settings import Settings
from store.contract import (
    GENERAL,
    MAX_TAGS,
    Change,
    Conv,
    JoinStatus,
    Kind,
    Position,
    PostResult,
    PostStatus,
    Range,
    Store,
    StoreRefused,
    StoreUnavailable,
)

__all__ = ["Core", "Phase", "Readers", "Session", "Sink"]

log = logging.getLogger("chat.session")
#: Names listed by /who; the rest are counted ("and N more"), so one reply stays small.
WHO_SHOWN = 200
#: Online members /who and /get_chats count at most per chat ("1000+"): the Redis work
#: of one reply stays bounded in a chat of 50,000 (counting them all, with the union of
#: everyone online, took about 100 ms of Redis per /who).
ONLINE_COUNTED = 1000
_UNCONFIRMED = (
    "the chat store did not confirm your message in time; it may have been delivered "
    "(check before sending it again)"
)


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


_GENERAL_LOOK = name_skeleton(GENERAL)


def _looks_like(typed: str, existing: str) -> str:
    """Why a chat that would look like a live one is not created (`#generaI` beside
    `#general`): a reader could not tell which one they are in."""
    return (
        f"cannot create #{typed}: it looks like #{existing}, which exists; "
        f"join #{existing} or choose another name"
    )


class Session(Login, Moderation, Credentials):
    """One session: the login parts, the commands of READY, and what fan-out tells it.
    Its phase moves only as phases.TRANSITIONS allows."""

    __slots__ = ()

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
            self._after_failure()
        except Exception:
            log.exception("event=internal_error session=%s", self.describe())
            self._error(ev.ErrorCode.INTERNAL, "internal error; nothing was done")
            self._after_failure()

    def _after_failure(self) -> None:
        """A command failed before it did anything: a login that was loading ends; one
        that was asking for a nickname or password asks again (it waited in silence)."""
        if self.phase is Phase.LOADING:
            self._abort_login()
        else:
            self._ask_again()

    async def _dispatch(self, command: cmd.Command) -> None:
        if isinstance(command, cmd.Rejected):
            self._error(ev.ErrorCode.BAD_INPUT, command.text)
            self._ask_again()
        elif self.phase is Phase.READY:
            await self._command(command)
        elif not accepts(self.phase, command):  # what each phase takes: phases.ACCEPTS
            self._error(ev.ErrorCode.BAD_INPUT, "log in first")
            self._ask_again()
        elif isinstance(command, cmd.Nick):
            if command.token is None:
                await self._take_nick(command.text)
            else:
                await self._token_login(command.text, command.token)
        elif isinstance(command, cmd.Password):
            await self._password(command.text)
        else:  # cmd.Quit
            assert isinstance(command, cmd.Quit)
            self._quit = command.reason
            self.sink.emit(ev.Bye())
            self.sink.close()

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
            case cmd.History(_, chat, peer):
                chats = (chat,)
                nicks = (peer,) if peer is not None else ()
            case cmd.SendPrivate(nick, _) | cmd.Ban(nick, _) | cmd.Unban(nick) | cmd.Kick(nick):
                nicks = (nick,)
            case cmd.SendTags(target, _, private):
                if private:
                    nicks = (target,)
                else:
                    chats = (target,)
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
            case cmd.SendPrivate(nick, text, kind, tags, to_self):
                if not self._bad_tags(tags):
                    await self._send_private(nick, bound_blanks(text), kind, tags, to_self)
            case cmd.SendChat(chat, text, kind, tags):
                if not self._bad_tags(tags):
                    await self._say(name_key(chat), [bound_blanks(text)], kind, tags)
            case cmd.SendTags(target, tags, private):
                if not self._bad_tags(tags):
                    await self._send_tags(target, tags, private)
            case cmd.SendChatMany(chat, texts):
                await self._say(name_key(chat), [bound_blanks(t) for t in texts])
            case cmd.Join(chat):
                await self._join(chat)
            case cmd.Leave(chat, reason):
                await self._leave(chat, reason)
            case cmd.GetChats():
                listed = await self.core.store.active_chats_bounded(
                    self.core.settings.chats_listed, ONLINE_COUNTED
                )
                self.sink.emit(ev.ChatList(tuple(listed.chats), listed.total))
            case cmd.Who(chat):
                await self._who(chat)
            case cmd.History(count, chat, peer):
                count = count or self.core.settings.history
                if peer is not None:
                    await self._private_history(peer, count)
                else:
                    await self._history(self.current if chat is None else name_key(chat), count)
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
            case cmd.ReadHistory():
                await history.read_history(self, command)
            case cmd.RecentTargets():
                await history.recent_targets(self, command)
            case cmd.MarkRead():
                await history.mark_read(self, command)
            case cmd.Quit(reason):
                assert self.user is not None
                # the last session here: small chats are told before it closes (an IRC
                # server's QUIT reaches the channel before the quitter's ERROR)
                told = await self.core.fanout.quitting(self, self.user, reason)
                self._quit = None if told else reason
                self.sink.emit(ev.Bye())
                self.sink.close()
            case _:
                self._error(ev.ErrorCode.BAD_INPUT, "not now: you are logged in")

    def _bad_tags(self, tags: str) -> bool:
        """Client tags past the bound or with a control character (they travel inside the
        store's records and other users' lines): refused with why, nothing sent."""
        if not tags:
            return False
        if len(tags.encode()) > MAX_TAGS:
            self._error(ev.ErrorCode.BAD_INPUT, f"not sent: tags over {MAX_TAGS} bytes")
            return True
        if not tags.isprintable():
            self._error(ev.ErrorCode.BAD_INPUT, "not sent: a control character in the tags")
            return True
        return False

    async def _say(
        self, chat: str, texts: list[str], kind: Kind = Kind.MESSAGE, tags: str = ""
    ) -> None:
        assert self.user is not None
        name = self.user.chats.get(chat, chat)
        try:
            results = await self.core.store.post_chat(
                self.key, self.name, chat, name, texts, kind, tags
            )
        except StoreUnavailable as exc:
            self._store_down(len(texts), exc)
            return
        for result in results:
            if result.status is PostStatus.OK:  # the common case
                METRICS.messages_in += 1
            else:
                self._post_outcome(result, f"you are not in #{name}")

    async def _send_private(
        self,
        nick: str,
        text: str,
        kind: Kind = Kind.MESSAGE,
        tags: str = "",
        to_self: bool = False,
    ) -> None:
        peer = name_key(nick)
        if peer == self.key and not to_self:
            self._error(ev.ErrorCode.REFUSED, "you cannot send a private message to yourself")
            return
        try:
            result = await self.core.store.post_private(self.key, self.name, peer, text, kind, tags)
        except StoreUnavailable as exc:
            self._store_down(1, exc)
            return
        self._post_outcome(result, f"no such user {nick}")

    async def _send_tags(self, target: str, tags: str, private: bool) -> None:
        """Client tags without a message: checked here (membership as this gateway knows
        it, the ban, the user's own budget: `tags_per_minute`), then published once."""
        user = self.user
        assert user is not None
        if not tags:
            return
        if user.banned_until > time.time() * 1000:
            until = ban_end(user.banned_until)
            self._error(ev.ErrorCode.BANNED, f"not sent: you are banned until {until}")
            return
        per_minute = self.core.settings.tags_per_minute
        if per_minute:
            budget = user.tags_budget
            if budget is None:
                budget = user.tags_budget = Budget(per_minute)
            wait = budget.take(1, per_minute)
            if wait:
                METRICS.rate_limited.inc()
                self._error(
                    ev.ErrorCode.RATE_LIMITED,
                    f"slow down: not sent (at most {per_minute} a minute; retry in {wait:.1f} s)",
                )
                return
        store = self.core.store
        if private:
            peer = name_key(target)  # yourself too (only IRC sends tags): as a note is
            (name,) = await store.names([peer])
            if name is None:
                self._error(ev.ErrorCode.NO_SUCH_USER, f"not sent: no such user {target}")
                return
            await store.send_tags(self.key, self.name, Conv.private(self.key, peer), name, tags)
            return
        chat = name_key(target)
        if chat not in user.chats:
            self._error(ev.ErrorCode.NOT_MEMBER, f"not sent: you are not in #{target}")
            return
        await store.send_tags(self.key, self.name, Conv.of_chat(chat), user.chats[chat], tags)

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
        look = name_skeleton(typed)
        if (  # #general is created by registration, not by a join: its look is held here
            look == _GENERAL_LOOK
            and chat != GENERAL
            and not await self.core.store.is_member(self.key, chat)
        ):
            self._error(ev.ErrorCode.REFUSED, _looks_like(typed, GENERAL))
            return
        self._hold()
        shown: dict[Conv, Position] = {}
        try:
            joined = await self.core.store.join(self.key, chat, typed, self.session_id, look)
            if self._gone():  # closed meanwhile: fan-out already let this user go
                return
            if joined.status is JoinStatus.LOOK_ALIKE:
                self._error(ev.ErrorCode.REFUSED, _looks_like(typed, joined.name))
                return
            if joined.status is not JoinStatus.OK:
                self._error(ev.ErrorCode.REFUSED, self._join_refused(joined.status, typed))
                return
            await self.core.fanout.add_chat(self.user, chat, joined.name)
            if joined.changed:
                await self.core.fanout.announce(self.user, [chat], Change.CAME, "")
            moved = self.current != chat
            self.current = chat
            self.sink.emit(ev.Joined(joined.name, already=not joined.changed))
            if moved:  # a telnet user sees which chat plain lines now go to
                self.sink.emit(ev.CurrentChat(joined.name))
            count = self.core.settings.history
            if self._history_allowed(count, "its last messages are not shown"):
                messages = await self.core.store.history(chat, joined.name, count)
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

    async def _leave(self, typed: str, reason: str = "") -> None:
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
        # told before this session hears it: others hear it first, as from an IRC server
        await self.core.fanout.announce(self.user, [chat], Change.PARTED, reason)
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
            if chat == self.current:
                self.current = GENERAL
                self.sink.emit(ev.CurrentChat(GENERAL))
            return
        if not self._history_allowed(count, "not shown"):
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

    def _history_allowed(self, count: int, refused: str) -> bool:
        """Whether this user may read `count` more stored messages now (core/budget.py);
        if not, says so (`refused`: what happens instead) and when to ask again."""
        per_minute = self.core.settings.history_per_minute
        user = self.user
        if not per_minute or user is None:
            return True
        budget = user.history_budget
        if budget is None:
            budget = user.history_budget = Budget(per_minute)
        wait = budget.take(count, per_minute)
        if not wait:
            return True
        METRICS.rate_limited.inc()
        self._error(
            ev.ErrorCode.RATE_LIMITED,
            f"slow down: history {refused} (at most {per_minute} messages a minute; "
            f"try again in {wait_for(int(wait * 1000))})",
        )
        return False

    async def _private_history(self, typed: str, count: int) -> None:
        """The last `count` messages with another user: only ever the user's own
        conversation (it is named by both users' keys), held and released like a chat's."""
        assert self.user is not None
        peer = name_key(typed)
        if peer == self.key:
            self._error(ev.ErrorCode.REFUSED, "you have no private conversation with yourself")
            return
        if not self._history_allowed(count, "not shown"):
            return
        self._hold()
        shown: dict[Conv, Position] = {}
        try:
            conv = Conv.private(self.key, peer)
            messages = await self.core.store.read_range(conv, Range(count, newest=True))
            shown = await self._show_stored(messages)
            if not messages:
                account = await self.core.store.get_account(peer)
                if account is None:
                    self._error(ev.ErrorCode.NO_SUCH_USER, f"no such user {typed}")
                else:
                    where = ev.PrivateConv(peer, account.name)
                    ttl = self.core.settings.message_ttl
                    self.sink.emit(ev.NoHistory(account.name, ttl, where))
        finally:
            self._release(shown)

    # -- the end -----------------------------------------------------------------------------

    def closed(self, how: str = "") -> None:
        """The door's connection is gone: detach from fan-out (idempotent). `how`: who
        ended it, as the door tells (logged)."""
        if self.phase is Phase.CLOSED:
            return
        was = self.phase
        self._move(Move.CLOSED)
        self.live = False
        self._held = None
        self._forget_stored()
        if self.user is not None:
            said = self._quit
            if said == "" and how.startswith("error"):
                said = "Read error"
            self.core.fanout.detach(self, self.user, said)
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
