"""Resume tokens, /logout and /password in the core, on the memory store (what the store
keeps is read from its keys); how Redis keeps tokens is checked on a real Redis."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from gateway.core import commands as cmd
from gateway.core import credentials, hashing
from gateway.core import events as ev
from gateway.core.session import Phase, Session
from gateway.doors.line.parse import parse_line
from store import keys
from store.redis import RedisStore
from tests.core.conftest import Chat, Recorder

BAD_TOKEN = ev.Error(ev.ErrorCode.BAD_TOKEN, "invalid or expired token")


async def _token(session: Session, sink: Recorder) -> str:
    await session.handle(cmd.IssueToken())
    issued = sink.of(ev.TokenIssued)[-1]
    assert isinstance(issued, ev.TokenIssued)
    return issued.token


async def _with_token(chat: Chat, nick: str, token: str) -> tuple[Session, Recorder]:
    session, sink = await chat.connect()
    await session.handle(cmd.Nick(nick, token))
    return session, sink


async def _hashes(chat: Chat, user: str) -> dict[str, int]:
    """The user's tokens as the store keeps them: hash -> expiry (ms)."""
    return dict(chat.store.server.keys.get(("tokens", user), {}))


def _fails(chat: Chat, user: str, address: str = "127.0.0.1") -> int | None:
    """Login attempts at `user` from `address` the store counts (None: none)."""
    found = chat.store.server.keys.get(("fails", user, address))
    return None if found is None else int(found)


async def test_a_token_logs_in_without_a_password_hash(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, sink = await chat.login("Alice")
    token = await _token(session, sink)
    assert len(token) == 64 and int(token, 16) >= 0  # 256 random bits, hex
    assert sink.of(ev.TokenIssued)[-1] == ev.TokenIssued(token, chat.core.settings.token_ttl)

    def no_scrypt(*args: Any) -> bool:
        raise AssertionError("a token login must not hash a password")

    monkeypatch.setattr(hashing, "verify_password", no_scrypt)
    monkeypatch.setattr(hashing, "hash_password", no_scrypt)
    phone, phone_sink = await _with_token(chat, "ALICE", token)
    assert phone.phase is Phase.READY, phone_sink.events
    assert phone_sink.events[-1] == ev.Ready("Alice", "general", ("general",))
    assert not any(isinstance(e, ev.AskPassword) for e in phone_sink.events)


async def test_tokens_are_stored_only_as_hashes_with_an_expiry(redis_chat: Chat) -> None:
    """On a real Redis: the token is kept only as its hash, in a key that expires."""
    chat = redis_chat
    session, sink = await chat.login("bob")
    token = await _token(session, sink)
    assert isinstance(chat.store, RedisStore)
    stored = await chat.store.redis.hgetall(keys.tokens("bob"))
    assert list(stored) == [hashlib.sha256(token.encode()).hexdigest()]
    dump = repr(await chat.store.redis.hgetall(keys.user("bob"))) + repr(stored)
    assert token not in dump
    assert 0 < await chat.store.redis.pttl(keys.tokens("bob")) <= 30 * 86400 * 1000
    assert token not in repr(sink.of(ev.TokenIssued)[-1])  # never in a log or traceback


async def test_asking_twice_revokes_the_previous_token_of_that_device(chat: Chat) -> None:
    laptop, laptop_sink = await chat.login("carol")
    phone, phone_sink = await chat.login("carol")
    first = await _token(laptop, laptop_sink)
    on_phone = await _token(phone, phone_sink)
    second = await _token(laptop, laptop_sink)
    assert len(await _hashes(chat, "carol")) == 2  # one per device
    _, sink = await _with_token(chat, "carol", first)
    assert sink.events[-2:] == [BAD_TOKEN, ev.AskNick(first=False)]
    for token in (second, on_phone):
        s, _ = await _with_token(chat, "carol", token)
        assert s.phase is Phase.READY


async def test_wrong_tokens_count_as_failed_logins_and_lock_out(chat: Chat) -> None:
    owner, owner_sink = await chat.login("dave")
    token = await _token(owner, owner_sink)
    session, sink = await chat.connect()
    for _ in range(3):
        await session.handle(cmd.Nick("dave", "ab" * 32))
    codes = [e.code for e in sink.of(ev.Error)]  # type: ignore[attr-defined]
    assert codes == [ev.ErrorCode.BAD_TOKEN] * 3 + [ev.ErrorCode.LOCKED_OUT]
    assert sink.closed
    assert _fails(chat, "dave") == 3
    # the lockout of this address refuses passwords, but a valid token still logs in (it
    # cannot be guessed); the lockout stays for passwords
    chat.core.settings = dataclasses.replace(chat.core.settings, max_login_failures=3)
    refused, refused_sink = await chat.connect()
    await refused.handle(cmd.Nick("dave", "cd" * 32))
    assert refused_sink.of(ev.Error)[-1].code is ev.ErrorCode.LOCKED_OUT  # type: ignore[attr-defined]
    late, _ = await _with_token(chat, "dave", token)
    assert late.phase is Phase.READY
    assert _fails(chat, "dave") == 3


async def test_an_expired_token_is_refused(chat: Chat) -> None:
    chat.core.settings = dataclasses.replace(chat.core.settings, token_ttl=1)
    session, sink = await chat.login("erin")
    token = await _token(session, sink)
    chat.clock.advance(0.999)
    assert len(await _hashes(chat, "erin")) == 1  # not yet
    chat.clock.advance(ms=1)
    late, late_sink = await _with_token(chat, "erin", token)
    assert late_sink.events[-2:] == [BAD_TOKEN, ev.AskNick(first=False)]
    assert late.phase is Phase.NICK
    assert await _hashes(chat, "erin") == {}  # the expired one went on the way


async def test_logout_revokes_only_this_devices_token(chat: Chat) -> None:
    laptop, laptop_sink = await chat.login("frank")
    phone, phone_sink = await chat.login("frank")
    laptop_token = await _token(laptop, laptop_sink)
    phone_token = await _token(phone, phone_sink)
    resumed, resumed_sink = await _with_token(chat, "frank", laptop_token)
    await resumed.handle(cmd.Logout())  # the token it logged in with
    assert resumed_sink.events[-1] == ev.Bye() and resumed_sink.closed
    _, sink = await _with_token(chat, "frank", laptop_token)
    assert BAD_TOKEN in sink.events
    s, _ = await _with_token(chat, "frank", phone_token)
    assert s.phase is Phase.READY


async def test_password_change_revokes_every_token_and_the_old_password(chat: Chat) -> None:
    a, a_sink = await chat.login("gina", "first-pass")
    b, b_sink = await chat.login("gina", "first-pass")
    tokens = [await _token(a, a_sink), await _token(b, b_sink)]
    await a.handle(cmd.ChangePassword("not-it", "second-pass"))
    assert a_sink.events[-1] == ev.Error(ev.ErrorCode.WRONG_PASSWORD, "wrong password")
    assert _fails(chat, "gina") == 1
    await a.handle(cmd.ChangePassword("first-pass", "short"))
    assert a_sink.events[-1].code is ev.ErrorCode.BAD_PASSWORD  # type: ignore[union-attr]
    await a.handle(cmd.ChangePassword("first-pass", "second-pass"))
    assert a_sink.events[-1] == ev.PasswordChanged()
    assert _fails(chat, "gina") is None  # the right old password forgave it
    assert await _hashes(chat, "gina") == {}
    for token in tokens:
        _, sink = await _with_token(chat, "gina", token)
        assert BAD_TOKEN in sink.events
    old, old_sink = await chat.connect()
    await old.handle(cmd.Nick("gina"))
    await old.handle(cmd.Password("first-pass"))
    assert ev.Error(ev.ErrorCode.WRONG_PASSWORD, "wrong password") in old_sink.events
    await chat.login("gina", "second-pass")


async def test_password_change_is_refused_while_the_nickname_is_locked_out(chat: Chat) -> None:
    session, sink = await chat.login("hank", "first-pass")
    for _ in range(chat.core.settings.max_login_failures):
        await session.handle(cmd.ChangePassword("not-it", "second-pass"))
    assert sink.events[-1] == ev.Error(ev.ErrorCode.WRONG_PASSWORD, "wrong password")
    await session.handle(cmd.ChangePassword("first-pass", "second-pass"))
    assert sink.events[-1].code is ev.ErrorCode.LOCKED_OUT  # type: ignore[union-attr]
    assert session.phase is Phase.READY  # refused, not disconnected


async def test_failures_elsewhere_do_not_lock_the_owners_address(chat: Chat) -> None:
    """Guesses from addresses the owner never used count per nickname (a high limit); they
    lock those addresses out, never the owner's own, where the strict limit is untouched."""
    chat.core.settings = dataclasses.replace(
        chat.core.settings, max_login_failures=2, max_login_failures_per_nick=4
    )
    await chat.login("ida", "right-pass")
    texts = []
    for n in range(4):
        s, sink = await chat.connect(f"10.0.0.{n}")
        await s.handle(cmd.Nick("ida"))
        for _ in range(2):
            await s.handle(cmd.Password("guess-guess"))
        texts += [e.text for e in sink.of(ev.Error)]  # type: ignore[attr-defined]
    assert texts.count("wrong password") == 4  # two addresses x two: the per-nickname limit
    locked = [t for t in texts if t.startswith("too many")]
    assert (
        locked
        == [
            "too many failed logins for ida from new addresses; try again in 15 min, "
            "or from where you logged in before"
        ]
        * 2
    )
    s, sink = await chat.connect("10.0.0.9")
    await s.handle(cmd.Nick("ida"))
    assert sink.events[-1].code is ev.ErrorCode.LOCKED_OUT and sink.closed  # type: ignore[union-attr]
    await chat.login("ida", "right-pass")  # from 127.0.0.1, where ida logged in before


async def test_a_users_tokens_are_bounded(chat: Chat, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials, "MAX_TOKENS", 3)
    sessions = [await chat.login("ivy") for _ in range(5)]
    tokens = [await _token(s, sink) for s, sink in sessions]
    assert len(await _hashes(chat, "ivy")) == 3
    _, sink = await _with_token(chat, "ivy", tokens[0])  # the oldest went
    assert BAD_TOKEN in sink.events
    s, _ = await _with_token(chat, "ivy", tokens[-1])
    assert s.phase is Phase.READY


def test_the_line_door_parses_tokens_and_the_new_commands() -> None:
    token = "0f" * 32
    assert parse_line(f"alice {token}", Phase.NICK) == cmd.Nick("alice", token)
    assert parse_line("john smith", Phase.NICK) == cmd.Nick("john smith")  # a bad nickname
    assert parse_line("/token", Phase.READY) == cmd.IssueToken()
    assert parse_line("/LOGOUT", Phase.READY) == cmd.Logout()
    assert parse_line("/password old-one new\x01one", Phase.READY) == cmd.ChangePassword(
        "old-one",
        "new\x01one",  # raw, as the password prompt takes it
    )
    assert isinstance(parse_line("/password only-one", Phase.READY), cmd.Rejected)
    assert isinstance(parse_line("/passwordx a b", Phase.READY), cmd.Rejected)
