"""A big chat is written in chunks (gateway/bigchat.py), with CHUNK made small here: every
reader gets every message once and in order, a burst that arrives during a pass reaches
the readers ahead in the same write, other work runs between chunks, and readers who join
or leave during a pass get exactly what a reader of a small chat would."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core import events as ev
from store.contract import GENERAL, ChatPosts, Conv, Message, Position
from tests.core.conftest import Chat, Recorder

CHUNK = 3


@pytest.fixture
def chat(chat: Chat) -> Chat:
    """The core's chat with chunks of CHUNK readers (--fanout-chunk)."""
    chat.fanout.chunk = chat.fanout.big.chunk = CHUNK
    return chat


def _post(n: int) -> ChatPosts:
    """Message n of #general as the store would publish it (ids increasing with n)."""
    pos = Position(1_000_000 + n, 0)
    return ChatPosts(GENERAL, [Message(pos, Conv.of_chat(GENERAL), "zed", GENERAL, f"m{n}")])


def _texts(sink: Recorder) -> list[str]:
    return [t for _, _, t in sink.messages() if t.startswith("m")]


async def _until_idle(chat: Chat) -> None:
    for _ in range(200):
        if not chat.fanout.big.busy(GENERAL):
            return
        await asyncio.sleep(0)
    raise AssertionError("the passes never ended")


async def test_every_reader_gets_every_message_once_in_order_and_bursts_merge(
    chat: Chat,
) -> None:
    sinks = [(await chat.login(f"u{i}"))[1] for i in range(10)]
    for s in sinks:
        s.events.clear()
    chat.fanout.on_events([_post(0)])
    assert chat.fanout.big.busy(GENERAL)
    assert sum(bool(_texts(s)) for s in sinks) == 0  # nothing written before the first turn
    await asyncio.sleep(0)  # one chunk
    assert sum(bool(_texts(s)) for s in sinks) == CHUNK
    chat.fanout.on_events([_post(1)])  # arrives during the pass
    chat.fanout.on_events([_post(2)])
    await _until_idle(chat)
    for s in sinks:
        assert _texts(s) == ["m0", "m1", "m2"], s.events
    # the readers not yet written when m1 and m2 came got all three in one write
    shows = [len([e for e in s.events if isinstance(e, ev.Messages)]) for s in sinks]
    assert sorted(shows) == [1] * (10 - CHUNK) + [2] * CHUNK, shows
    written = chat.fanout.timing.report()
    assert [a[2] for a in written["arrivals"]][-3:] == [1, 1, 1]  # type: ignore[index]


async def test_readers_who_join_or_leave_during_a_pass(chat: Chat) -> None:
    sessions = [await chat.login(f"u{i}") for i in range(10)]
    for _, s in sessions:
        s.events.clear()
    chat.fanout.on_events([_post(0)])
    await asyncio.sleep(0)
    late_session, late = await chat.login("late")  # joins #general during the pass
    gone_session, gone = sessions[-1]
    gone_session.closed("peer")  # its connection ends during the pass
    chat.fanout.on_events([_post(1)])
    await _until_idle(chat)
    chat.fanout.on_events([_post(2)])
    await _until_idle(chat)
    assert _texts(late) == ["m1", "m2"]  # what arrived after it joined, once each
    assert not {"m1", "m2"} & set(_texts(gone))
    for _, s in sessions[:-1]:
        assert _texts(s) == ["m0", "m1", "m2"]
    assert late_session.user is not None
    assert late_session.user.shown(Conv.of_chat(GENERAL)) == Position(1_000_002, 0)


async def test_other_work_runs_between_chunks(chat: Chat) -> None:
    sinks = [(await chat.login(f"u{i}"))[1] for i in range(9)]
    ran: list[int] = []

    async def other() -> None:
        for _ in range(3):
            ran.append(sum(bool(_texts(s)) for s in sinks))
            await asyncio.sleep(0)

    chat.fanout.on_events([_post(0)])
    await other()
    assert ran == [0, CHUNK, 2 * CHUNK]
    await _until_idle(chat)


async def test_fanout_chunk_0_writes_every_reader_at_once(chat: Chat) -> None:
    sinks = [(await chat.login(f"u{i}"))[1] for i in range(9)]
    chat.fanout.chunk = 0
    chat.fanout.on_events([_post(0)])
    assert not chat.fanout.big.busy(GENERAL)
    assert all(_texts(s) == ["m0"] for s in sinks)
