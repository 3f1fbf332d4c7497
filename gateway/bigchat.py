"""Fan-out to a big chat: in chunks, each message reaching everyone within one rotation.

A burst for a chat of 16,667 local readers is 16,667 sends, a few hundred ms of a core.
Written in one go, two things went wrong in a busy chat (docs/PERFORMANCE.md, "Broadcast
to 50,000"): a message arriving during a pass waited for that pass to end and then took
a whole pass of its own, so its last reader had it up to two passes later; and nothing
else on the gateway (logins, other chats, input) ran meanwhile.

Here a big chat's delivery is a queue of passes, each a list of readers still to be
written and the burst they lack, run CHUNK readers per event-loop turn (the loop reads
Redis and serves everyone else in between). A burst that arrives meanwhile is appended
to every pass's burst (the readers ahead get both in one write, rendered once), and the
readers already written since the last arrival get it in a new pass at the end of the
queue. So every reader is written once per rotation with everything it lacks, in order,
and a message's last reader has it about one rotation after it arrived.

Invariant: a reader of the chat is in exactly one place, a pass's remaining readers or the
`caught_up` list (it has everything delivered so far); a reader that joins during a pass
is caught up. Readers are checked against the chat's reader set when their turn comes, so
one who left (or whose sessions all closed) is skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gateway.core import events as ev

if TYPE_CHECKING:
    from gateway.core.user import LocalUser

__all__ = ["CHUNK", "BigChats", "Timing"]

#: Readers written per event-loop turn; chats with more local readers go through here
#: (--fanout-chunk).
CHUNK = 1000
#: Arrivals remembered for /debug/fanout (about 180 bytes each; a 30 s broadcast at 10
#: msg/s is at most 300).
KEPT = 1024


class Timing:
    """What /debug/fanout shows: per arrival from Redis (arrived, last reader written:
    monotonic ns; messages, deliveries, the first message's age at arrival in ms by
    Redis' clock), and running totals of the time spent queueing (rendering once and
    appending to each reader's output) and writing (handing each reader's bytes to the
    kernel), with the deliveries and writes they made."""

    __slots__ = ("queue_ns", "ring", "write_ns", "writes")

    def __init__(self) -> None:
        self.ring: deque[tuple[int, int, int, int, int]] = deque(maxlen=KEPT)
        self.queue_ns = self.write_ns = self.writes = 0

    def done(self, record: list[int], now: int) -> None:
        self.ring.append((record[0], now, record[2], record[3], record[4]))

    def report(self) -> dict[str, object]:
        return {
            "fields": ["arrived_ns", "written_ns", "messages", "deliveries", "age_ms"],
            "arrivals": list(self.ring),
            "queue_ns": self.queue_ns,
            "write_ns": self.write_ns,
            "writes": self.writes,
        }


class _Pass:
    __slots__ = ("at", "messages", "records", "users")

    def __init__(self, users: list[LocalUser], messages: ev.Messages, record: list[int]) -> None:
        self.users = users
        self.at = 0
        self.messages = messages
        self.records = [record]


class _Chat:
    __slots__ = ("caught_up", "passes", "pending")

    def __init__(self) -> None:
        self.passes: list[_Pass] = []
        self.caught_up: list[LocalUser] = []
        self.pending: set[LocalUser] = set()  # in some pass's remaining readers


class BigChats:
    """The passes of every big chat; `deliver(users, messages)` writes to readers (fan-out's
    own function) and `flush()` sends what a chunk queued."""

    def __init__(
        self,
        readers: dict[str, set[LocalUser]],
        deliver: Callable[[Iterable[LocalUser], ev.Messages], None],
        flush: Callable[[], None],
        timing: Timing,
        chunk: int = CHUNK,
    ) -> None:
        self.chunk = chunk
        self._readers = readers
        self._deliver = deliver
        self._flush = flush
        self._timing = timing
        self._chats: dict[str, _Chat] = {}
        self._scheduled = False

    def busy(self, chat: str) -> bool:
        return chat in self._chats

    def joined(self, chat: str, user: LocalUser) -> None:
        """`user` became a reader of `chat`: it gets what arrives from now on."""
        state = self._chats.get(chat)
        if state is not None and user not in state.pending:
            state.caught_up.append(user)

    def add(self, chat: str, messages: ev.Messages, record: list[int]) -> None:
        """A burst for `chat` (`record`: its /debug/fanout entry, completed when the last
        pass carrying it ends)."""
        state = self._chats.get(chat)
        if state is None:
            state = self._chats[chat] = _Chat()
            users = list(self._readers.get(chat, ()))
        else:
            for p in state.passes:  # the readers ahead in each pass get it with theirs
                p.messages = ev.Messages(p.messages.where, p.messages.items + messages.items)
                p.records.append(record)
                record[5] += 1
            users = list(dict.fromkeys(state.caught_up))  # a rejoin may have added twice
            state.caught_up = []
        if users:
            state.passes.append(_Pass(users, messages, record))
            state.pending.update(users)
            record[5] += 1
        if record[5] == 0:
            self._timing.done(record, time.monotonic_ns())
        if not state.passes:
            del self._chats[chat]
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        """One chunk of readers, oldest pass first; again next turn while any are left."""
        self._scheduled = False
        timing = self._timing
        began = time.monotonic_ns()
        budget = self.chunk
        completed: list[list[int]] = []
        for chat, state in list(self._chats.items()):
            members = self._readers.get(chat, set())
            while state.passes and budget > 0:
                p = state.passes[0]
                chunk = p.users[p.at : p.at + budget]
                p.at += len(chunk)
                budget -= len(chunk)
                live = [u for u in chunk if u in members]
                state.pending.difference_update(chunk)
                self._deliver(live, p.messages)
                timing.writes += len(live)
                state.caught_up += live
                if p.at >= len(p.users):
                    state.passes.pop(0)
                    for record in p.records:
                        record[5] -= 1
                        if record[5] == 0:
                            completed.append(record)
            del self._chats[chat]  # back at the end while it has passes: chats take turns
            if state.passes:
                self._chats[chat] = state
            if budget <= 0:
                break
        queued = time.monotonic_ns()
        self._flush()
        now = time.monotonic_ns()
        timing.queue_ns += queued - began
        timing.write_ns += now - queued
        for record in completed:
            timing.done(record, now)
        if self._chats and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)
