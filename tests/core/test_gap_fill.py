"""Reading the gap after a pub/sub link came back: nothing lost, nothing twice, even when a
live message arrives while the gap is being read, or when two links (two shards of a
cluster) recover at once. Messages "published while the link was down" are written to the
stream directly, so only the gap read can show them."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core import commands as cmd
from store.contract import ACCEPTED, GENERAL, ChatPosts, Conv, Message, Range
from tests.core.conftest import Chat


async def _stored(chat: Chat, text: str, where: str = GENERAL) -> Message:
    """A message of bob's in `where`'s stream that no link delivered (published to
    nobody): its publish is lost, or its live copy still to come."""
    server = chat.store.server
    links, server.links = server.links, set()
    try:
        assert await chat.store.post_chat("bob", "bob", where, where, [text]) == [ACCEPTED]
    finally:
        server.links = links
    (m,) = await chat.store.read_range(Conv.of_chat(where), Range(1, newest=True))
    return m._replace(where=where)


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def _scene(chat: Chat):  # type: ignore[no-untyped-def]
    _, alice = await chat.login("alice")
    bob, _ = await chat.login("bob")
    await bob.handle(cmd.Say(("m0",)))
    await alice.wait_for(lambda s: len(s.messages()) >= 1)
    return alice


async def test_a_live_message_during_the_gap_read_does_not_hide_the_gap(chat: Chat) -> None:
    alice = await _scene(chat)
    await _stored(chat, "m1")
    await _stored(chat, "m2")
    check = chat.fanout.epoch.check

    async def slow_check() -> None:  # the link is back: m3 arrives live meanwhile
        chat.fanout.on_events([ChatPosts(GENERAL, [await _stored(chat, "m3")])])
        await check()

    chat.fanout.epoch.check = slow_check  # type: ignore[method-assign]
    await chat.fanout._on_reconnect(chat.clock.now_ms() / 1000 - 5)
    texts = [t for _, _, t in alice.messages()]
    assert texts == ["m0", "m1", "m2", "m3"]


async def test_two_gap_fills_at_once_show_each_message_once(chat: Chat) -> None:
    alice = await _scene(chat)
    await _stored(chat, "m1")
    read = chat.store.read_after
    calls = 0
    slow = asyncio.Event()

    async def slow_read(after):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            await slow.wait()  # one link's read is slower than the other's
        return await read(after)

    chat.store.read_after = slow_read  # type: ignore[method-assign]
    lost_at = chat.clock.now_ms() / 1000 - 5
    first = asyncio.create_task(chat.fanout._on_reconnect(lost_at))
    second = asyncio.create_task(chat.fanout._on_reconnect(lost_at))
    await _turns()
    assert calls == 2 and not first.done() and second.done()
    chat.fanout.on_events([ChatPosts(GENERAL, [await _stored(chat, "m2")])])  # live, held
    slow.set()
    await asyncio.gather(first, second)
    texts = [t for _, _, t in alice.messages()]
    assert texts == ["m0", "m1", "m2"]


def test_private_messages_out_of_order_are_shown_once_each() -> None:
    """On a cluster two senders' private messages can be published out of id order: the
    older one is still shown; a copy or a replay of one already shown is not."""
    from gateway.core.user import RECENT_PRIVATE, LocalUser
    from store.contract import Position as P
    from store.contract import UserState

    user = LocalUser("ann", "ann", UserState({}, set(), {}))
    conv = Conv.private("ann", "bob")
    assert user.fresh_private(conv, P(5, 0))
    assert user.fresh_private(conv, P(3, 0))  # older, but never shown
    assert not user.fresh_private(conv, P(3, 0)) and not user.fresh_private(conv, P(5, 0))
    for ms in range(10, 10 + RECENT_PRIVATE):
        assert user.fresh_private(conv, P(ms, 0))
    assert not user.fresh_private(conv, P(4, 0))  # older than all remembered: a replay


async def test_a_message_a_join_read_and_then_heard_live_is_shown_once(chat: Chat) -> None:
    """A join reads the chat's last messages while holding live ones; a message stored
    just before that read may still be on its way on the pub/sub connection when the read
    has been shown and the hold released. Its live copy is not shown again (the reset
    end-to-end test saw alice's message twice, the second after the join's read)."""
    alice_session, alice = await chat.login("alice")
    bob, _ = await chat.login("bob")
    await bob.handle(cmd.Join("room"))
    m1 = await _stored(chat, "m1", "room")  # its live copy still to come
    await alice_session.handle(cmd.Join("room"))
    assert [t for _, _, t in alice.messages()] == ["m1"]  # the join's read
    chat.fanout.on_events([ChatPosts("room", [m1])])  # late, live
    assert [t for _, _, t in alice.messages()] == ["m1"]
    await bob.handle(cmd.Say(("m2",)))  # what comes after the read is shown, once
    await alice.wait_for(lambda s: len(s.messages()) >= 2)
    assert [t for _, _, t in alice.messages()] == ["m1", "m2"]
    assert alice_session.stored is None  # past the read: not checked any more


async def test_a_late_live_copy_held_by_a_second_read_is_not_shown_again(chat: Chat) -> None:
    """Joins in a row (a client rejoining its chats): the late live copy of what the
    first join's read showed comes while the second join's read holds live messages; at
    that release it is still known as shown."""
    alice_session, alice = await chat.login("alice")
    bob, _ = await chat.login("bob")
    await bob.handle(cmd.Join("room"))
    await bob.handle(cmd.Join("side"))
    m1 = await _stored(chat, "m1", "room")  # its live copy still to come
    await alice_session.handle(cmd.Join("room"))
    assert [t for _, _, t in alice.messages()] == ["m1"]  # the first join's read
    alice_session._hold()  # the second join's read, as `_join` holds (the memory store
    # answers within one loop turn, too soon for the late copy to come in between)
    chat.fanout.on_events([ChatPosts("room", [m1])])  # late, live
    alice_session._release({})
    await alice_session.handle(cmd.Join("side"))
    await bob.handle(cmd.Say(("m2",)))  # in #side, after both reads: shown once
    await alice.wait_for(lambda s: len(s.messages()) >= 2)
    assert [t for _, _, t in alice.messages()] == ["m1", "m2"]


async def test_what_a_read_showed_is_forgotten_after_a_while(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quiet conversation sends no live message to end the check: the session's memory
    of the read is freed after STORED_FOR anyway (one dict per session otherwise)."""
    import gateway.core.base

    monkeypatch.setattr(gateway.core.base, "STORED_FOR", 0.02)
    alice_session, alice = await chat.login("alice")
    bob, _ = await chat.login("bob")
    await bob.handle(cmd.Join("room"))
    await bob.handle(cmd.Say(("m1",)))
    await alice_session.handle(cmd.Join("room"))
    assert [t for _, _, t in alice.messages()] == ["m1"]
    assert alice_session.stored is not None
    await asyncio.sleep(0.1)
    assert alice_session.stored is None


async def test_a_gap_read_after_the_window_does_not_show_a_read_message_again(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A join's read showed m1, whose publish was lost with the pub/sub link; the gap
    read after the link came back brings m1 again, later than STORED_FOR (Redis was down
    a long while): the session still knows it showed m1, since it forgets only once
    fan-out has settled."""
    import gateway.core.base

    monkeypatch.setattr(gateway.core.base, "STORED_FOR", 0.02)
    alice_session, alice = await chat.login("alice")
    bob, _ = await chat.login("bob")
    await bob.handle(cmd.Join("room"))
    await _stored(chat, "m1", "room")  # its publish is lost
    await alice_session.handle(cmd.Join("room"))
    assert [t for _, _, t in alice.messages()] == ["m1"]  # the join's read
    read = chat.store.read_after
    slow = asyncio.Event()

    async def slow_read(after):  # type: ignore[no-untyped-def]
        await slow.wait()  # Redis comes back late
        return await read(after)

    chat.store.read_after = slow_read  # type: ignore[method-assign]
    gap = asyncio.create_task(chat.fanout._on_reconnect(chat.clock.now_ms() / 1000 - 5))
    await asyncio.sleep(0.1)  # five windows while the gap is read
    slow.set()
    await gap
    await _turns()
    assert [t for _, _, t in alice.messages()] == ["m1"]
    await asyncio.sleep(0.1)  # settled now: forgotten after the window
    assert alice_session.stored is None
