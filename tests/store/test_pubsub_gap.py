"""The pub/sub link after a reconnect: what the new connection hears before fan-out has
started reading the gap must not reach fan-out ahead of the gap, and the gap must start
where the link was lost or its caller stopped waiting.

A fake Redis answers the resubscription with its acknowledgement and, in the same write,
a message published right after it: what a gateway reads in one go when it was not
scheduled for a moment after its SUBSCRIBE. (With that moment widened on purpose, the
end-to-end test of a Redis restarted empty saw a user's own message arrive late, after
one published after it.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import hiredis
import pytest

from scripts.procs import free_port
from store import keys, pubsub
from store.contract import ChatPosts, StoreEvent
from store.payloads import message_record, payload
from store.pubsub import PubSubLink
from store.resp import encode_command

CHANNEL = keys.chat_channel("room")


def _push(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _ack(channel: bytes, count: int) -> bytes:
    return b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:%d\r\n" % (len(channel), channel, count)


LIVE = payload([message_record("2000-0", "c:room", "bob", "room", "live")]).encode()


class FakeRedis:
    """A Redis on loopback that acknowledges every SUBSCRIBE channel by channel and then
    writes what `after_ack(n)` gives for its n-th connection (from 1); None: that
    connection is closed after the acknowledgements (`closed_at` says when)."""

    def __init__(self, after_ack: Callable[[int], bytes | None] = lambda _: b"") -> None:
        self.after_ack = after_ack
        self.connections: list[asyncio.StreamWriter] = []
        self.closed_at: list[float] = []
        self._server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        n = len(self.connections)
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                assert command[0].upper() == b"SUBSCRIBE", command
                more = self.after_ack(n)
                writer.write(b"".join(_ack(c, i + 1) for i, c in enumerate(command[1:])))
                if more is None:
                    await writer.drain()
                    self.closed_at.append(time.time())
                    writer.close()
                    return
                writer.write(more)


def _heard(seen: list[str]) -> Callable[[list[StoreEvent]], None]:
    """An `on_events` that notes the text of every message it is handed."""

    def on_events(events: list[StoreEvent]) -> None:
        for e in events:
            assert isinstance(e, ChatPosts)
            seen.extend(m.text for m in e.messages)

    return on_events


async def _no_gap(lost_at: float) -> None:
    raise AssertionError("no reconnect in this test")


async def test_a_message_read_with_the_resubscribe_ack_comes_after_the_gap() -> None:
    redis = FakeRedis(lambda n: _push(b"message", CHANNEL.encode(), LIVE) if n > 1 else b"")
    port = free_port()
    await redis.start(port)  # the reconnect: a message in the same write as the ack
    seen: list[str] = []

    async def on_reconnect(lost_at: float) -> None:
        await asyncio.sleep(0.05)  # the gap read's round trip
        seen.append("gap read")

    link = PubSubLink(f"redis://127.0.0.1:{port}/0", _heard(seen), on_reconnect, lambda _: None)
    try:
        await link.start()
        await link.subscribe([CHANNEL])
        redis.connections[0].close()  # the link is lost; it reconnects and resubscribes
        async with asyncio.timeout(5):
            while "live" not in seen:
                await asyncio.sleep(0.01)
        assert seen == ["gap read", "live"]
    finally:
        await link.close()
        await redis.stop()


async def test_a_held_link_hands_over_what_it_heard_when_released() -> None:
    """On a Redis Cluster, channels whose slot moved (or whose master failed over) are
    subscribed on another link, then their gap is read: that link is held meanwhile
    (ShardedLinks._follow), so a message read with the SSUBSCRIBE's acknowledgement
    waits for the gap too, and then comes in the order heard."""
    redis = FakeRedis(lambda _: _push(b"message", CHANNEL.encode(), LIVE))
    port = free_port()
    await redis.start(port)
    seen: list[str] = []
    link = PubSubLink(f"redis://127.0.0.1:{port}/0", _heard(seen), _no_gap, lambda _: None)
    try:
        await link.start()
        link.hold()
        link.hold()  # a second mover: held until both released
        await link.subscribe([CHANNEL])
        await asyncio.sleep(0.1)  # the message has been read by now
        assert seen == []
        link.release()
        assert seen == []
        seen.append("gap read")
        link.release()
        assert seen == ["gap read", "live"]
        link.hold()  # held again later: nothing of before comes twice
        link.release()
        assert seen == ["gap read", "live"]
    finally:
        await link.close()
        await redis.stop()


def test_the_fake_redis_speaks_resp() -> None:
    """The fake's acknowledgement and push parse as Redis' own (hiredis)."""
    parser = hiredis.Reader()
    parser.feed(_ack(b"c", 1) + _push(b"message", b"c", b"x") + encode_command("PING"))
    assert parser.gets() == [b"subscribe", b"c", 1]
    assert parser.gets() == [b"message", b"c", b"x"]


async def test_a_link_not_up_in_time_reads_the_gap_when_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a Redis Cluster a new master's link is waited for a few seconds at most
    (`_connected`); the caller then goes on (a failover reads its gap and releases the
    hold). When that link's first connection comes later, what was published meanwhile
    must still be read: it reads the gap from when the first wait began, as after a
    loss (a later caller's wait must not move that start past the first one's)."""
    monkeypatch.setattr(pubsub, "SUBSCRIBE_ACK_TIMEOUT", 0.05)
    redis = FakeRedis()
    port = free_port()  # nothing listens there yet: the master cannot be reached
    gaps: list[float] = []

    async def on_reconnect(lost_at: float) -> None:
        gaps.append(lost_at)

    link = PubSubLink(f"redis://127.0.0.1:{port}/0", lambda _: None, on_reconnect, lambda _: None)
    link._task = asyncio.get_running_loop().create_task(link._run())
    try:
        link.want([CHANNEL])
        before = time.time()
        await pubsub._connected(link)  # gives up: the caller goes on
        gave_up = time.time()
        await asyncio.sleep(0.1)
        await pubsub._connected(link)  # a later caller (a login) gives up too
        await redis.start(port)
        async with asyncio.timeout(10):
            while not gaps:
                await asyncio.sleep(0.01)
        assert before <= gaps[0] < gave_up  # from when the first wait began
    finally:
        await link.close()
        await redis.stop()


async def test_a_link_lost_while_resubscribing_reads_the_gap_from_the_loss() -> None:
    """A connection lost between two chunks of a resubscription: the link does not wait
    for acknowledgements that cannot come, and the next gap starts when it was lost (it
    started after every remaining chunk's wait, SUBSCRIBE_ACK_TIMEOUT each, and what
    was published in those seconds was read by no gap)."""
    redis = FakeRedis(lambda n: None if n == 2 else b"")  # the first reconnect: lost
    port = free_port()  # after one chunk
    await redis.start(port)
    gaps: list[float] = []

    async def on_reconnect(lost_at: float) -> None:
        gaps.append(lost_at)

    link = PubSubLink(f"redis://127.0.0.1:{port}/0", lambda _: None, on_reconnect, lambda _: None)
    try:
        await link.start()
        await link.subscribe([f"chat:ch:{{u:n{i}}}" for i in range(pubsub.SUBSCRIBE_CHUNK + 1)])
        redis.connections[0].close()
        async with asyncio.timeout(pubsub.SUBSCRIBE_ACK_TIMEOUT * 3):
            while len(gaps) < 2:
                await asyncio.sleep(0.01)
        assert gaps[1] < redis.closed_at[0] + 1, (gaps, redis.closed_at)
    finally:
        await link.close()
        await redis.stop()
