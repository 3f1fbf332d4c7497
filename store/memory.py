"""The store contract in plain Python: dicts, sets and lists, no Redis, no I/O.

Like centrifuge's memory engine beside its Redis one: the same contract, the same
semantics as the Lua scripts and `RedisStore` (rate buckets, bans, complaints, login
limits and lockouts, resume tokens with expiry, backlog, history, membership limits,
events to subscriptions), so the core's tests run on it in-process in milliseconds and the
contract tests (tests/contract/) hold both implementations to one behaviour.

Several `MemoryStore`s (one per "gateway") share one `MemoryServer`, as gateways share one
Redis: its data, its channels and its `Clock`. Time comes only from that clock: with a
`FakeClock` a test moves time by hand instead of sleeping. Everything is done at once and
atomically (there is no other process); events are handed to subscriptions at the next
loop turn, one list per turn, as a pub/sub link hands over what one read brought.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from store.clock import SYSTEM, Clock
from store.contract import (
    ACCEPTED,
    GENERAL,
    Account,
    AuditEntry,
    Backlog,
    BanInfo,
    ChatInfo,
    ChatList,
    ChatPosts,
    Complaint,
    ComplaintStatus,
    Conv,
    JoinStatus,
    LoginCheck,
    LoginGate,
    LoginLimits,
    MemberJoined,
    MemberLeft,
    Membership,
    Message,
    NewName,
    OnlineList,
    Position,
    PostResult,
    PostStatus,
    PrivatePost,
    Range,
    Registration,
    StoreEvent,
    StoreUnavailable,
    TokenLogin,
    UserBanned,
    UserKicked,
    UserSeen,
    UserState,
    UserUnbanned,
)

__all__ = [
    "ADDRESS_MEMORY",
    "KNOWN_ADDRESSES",
    "PRESENCE_TTL",
    "MemoryServer",
    "MemoryStore",
]

# The same policy constants as store/redis_store.py (a contract test checks they agree).
PRESENCE_TTL = 15
ADDRESS_MEMORY = 30 * 86400
KNOWN_ADDRESSES = 16
HOUR_MS = 3_600_000
SMALL_CHAT = 2000
ADDRESS_COUNT_TTL_MS = 86_400_000

T = TypeVar("T")
Key = tuple[Any, ...]  # (kind, names...), as a Redis key's parts


class _Keys:
    """Values with an optional expiry on the clock, as Redis keeps keys: an expired value
    reads as missing, and an emptied set or mapping is deleted (`tidy`)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._values: dict[Key, Any] = {}
        self._expires: dict[Key, int] = {}

    def get(self, key: Key, default: Any = None) -> Any:
        at = self._expires.get(key)
        if at is not None and at <= self._clock.now_ms():
            self.delete(key)
            return default
        return self._values.get(key, default)

    def has(self, key: Key) -> bool:
        return self.get(key) is not None

    def put(self, key: Key, value: Any, ttl_ms: int | None = None) -> None:
        """Set a value; with `ttl_ms` it expires then, else it keeps no expiry."""
        self._values[key] = value
        if ttl_ms is None:
            self._expires.pop(key, None)
        else:
            self._expires[key] = self._clock.now_ms() + ttl_ms

    def upsert(self, key: Key, make: Callable[[], T]) -> T:
        """The value at `key`, created with `make` (no expiry) when missing."""
        value = self.get(key)
        if value is None:
            value = self._values[key] = make()
        return value  # type: ignore[no-any-return]

    def expire(self, key: Key, ttl_ms: int) -> None:
        if self.has(key):
            self._expires[key] = self._clock.now_ms() + ttl_ms

    def expire_at(self, key: Key, at_ms: int) -> None:
        if self.has(key):
            self._expires[key] = at_ms

    def ttl_ms(self, key: Key) -> int | None:
        """Ms left before `key` expires; None if it is missing or never expires."""
        if not self.has(key):
            return None
        at = self._expires.get(key)
        return None if at is None else at - self._clock.now_ms()

    def delete(self, *keys: Key) -> None:
        for key in keys:
            self._values.pop(key, None)
            self._expires.pop(key, None)

    def tidy(self, key: Key) -> None:
        """Delete `key` if its set or mapping is empty (Redis has no empty keys)."""
        if key in self._values and not self._values[key]:
            self.delete(key)

    def incr(self, key: Key, by: int = 1) -> int:
        """INCR: a missing value counts as 0; the expiry is kept."""
        value = int(self.get(key, 0)) + by
        self._values[key] = value
        return value


class _Link:
    """A `Subscriptions` on a `MemoryServer`: events of its channels, one list per turn."""

    def __init__(
        self,
        server: MemoryServer,
        on_events: Callable[[list[StoreEvent]], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None],
    ) -> None:
        self._server = server
        self._on_events = on_events
        self.on_reconnect = on_reconnect
        self.on_state = on_state
        self.channels: set[tuple[str, str]] = set()
        self._pending: list[StoreEvent] = []

    @property
    def count(self) -> int:
        return len(self.channels)

    async def start(self) -> None:
        self._server.links.add(self)

    async def close(self) -> None:
        self._server.links.discard(self)

    async def add(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None:
        self.channels.update(("c", c) for c in chats)
        self.channels.update(("u", u) for u in users)

    def remove(self, chats: Sequence[str] = (), users: Sequence[str] = ()) -> None:
        self.channels.difference_update(("c", c) for c in chats)
        self.channels.difference_update(("u", u) for u in users)

    def push(self, event: StoreEvent) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._deliver)
        self._pending.append(event)

    def _deliver(self) -> None:
        events, self._pending = self._pending, []
        if events and self in self._server.links:
            self._on_events(events)


class MemoryServer:
    """What the stores of several gateways share, as they would share one Redis."""

    def __init__(self, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self.keys = _Keys(clock)
        self.links: set[_Link] = set()
        #: Set by a test: every call raises StoreUnavailable, as a Redis that is down.
        self.down = False
        self._seq = 0

    def now(self) -> int:
        if self.down:
            raise StoreUnavailable("the memory store is down (a test said so)")
        return self.clock.now_ms()

    def position(self, after: Position | None) -> Position:
        """A new message's position: the clock's ms, and a sequence number that grows
        across all conversations, so positions of one ms still order by storing."""
        self._seq += 1
        ms = self.clock.now_ms()
        if after is not None and after.ms > ms:  # the clock stepped back: stay after it
            ms = after.ms
        return Position(ms, self._seq)

    def wipe(self) -> None:
        """Lose every key, as a Redis restarted without persistence does (for tests)."""
        self.keys.delete(*list(self.keys._values))

    def publish(self, channel: tuple[str, str], event: StoreEvent) -> None:
        for link in self.links:
            if channel in link.channels:
                link.push(event)


class MemoryStore:
    """The contract on a `MemoryServer`. The constructor takes RedisStore's policy
    arguments (the URL and Redis' own tuning aside), so one settings object builds either."""

    def __init__(
        self,
        server: MemoryServer | None = None,
        *,
        message_ttl: int,
        ban_threshold: int,
        ban_duration: int,
        rate: float,
        burst: int,
        gateway_id: str,
        complaint_min_age: int = 0,
        complaints_per_hour: int = 0,
        complaints_per_address: int = 0,
        ban_address_memory: int = 0,
        max_stored: int = 10000,
        max_user_chats: int = 100,
        max_chats: int = 10000,
        chat_creations: int = 10,
        max_registrations: int = 0,
        account_ttl: int = 180 * 86400,
    ) -> None:
        self.server = server if server is not None else MemoryServer()
        self.k = self.server.keys
        self.ttl_ms = message_ttl * 1000
        self.ban_threshold = ban_threshold
        self.ban_ms = ban_duration * 1000
        self.rate = rate
        self.burst = burst
        self.gateway_id = gateway_id
        self.complaint_min_age_ms = complaint_min_age * 1000
        self.complaints_per_hour = complaints_per_hour
        self.complaints_per_address = complaints_per_address
        self.ban_address_memory = ban_address_memory
        self.max_stored = max_stored
        self.max_user_chats = max_user_chats
        self.max_chats = max_chats
        self.chat_creations = chat_creations
        self.max_registrations = max_registrations
        self.account_ttl_ms = account_ttl * 1000

    async def start(self) -> None:
        self.server.now()

    async def close(self) -> None:
        return None

    def subscriptions(
        self,
        on_events: Callable[[list[StoreEvent]], None],
        on_reconnect: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None],
    ) -> _Link:
        return _Link(self.server, on_events, on_reconnect, on_state)

    # -- small helpers -------------------------------------------------------------------

    def _set(self, key: Key) -> set[str]:
        return self.k.upsert(key, set)

    def _map(self, key: Key) -> dict[Any, Any]:
        return self.k.upsert(key, dict)

    def _members(self, key: Key) -> set[str]:
        found: set[str] = self.k.get(key, set())
        return found

    def _scores(self, key: Key) -> dict[str, int]:
        found: dict[str, int] = self.k.get(key, {})
        return found

    def _positions(self, user: str) -> dict[Conv, Position]:
        found: dict[Conv, Position] = self.k.get(("cursor", user), {})
        return found

    def _name(self, user: str) -> str | None:
        account = self.k.get(("user", user))
        return None if account is None else str(account["name"])

    def _user_channel(self, user: str, event: StoreEvent) -> None:
        self.server.publish(("u", user), event)

    @staticmethod
    def _trim_rank(scores: dict[str, int], keep: int) -> None:
        """ZREMRANGEBYRANK 0 -keep-1: keep the `keep` highest scores."""
        if len(scores) > keep:
            for member, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]))[:-keep]:
                del scores[member]

    @staticmethod
    def _drop_below(scores: dict[str, int], bound: int) -> None:
        """ZREMRANGEBYSCORE -inf bound."""
        for member in [m for m, s in scores.items() if s <= bound]:
            del scores[member]

    # -- accounts ------------------------------------------------------------------------

    async def get_account(self, user: str) -> Account | None:
        self.server.now()
        account = self.k.get(("user", user))
        return None if account is None else Account(account["name"], account["pw"])

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

    def _join_chat(self, user: str, chat: str, typed: str) -> int:
        """join.lua's add: the chat's name kept as first typed; the member count after."""
        self.k.upsert(("chat", chat), lambda: typed)
        members = self._set(("members", chat))
        members.add(user)
        return len(members)

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

    # -- conversations -------------------------------------------------------------------

    def _stream(self, conv: Conv) -> list[tuple[Position, str, str, str]]:
        """A conversation's live entries, oldest first: (position, sender, recipient's
        name or "" in a chat, text)."""
        found: list[tuple[Position, str, str, str]] = self.k.get(("msgs", conv), [])
        return found

    def _append(self, conv: Conv, sender: str, recipient: str, text: str, now: int) -> Position:
        """xadd_fn.lua, then the trims and the expiry post_many.lua and post_private.lua do."""
        stream: list[tuple[Position, str, str, str]] = self.k.upsert(("msgs", conv), list)
        pos = self.server.position(stream[-1][0] if stream else None)
        stream.append((pos, sender, recipient, text))
        floor = now - self.ttl_ms
        drop = 0
        while drop < len(stream) and stream[drop][0].ms < floor:
            drop += 1
        drop = max(drop, len(stream) - self.max_stored)
        if drop:
            del stream[:drop]
        self.k.expire(("msgs", conv), self.ttl_ms)
        return pos

    def _floor(self, now: int) -> Position:
        return Position(max(0, now - self.ttl_ms), 0)

    def _read(
        self, conv: Conv, now: int, after: Position | None, before: Position | None = None
    ) -> list[Message]:
        """Live messages of `conv` after `after` (exclusive; the lifetime's start,
        inclusive, if older or None) and before `before` (exclusive), oldest first."""
        floor = self._floor(now)
        out = []
        for pos, sender, recipient, text in self._stream(conv):
            if pos < floor or (after is not None and after >= floor and pos <= after):
                continue
            if before is not None and pos >= before:
                break
            out.append(Message(pos, conv, sender, recipient, text))
        return out

    async def backlog(self, user: str, state: UserState, limit: int) -> Backlog:
        now = self.server.now()
        convs = [Conv.of_chat(c) for c in state.chats]
        convs += [Conv.private(user, p) for p in state.peers]
        kept: list[Message] = []
        cut: dict[Conv, int] = {}
        for conv in convs:
            unread = self._read(conv, now, state.cursors.get(conv))[-(limit + 1) :]
            if len(unread) > limit:
                cut[conv] = len(unread) - limit
                unread = unread[-limit:] if limit else []
            kept += unread
        kept.sort(key=lambda m: m.pos)
        if len(kept) > limit:
            for m in kept[: len(kept) - limit]:
                cut[m.conv] = cut.get(m.conv, 0) + 1
            kept = kept[len(kept) - limit :]
        return Backlog(kept, cut)

    async def read_after(self, after: Mapping[Conv, Position | None]) -> list[Message]:
        now = self.server.now()
        out = [m for conv, pos in after.items() for m in self._read(conv, now, pos)]
        out.sort(key=lambda m: m.pos)
        return out

    async def history(self, chat: str, name: str, count: int) -> list[Message]:
        now = self.server.now()
        found = self._read(Conv.of_chat(chat), now, None)
        return [m._replace(where=name) for m in found[-count:]] if count > 0 else []

    async def read_range(self, conv: Conv, want: Range) -> list[Message]:
        now = self.server.now()
        found = self._read(conv, now, want.after, want.before)
        if want.count <= 0:
            return []
        return found[-want.count :] if want.newest else found[: want.count]

    async def advance_cursors(self, updates: Mapping[str, Mapping[Conv, Position]]) -> None:
        self.server.now()
        for user, convs in updates.items():
            cursors = self._map(("cursor", user))
            for conv, pos in convs.items():
                old = cursors.get(conv)
                if old is None or pos > old:
                    cursors[conv] = pos
            self.k.expire(("cursor", user), self.ttl_ms)

    async def read_position(self, user: str, conv: Conv) -> Position | None:
        self.server.now()
        return self._positions(user).get(conv)

    # -- posting -------------------------------------------------------------------------

    def _bucket_take(self, user: str, now: int, n: int) -> list[int | None]:
        """bucket_fn.lua for `n` messages of one sender: None (a token taken) or the ms
        until one is back, each; the bucket saved if any token was taken."""
        key = ("rate", user)
        saved = self.k.get(key)
        tokens, ts = (float(self.burst), now) if saved is None else saved
        if now > ts:
            tokens = min(float(self.burst), tokens + (now - ts) * self.rate / 1000)
        out: list[int | None] = []
        for _ in range(n):
            if tokens < 1:
                out.append(math.ceil((1 - tokens) * 1000 / self.rate))
            else:
                tokens -= 1
                out.append(None)
        if any(r is None for r in out):
            self.k.put(key, (tokens, now), math.ceil(self.burst * 1000 / self.rate) + 1000)
        return out

    def _refusal(self, user: str, now: int, n: int) -> list[PostResult | None]:
        """The sender's ban and rate for `n` messages: a refusal each, or None (may pass)."""
        ban = self.k.get(("ban", user))
        if ban is not None:
            return [PostResult(PostStatus.BANNED, until_ms=int(ban))] * n
        if self.rate <= 0:
            return [None] * n
        return [
            None if r is None else PostResult(PostStatus.RATE, retry_ms=r)
            for r in self._bucket_take(user, now, n)
        ]

    def post_chat(
        self, user: str, name: str, chat: str, chat_name: str, texts: list[str]
    ) -> asyncio.Future[list[PostResult]]:
        return _done(lambda: self._post_chat(user, name, chat, chat_name, texts))

    def _post_chat(
        self, user: str, name: str, chat: str, chat_name: str, texts: list[str]
    ) -> list[PostResult]:
        now = self.server.now()
        if user not in self._members(("members", chat)):
            return [PostResult(PostStatus.NOT_MEMBER)] * len(texts)
        conv = Conv.of_chat(chat)
        results: list[PostResult] = []
        accepted: list[Message] = []
        for text, refused in zip(texts, self._refusal(user, now, len(texts)), strict=True):
            if refused is not None:
                results.append(refused)
                continue
            pos = self._append(conv, name, "", text, now)
            accepted.append(Message(pos, conv, name, chat_name, text))
            results.append(ACCEPTED)
        if accepted:
            self.server.publish(("c", chat), ChatPosts(chat, accepted))
        return results

    def post_private(
        self, user: str, name: str, peer: str, text: str
    ) -> asyncio.Future[PostResult]:
        return _done(lambda: self._post_private(user, name, peer, text))

    def _post_private(self, user: str, name: str, peer: str, text: str) -> PostResult:
        now = self.server.now()
        recipient = self._name(peer)
        if recipient is None:
            return PostResult(PostStatus.NO_USER)
        (refused,) = self._refusal(user, now, 1)
        if refused is not None:
            return refused
        conv = Conv.private(user, peer)
        pos = self._append(conv, name, recipient, text, now)
        for a, b in ((user, peer), (peer, user)):
            self._set(("peers", a)).add(b)
            self.k.expire(("peers", a), self.ttl_ms)
        m = Message(pos, conv, name, recipient, text)
        for who in (user, peer):
            self._user_channel(who, PrivatePost(who, m))
        return ACCEPTED

    # -- chats ---------------------------------------------------------------------------

    async def join(self, user: str, chat: str, typed: str, origin: str) -> Membership:
        self.server.now()
        mine = self._members(("chats", user))
        members = self._members(("members", chat))
        if user in members:
            self._set(("chats", user)).add(chat)
            return Membership(False, self.k.get(("chat", chat)) or typed)
        if chat not in mine and len(mine) >= self.max_user_chats:
            return Membership(False, typed, JoinStatus.USER_LIMIT)
        created = not members
        if created:
            if len(self._scores(("chatsizes",))) >= self.max_chats:
                return Membership(False, typed, JoinStatus.CHAT_LIMIT)
            if int(self.k.get(("creations", user), 0)) >= self.chat_creations:
                return Membership(False, typed, JoinStatus.CREATE_RATE)
            self.k.delete(("chat", chat))  # a name left over from an emptied chat
        count = self._join_chat(user, chat, typed)
        name = self.k.get(("chat", chat))
        self._set(("chats", user)).add(chat)
        if created and self.k.incr(("creations", user)) == 1:
            self.k.expire(("creations", user), HOUR_MS)
        self._map(("chatsizes",))[chat] = count
        self._user_channel(user, MemberJoined(user, chat, name, origin))
        return Membership(True, name)

    def _leave_chat(self, user: str, chat: str) -> tuple[bool, str]:
        """leave.lua and the chat list: (removed, the chat's name)."""
        members = self._members(("members", chat))
        if user not in members:
            return False, ""
        members.discard(user)
        name = self.k.get(("chat", chat)) or chat
        sizes = self._map(("chatsizes",))
        if members:
            sizes[chat] = len(members)
        else:
            self.k.delete(("members", chat), ("chat", chat))
            sizes.pop(chat, None)
        return True, name

    async def leave(self, user: str, chat: str, origin: str) -> Membership:
        self.server.now()
        removed, name = self._leave_chat(user, chat)
        self._members(("chats", user)).discard(chat)
        self.k.tidy(("chats", user))
        if removed:
            self._user_channel(user, MemberLeft(user, chat, name, origin))
        return Membership(removed, name)

    async def is_member(self, user: str, chat: str) -> bool:
        self.server.now()
        return user in self._members(("members", chat))

    # -- presence ------------------------------------------------------------------------

    def _live(self) -> list[str]:
        gateways = self._members(("gateways",))
        dead = {gw for gw in gateways if not self.k.has(("alive", gw))}
        gateways -= dead
        return sorted(gateways)

    async def live_gateways(self) -> list[str]:
        self.server.now()
        return self._live()

    def _online_sets(self) -> list[set[str]]:
        return [self._members(("online", gw)) for gw in self._live()]

    async def heartbeat(self, online: set[str]) -> None:
        now = self.server.now()
        seen = self._map(("seen",))
        for user in online:
            if user in seen:  # ZADD XX: only accounts already there
                seen[user] = now
        gw = self.gateway_id
        self._set(("gateways",)).add(gw)
        self.k.put(("alive", gw), now // 1000, PRESENCE_TTL * 1000)
        self.k.delete(("online", gw))
        if online:
            self.k.put(("online", gw), set(online), PRESENCE_TTL * 1000)

    async def set_online(self, user: str, online: bool) -> None:
        if online:
            await self.set_online_many([user])
            return
        self.server.now()
        self._members(("online", self.gateway_id)).discard(user)
        self.k.tidy(("online", self.gateway_id))

    async def set_online_many(self, users: Sequence[str]) -> None:
        self.server.now()
        self._set(("online", self.gateway_id)).update(users)
        self.k.expire(("online", self.gateway_id), PRESENCE_TTL * 1000)

    async def gateway_gone(self) -> None:
        self.server.now()
        self._members(("gateways",)).discard(self.gateway_id)
        self.k.delete(("alive", self.gateway_id), ("online", self.gateway_id))

    async def count_address(self, address: str, change: int, live: Sequence[str]) -> int:
        self.server.now()
        key = ("addrconns", address)
        counts = self._map(key)
        mine = counts.get(self.gateway_id, 0) + change
        if mine <= 0:
            counts.pop(self.gateway_id, None)
            mine = 0
        else:
            counts[self.gateway_id] = mine
        self.k.expire(key, ADDRESS_COUNT_TTL_MS)
        total = mine + sum(counts.get(gw, 0) for gw in live if gw != self.gateway_id)
        self.k.tidy(key)
        return int(total)

    async def who_bounded(self, chat: str, limit: int, cap: int) -> OnlineList:
        self.server.now()
        members = self._members(("members", chat))
        sets = self._online_sets()
        if not sets or not members:
            return OnlineList([], 0)
        online = sorted(u for u in members if any(u in s for s in sets))
        if len(members) <= SMALL_CHAT:
            total, capped = len(online), False
        else:
            counted = sum(len(members & s) for s in sets)
            total, capped = max(min(counted, cap), min(len(online), cap)), counted >= cap
        present = online if len(online) <= limit else random.sample(online, limit)
        if not present:
            return OnlineList([], 0)
        names = [self._name(u) or u for u in present]
        return OnlineList(sorted(names, key=str.casefold), total, capped)

    async def active_chats_bounded(self, limit: int, cap: int) -> ChatList:
        self.server.now()
        sizes = self._scores(("chatsizes",))
        top = sorted(sizes.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:limit]
        sets = self._online_sets()
        infos = []
        for chat, count in top:
            members = self._members(("members", chat))
            online = sum(len(members & s) for s in sets)
            name = self.k.get(("chat", chat)) or chat
            infos.append(ChatInfo(name, count, min(online, cap), online >= cap))
        infos.sort(key=lambda x: (-x.members, x.name.casefold()))
        return ChatList(infos, len(sizes))

    # -- complaints and moderation -------------------------------------------------------

    def _held_addresses(self, user: str) -> list[str]:
        return sorted(self._scores(("addrs", user)), key=lambda a: self._scores(("addrs", user))[a])

    def _list_ban(self, user: str, till: int, addresses: Iterable[str], now: int) -> None:
        """The ban listed for operators, and the user's addresses held back till then."""
        bans = self._map(("bans",))
        self._drop_below(bans, now)
        bans[user] = till
        held = self._map(("held",))
        self._drop_below(held, now)
        for address in addresses:
            held[address] = max(held.get(address, 0), till)
        self.k.tidy(("held",))

    async def complain(self, user: str, target: str, address: str) -> Complaint:
        now = self.server.now()
        account = self.k.get(("user", user))
        young = 0
        if self.complaint_min_age_ms:
            created = int(account["created"]) if account is not None else 0
            young = max(0, created * 1000 + self.complaint_min_age_ms - now)
        rate_wait = 0
        made = self._scores(("complained", user))
        if self.complaints_per_hour:
            self._drop_below(made, now - HOUR_MS)
            if len(made) >= self.complaints_per_hour and made:
                rate_wait = max(1, min(made.values()) + HOUR_MS - now)
        name = self._name(target)
        if name is None:
            return Complaint(ComplaintStatus.NO_USER)
        ban = self.k.get(("ban", target))
        if ban is not None:
            return Complaint(ComplaintStatus.ALREADY_BANNED, until_ms=int(ban), name=name)
        key = ("complaints", target)
        complaints = self._scores(key)
        self._drop_below(complaints, now - self.ban_ms)
        if user in complaints:
            return Complaint(ComplaintStatus.AGAIN, count=len(complaints), name=name)
        if young > 0:
            return Complaint(ComplaintStatus.TOO_NEW, wait_ms=young, name=name)
        if rate_wait > 0:
            return Complaint(ComplaintStatus.RATE, wait_ms=rate_wait, name=name)
        if self.complaints_per_address > 0:
            per = self._map(("complaintaddrs", target))
            if per.get(address, 0) >= self.complaints_per_address:
                self.k.tidy(("complaintaddrs", target))
                return Complaint(ComplaintStatus.ADDRESS, count=len(complaints), name=name)
            per[address] = per.get(address, 0) + 1
            self.k.expire(("complaintaddrs", target), self.ban_ms)
        complaints = self._map(key)
        complaints[user] = now
        self.k.expire(key, self.ban_ms)
        count = len(complaints)
        if self.complaints_per_hour:
            self._map(("complained", user))[target] = now
            self.k.expire(("complained", user), HOUR_MS)
        if count < self.ban_threshold:
            return Complaint(ComplaintStatus.RECORDED, count=count, name=name)
        till = now + self.ban_ms
        self.k.put(("ban", target), till, self.ban_ms)
        self.k.delete(key, ("complaintaddrs", target))
        self._user_channel(target, UserBanned(target, till, False))
        self._list_ban(target, till, self._held_addresses(target), now)
        return Complaint(ComplaintStatus.BANNED, count=count, until_ms=till, name=name)

    async def is_moderator(self, user: str) -> bool:
        self.server.now()
        return user in self._members(("mods",))

    async def set_moderator(self, user: str, on: bool) -> bool:
        self.server.now()
        if self._name(user) is None:
            return False
        if on:
            self._set(("mods",)).add(user)
        else:
            self._members(("mods",)).discard(user)
        return True

    async def ban(self, user: str, duration: int) -> BanInfo | None:
        now = self.server.now()
        name = self._name(user)
        if name is None:
            return None
        till = now + duration * 1000
        self.k.put(("ban", user), till, duration * 1000)
        self.k.delete(("complaints", user), ("complaintaddrs", user))
        self._user_channel(user, UserBanned(user, till, True))
        self._list_ban(user, till, self._held_addresses(user), now)
        return BanInfo(user, name, till)

    async def unban(self, user: str) -> bool:
        self.server.now()
        was = self.k.has(("ban", user))
        self.k.delete(("ban", user), ("complaints", user), ("complaintaddrs", user))
        self._map(("bans",)).pop(user, None)
        if was:
            self._user_channel(user, UserUnbanned(user))
        return was

    async def kick(self, user: str) -> None:
        self.server.now()
        self._user_channel(user, UserKicked(user))

    async def bans(self) -> list[BanInfo]:
        now = self.server.now()
        bans = self._map(("bans",))
        self._drop_below(bans, now)
        listed = sorted(bans.items(), key=lambda kv: (kv[1], kv[0]))
        return [BanInfo(u, self._name(u) or u, till) for u, till in listed]

    async def complaints_about(self, user: str) -> list[tuple[str, int]]:
        self.server.now()
        found = sorted(self._scores(("complaints", user)).items(), key=lambda kv: (kv[1], kv[0]))
        return [(self._name(u) or u, ms) for u, ms in found]

    async def users(self, limit: int) -> list[UserSeen]:
        self.server.now()
        seen = sorted(self._scores(("seen",)).items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        mods = self._members(("mods",))
        return [
            UserSeen(u, self._name(u) or u, ms, int(self.k.get(("ban", u), 0)), u in mods)
            for u, ms in seen[:limit]
        ]

    async def delete_user(self, user: str, skeleton: str) -> bool:
        self.server.now()
        if self._name(user) is None:
            return False
        for peer in self._members(("peers", user)):
            self.k.delete(("msgs", Conv.private(user, peer)))
            self._members(("peers", peer)).discard(user)
        self._forget(user)
        if self.k.get(("skel", skeleton)) == user:
            self.k.delete(("skel", skeleton))
        return True

    def _forget(self, user: str) -> None:
        """forget.lua and what follows it: the user's own keys, memberships, listings."""
        for chat in self._members(("chats", user)):
            self._leave_chat(user, chat)
        own = ["user", "chats", "peers", "cursor", "ban", "rate", "complaints", "complaintaddrs"]
        own += ["complained", "tokens", "addrs", "known", "creations"]
        self.k.delete(*((kind, user) for kind in own), ("nickfails", user))
        self._members(("mods",)).discard(user)
        for listing in (("bans",), ("seen",)):
            self._scores(listing).pop(user, None)

    async def forget_unseen(self, limit: int) -> int:
        now = self.server.now()
        cutoff = now - self.account_ttl_ms
        seen = self._scores(("seen",))
        old = sorted((ms, u) for u, ms in seen.items() if ms <= cutoff)[:limit]
        for _, user in old:
            self._forget(user)
        return len(old)

    async def audit(self, fields: dict[str, str], keep: int) -> None:
        self.server.now()
        trail: list[tuple[Position, dict[str, str]]] = self.k.upsert(("audit",), list)
        trail.append((self.server.position(trail[-1][0] if trail else None), dict(fields)))
        del trail[: max(0, len(trail) - keep)]

    async def audit_log(self, since_ms: int, limit: int) -> list[AuditEntry]:
        self.server.now()
        trail: list[tuple[Position, dict[str, str]]] = self.k.get(("audit",), [])
        found = [(pos, f) for pos, f in trail if pos.ms >= since_ms][-limit:] if limit else []
        return [AuditEntry(str(pos), pos.ms, dict(f)) for pos, f in found]

    # -- surviving a store that lost its data ----------------------------------------------

    async def claim_epoch(self, candidate: str) -> str:
        self.server.now()
        return str(self.k.upsert(("epoch",), lambda: candidate))

    async def reassert(self, chats: dict[str, dict[str, str]], peers: dict[str, set[str]]) -> None:
        self.server.now()
        for user, theirs in chats.items():
            for chat, name in theirs.items():
                if not self.k.has(("chat", chat)):  # HSETNX: a name already there stays
                    self.k.put(("chat", chat), name)
                self._set(("members", chat)).add(user)
                self._set(("chats", user)).add(chat)
        for user, known in peers.items():
            if known:
                self._set(("peers", user)).update(known)
                self.k.expire(("peers", user), self.ttl_ms)
        sizes = self._map(("chatsizes",))
        for chat in {c for theirs in chats.values() for c in theirs}:
            sizes[chat] = len(self._members(("members", chat)))


def _done(make: Callable[[], T]) -> asyncio.Future[T]:
    """A future already resolved with `make()` (or failed with what it raised)."""
    fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    try:
        fut.set_result(make())
    except Exception as exc:
        fut.set_exception(exc)
    return fut
