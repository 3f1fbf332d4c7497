"""The core's behaviour, command by command, without sockets or processes."""

from __future__ import annotations

import pytest

from gateway import fanout
from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core import login as login_module
from gateway.core.session import Phase
from store.contract import Conv, Message, Position, StoreUnavailable
from tests.core.conftest import Chat


async def test_a_new_nickname_registers_and_gets_ready(chat: Chat) -> None:
    session, sink = await chat.connect()
    assert sink.events == [ev.AskNick(first=True)]
    await session.handle(cmd.Nick("Alice"))
    assert sink.events[-1] == ev.AskPassword("Alice", new=True)
    await session.handle(cmd.Password("secret123"))
    assert sink.events[-1] == ev.Ready("Alice", "general", ("general",))
    assert session.phase is Phase.READY and session.live


async def test_bad_nickname_and_bad_input_ask_again(chat: Chat) -> None:
    session, sink = await chat.connect()
    await session.handle(cmd.Nick("no spaces"))
    assert [type(e) for e in sink.events[1:]] == [ev.Error, ev.AskNick]
    assert sink.events[1].code is ev.ErrorCode.BAD_NAME  # type: ignore[union-attr]
    await session.handle(cmd.Nick("bob"))
    await session.handle(cmd.Rejected("line too long"))
    assert sink.events[-2] == ev.Error(ev.ErrorCode.BAD_INPUT, "line too long")
    assert sink.events[-1] == ev.AskPassword("bob", new=True)
    assert session.phase is Phase.PASSWORD


async def test_three_wrong_passwords_close_the_session(chat: Chat) -> None:
    await chat.login("carol")
    session, sink = await chat.connect()
    await session.handle(cmd.Nick("CAROL"))
    assert sink.events[-1] == ev.AskPassword("carol", new=False)  # shown as registered
    for _ in range(3):
        await session.handle(cmd.Password("wrong-one"))
    codes = [e.code for e in sink.of(ev.Error)]  # type: ignore[attr-defined]
    assert codes == [ev.ErrorCode.WRONG_PASSWORD] * 3 + [ev.ErrorCode.LOCKED_OUT]
    assert sink.closed and session.phase is Phase.PASSWORD


async def test_messages_reach_every_member_once_across_sessions(either_chat: Chat) -> None:
    chat = either_chat
    _, alice = await chat.login("alice")
    bob_session, bob = await chat.login("bob")
    _, bob_phone = await chat.login("bob")
    await bob_session.handle(cmd.Say(("hello", "again")))
    want = [("#general", "bob", "hello"), ("#general", "bob", "again")]
    for sink in (alice, bob, bob_phone):
        await sink.wait_for(lambda s: len(s.messages()) >= 2)
    assert alice.messages() == want and bob.messages() == want and bob_phone.messages() == want


async def test_private_messages_show_the_peer_on_each_side(chat: Chat) -> None:
    alice_session, alice = await chat.login("alice")
    _, bob = await chat.login("Bob")
    await alice_session.handle(cmd.SendPrivate("bob", "psst"))
    await bob.wait_for(lambda s: s.messages())
    await alice.wait_for(lambda s: s.messages())
    assert bob.messages() == [("@alice", "alice", "psst")]
    assert alice.messages() == [("@Bob", "alice", "psst")]
    await alice_session.handle(cmd.SendPrivate("alice", "me"))
    await alice_session.handle(cmd.SendPrivate("nobody", "hi"))
    codes = [e.code for e in alice.of(ev.Error)]  # type: ignore[attr-defined]
    assert codes == [ev.ErrorCode.REFUSED, ev.ErrorCode.NO_SUCH_USER]


async def test_join_and_leave_reach_the_users_other_sessions(chat: Chat) -> None:
    laptop, a1 = await chat.login("alice")
    _, a2 = await chat.login("alice")
    await laptop.handle(cmd.Join("Rust"))
    assert ev.Joined("Rust") in a1.events and laptop.current == "rust"
    await a2.wait_for(lambda s: ev.Joined("Rust") in s.events)
    await laptop.handle(cmd.Leave("rust"))
    assert a1.events[-2:] == [ev.Left("Rust"), ev.CurrentChat("general")]
    await a2.wait_for(lambda s: ev.Left("Rust") in s.events)
    await laptop.handle(cmd.Leave("general"))
    assert a1.events[-1] == ev.Error(ev.ErrorCode.REFUSED, "you cannot leave #general")


async def test_unread_messages_replay_once_at_the_next_login(either_chat: Chat) -> None:
    chat = either_chat
    alice_session, _ = await chat.login("alice")
    bob_session, bob = await chat.login("bob")
    bob_session.closed()
    await chat.fanout.cursors.flush()
    await alice_session.handle(cmd.Say(("while you were out",)))
    await alice_session.handle(cmd.SendPrivate("bob", "and privately"))
    _, bob = await chat.login("bob")
    assert bob.messages() == [
        ("#general", "alice", "while you were out"),
        ("@alice", "alice", "and privately"),
    ]
    alice_conv = ev.PrivateConv("alice", "alice")
    ready = bob.events.index(ev.Ready("bob", "general", ("general",), (alice_conv,)))
    assert all(not isinstance(e, ev.Messages) for e in bob.events[ready:])


async def test_a_login_lists_private_conversations_the_most_recent_first(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice_session, _ = await chat.login("alice")
    bob_session, _ = await chat.login("Bob")
    carol_session, _ = await chat.login("Carol")
    await bob_session.handle(cmd.SendPrivate("alice", "from bob"))
    await carol_session.handle(cmd.SendPrivate("alice", "from carol"))
    await alice_session.handle(cmd.SendPrivate("bob", "back to bob"))
    _, phone = await chat.login("alice")  # another device: named as accounts name them
    (ready,) = phone.of(ev.Ready)
    assert ready.privates == (ev.PrivateConv("bob", "Bob"), ev.PrivateConv("carol", "Carol"))
    monkeypatch.setattr(login_module, "PRIVATES_LISTED", 1)  # bounded: the newest only
    _, tablet = await chat.login("alice")
    (ready,) = tablet.of(ev.Ready)
    assert ready.privates == (ev.PrivateConv("bob", "Bob"),)


async def test_history_of_a_private_conversation_is_only_the_users_own(chat: Chat) -> None:
    alice_session, alice = await chat.login("alice")
    bob_session, _ = await chat.login("Bob")
    await chat.login("carol")
    for text in ("one", "two", "three"):
        await bob_session.handle(cmd.SendPrivate("alice", text))
    await alice.wait_for(lambda s: len(s.messages()) == 3)
    alice.events.clear()
    await alice_session.handle(cmd.History(2, peer="BOB"))
    assert alice.messages() == [("@Bob", "Bob", "two"), ("@Bob", "Bob", "three")]
    alice.events.clear()
    await alice_session.handle(cmd.History(None, peer="carol"))
    assert alice.events == [ev.NoHistory("carol", 3600, ev.PrivateConv("carol", "carol"))]
    alice.events.clear()
    await alice_session.handle(cmd.History(None, peer="alice"))
    await alice_session.handle(cmd.History(None, peer="nobody"))
    await alice_session.handle(cmd.History(None, peer="no body"))
    codes = [e.code for e in alice.of(ev.Error)]  # type: ignore[attr-defined]
    assert codes == [ev.ErrorCode.REFUSED, ev.ErrorCode.NO_SUCH_USER, ev.ErrorCode.BAD_NAME]
    assert not alice.messages()


async def test_history_of_a_named_chat_needs_membership_and_keeps_the_current_chat(
    chat: Chat,
) -> None:
    alice_session, alice = await chat.login("alice")
    bob_session, _ = await chat.login("bob")
    await bob_session.handle(cmd.Join("den"))
    await bob_session.handle(cmd.Say(("in the den",)))
    await alice_session.handle(cmd.Join("lounge"))
    alice.events.clear()
    await alice_session.handle(cmd.History(None, chat="den"))
    assert alice.events == [ev.Error(ev.ErrorCode.NOT_MEMBER, "you are not in #den")]
    assert alice_session.current == "lounge"  # a named chat's refusal moves nothing
    await alice_session.handle(cmd.Join("Den"))
    await alice_session.handle(cmd.Join("lounge"))
    alice.events.clear()
    await alice_session.handle(cmd.History(5, chat="DEN"))
    assert alice.messages() == [("#den", "bob", "in the den")]
    assert alice_session.current == "lounge"


async def test_held_messages_already_shown_by_a_stored_read_are_dropped(chat: Chat) -> None:
    session, sink = await chat.login("dave")
    chat_conv = ev.ChatConv("general", "general")
    general = Conv.of_chat("general")
    old = Message(Position(5, 0), general, "x", "general", "old")
    new = Message(Position(7, 0), general, "x", "general", "new")
    session._hold()
    session.hold(ev.Messages(chat_conv, (old, new)))
    assert not sink.messages()  # held, not shown
    session._release({general: Position(5, 0)})
    assert sink.messages() == [("#general", "x", "new")]


async def test_a_store_that_fails_is_said_once_per_message(chat: Chat) -> None:
    session, sink = await chat.login("erin")

    def down(*args: object) -> object:
        raise StoreUnavailable("down")

    chat.store.post_chat = down  # type: ignore[method-assign]
    await session.handle(cmd.Say(("one", "two")))
    errors = sink.of(ev.Error)
    assert [e.code for e in errors] == [ev.ErrorCode.STORE_DOWN] * 2  # type: ignore[attr-defined]
    assert session.phase is Phase.READY


async def test_complaints_ban_at_the_threshold(chat: Chat) -> None:
    _, target = await chat.login("mallory")
    for nick in ("a1", "a2", "a3"):
        s, sink = await chat.login(nick)
        await s.handle(cmd.Ban("Mallory"))
    complained = sink.of(ev.Complained)[-1]
    assert complained.count == 3 and complained.banned_until_ms  # type: ignore[attr-defined]
    await target.wait_for(lambda s: s.of(ev.Banned))


async def test_a_connection_gone_during_login_leaves_no_ghost(chat: Chat) -> None:
    import asyncio

    for stage in range(6):  # close after 0..5 loop turns: while hashing, registering, loading
        session, _ = await chat.connect()
        await session.handle(cmd.Nick(f"ghost{stage}"))
        task = asyncio.ensure_future(session.handle(cmd.Password("secret123")))
        for _ in range(stage):
            await asyncio.sleep(0)
        session.closed()
        await task
        assert f"ghost{stage}" not in chat.fanout.users, stage
    await chat.login("alice")
    assert set(chat.fanout.users) == {"alice"}


async def test_a_banned_user_is_told_at_login(chat: Chat) -> None:
    await chat.login("trudy")
    for nick in ("c1", "c2", "c3"):
        s, _ = await chat.login(nick)
        await s.handle(cmd.Ban("trudy"))
    _, sink = await chat.login("trudy")
    ready = next(i for i, e in enumerate(sink.events) if isinstance(e, ev.Ready))
    banned = sink.events[ready + 1]
    assert isinstance(banned, ev.Banned) and banned.by_moderator is None
    assert banned.until_ms > 0


async def test_a_gap_fill_that_fails_once_is_read_again(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "GAP_RETRY_FIRST", 0)  # read again at once
    alice_session, _ = await chat.login("alice")
    _, bob = await chat.login("bob")
    await alice_session.handle(cmd.Say(("before",)))
    await bob.wait_for(lambda s: s.messages())
    lost_at = chat.clock.now_ms() / 1000
    chat.fanout._recovering = 1  # the link is "down": live events are only held
    await alice_session.handle(cmd.Say(("missed",)))
    with pytest.raises(AssertionError):  # held: not shown, however long one waits
        await bob.wait_for(lambda s: ("#general", "alice", "missed") in s.messages())
    chat.fanout._recovering = 0  # back: the gap fill below releases what was held
    real = chat.store.read_after
    calls = 0

    async def flaky(after):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("still coming back")
        return await real(after)

    chat.store.read_after = flaky  # type: ignore[method-assign]
    await chat.fanout._on_reconnect(lost_at)
    assert calls == 2  # read again after the failure
    shown = bob.messages()
    assert shown.count(("#general", "alice", "missed")) == 1  # not lost, not twice
    assert shown.count(("#general", "alice", "before")) == 1
