"""Posts from many users travel together: one pipeline per event-loop turn.

Everything requested in one loop turn goes to Redis as one pipeline on the dedicated RESP2
connection, one batch in flight at a time, so ingest costs one round trip per batch rather
than one per message. Chat messages are grouped per chat into one `post_many.lua` call
each: a Lua call costs Redis about 30 us whatever it does, so per-message calls would cap
ingest near 30k messages/s.

On a Redis Cluster (`use`), a sender's ban and bucket live in the sender's slot, not the
chat's: each batch first checks every sender once (`post_gate.lua`, all senders' calls in
one routed pipeline), then sends only the accepted messages to the chats.

Logins travel together too (`Coalescer`): a reconnect storm is thousands of logins, each a
few reads and a script call; through redis-py each cost more of the gateway's CPU than the
rest of the login. Unlike posts, any number of those batches may be in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import hiredis

from store import keys
from store.contract import StoreNoReply, StoreUnavailable
from store.resp import reply_error, scripts_lost

__all__ = ["MAX_GROUP", "Batcher", "ChatTarget", "Coalescer", "ScriptLike"]

log = logging.getLogger("chat.store")
T = TypeVar("T")

#: Chat messages in one post_many call: bounds the script's run time (Redis serves nobody
#: else while a script runs) and the size of one command.
MAX_GROUP = 500

#: post_many's arguments: HEAD before the first message (the chat's eight, then the
#: stride), then PLAIN per message (sender key, name, text) or WIDE (and kind, tags).
HEAD, PLAIN, WIDE = 9, 3, 5


class Pipeline(Protocol):
    """RespPipeline, or ClusterPipeline (whose replies may also be exception instances)."""

    async def execute(self, commands: list[tuple[Any, ...]], wait: bool = False) -> list[Any]: ...

    def close(self) -> None: ...


class ScriptLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def sha(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ChatTarget:
    """What every post_many call for one chat shares: its keys and leading arguments."""

    chat: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]


@dataclass(slots=True)
class _ScriptCall:
    script: ScriptLike
    keys: list[str]
    args: list[Any]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _ChatPost:
    """One user's consecutive messages to one chat; resolves to one result per message,
    made by `convert(status, value)` from the script's two replies for it."""

    target: ChatTarget
    user: str
    name: str
    texts: list[str]
    future: asyncio.Future[list[Any]]
    convert: Callable[[str, Any], Any]
    #: post_many's kind ('' a message, 'N' a notice) and client tags, for every text.
    kind: str = ""
    tags: str = ""
    #: On a cluster: post_gate's (status, value) per text; only 'ok' ones are posted.
    gate: list[tuple[str, Any]] | None = None

    def passed(self) -> list[str]:
        if self.gate is None:
            return self.texts
        return [t for t, g in zip(self.texts, self.gate, strict=True) if g[0] == "ok"]

    def results(self, posted: list[Any]) -> list[Any]:
        """One result per text: the gate's refusal, or the next of the posted replies
        (status, value pairs, flat)."""
        convert = self.convert
        if self.gate is None:
            return [convert(posted[i], posted[i + 1]) for i in range(0, len(posted), 2)]
        out, at = [], 0
        for status, value in self.gate:
            if status == "ok":
                out.append(convert(posted[at], posted[at + 1]))
                at += 2
            else:
                out.append(convert(status, value))
        return out


@dataclass(slots=True)
class _Call:
    """One EVALSHA of the pipeline, and who waits for which part of its reply."""

    script: ScriptLike
    keys: list[str]
    args: list[Any]
    single: asyncio.Future[Any] | None = None  # a plain script call
    posts: list[_ChatPost] = field(default_factory=list)  # a post_many group
    messages: int = 0
    #: post_many's arguments per message: 3 while every message is plain, else 5 (with
    #: kind and client tags); args[HEAD - 1] says which.
    stride: int = PLAIN

    def add(self, user: str, name: str, texts: Sequence[str], kind: str, tags: str) -> None:
        """One post's messages' arguments for post_many (a call per post, not per text:
        ingest builds these for every message)."""
        if self.stride == PLAIN and (kind or tags):
            self._widen()
        args = self.args
        if self.stride == PLAIN:
            for text in texts:
                args += (user, name, text)
        else:
            for text in texts:
                args += (user, name, text, kind, tags)

    def _widen(self) -> None:
        """Give the messages so far their (empty) kind and tags: a notice or tagged
        message joined a call of plain ones."""
        head, body = self.args[: HEAD - 1], self.args[HEAD:]
        self.args = [*head, WIDE]
        for i in range(0, len(body), PLAIN):
            self.args += (*body[i : i + PLAIN], "", "")
        self.stride = WIDE

    def fail(self, exc: BaseException) -> None:
        futures = [self.single] if self.single else [p.future for p in self.posts]
        for fut in futures:
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    def unconfirmed(self, exc: StoreNoReply) -> None:
        """The request went out but no reply came: chat posts resolve to their "may have
        been stored" result (the script's status "unconfirmed"); a plain call fails."""
        if self.single is not None:
            self.fail(exc)
            return
        for post in self.posts:
            if not post.future.done():
                post.future.set_result(post.results(["unconfirmed", ""] * len(post.passed())))

    def resolve(self, reply: Any) -> None:
        if self.single is not None:
            if not self.single.done():
                self.single.set_result(reply)
            return
        at = 0
        for post in self.posts:
            n = 2 * len(post.passed())
            if not post.future.done():
                post.future.set_result(post.results(reply[at : at + n]))
            at += n


class Batcher:
    """Sends everything requested in one loop turn as one pipeline, one batch in flight.
    Each caller gets its own future, which always resolves (a failed batch fails it)."""

    def __init__(
        self,
        pipeline: Pipeline,
        post_many: ScriptLike,
        reload: Callable[[], Awaitable[None]],
    ) -> None:
        self._pipeline = pipeline
        self._post_many = post_many
        self._reload = reload
        self._pending: list[_ScriptCall | _ChatPost] = []
        self._running = False
        self._gate: ScriptLike | None = None
        self._gate_args: tuple[float, int] = (0.0, 0)

    def use(self, pipeline: Pipeline, gate: ScriptLike, rate: float, burst: int) -> None:
        """Post on a Redis Cluster: through `pipeline`, each sender checked by `gate`."""
        self._pipeline = pipeline
        self._gate = gate
        self._gate_args = (rate, burst)

    def call(self, script: ScriptLike, keys_: list[str], args: list[Any]) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._push(_ScriptCall(script, keys_, args, fut))
        return fut

    def chat(
        self,
        target: ChatTarget,
        user: str,
        name: str,
        texts: list[str],
        convert: Callable[[str, Any], T],
        kind: str = "",
        tags: str = "",
    ) -> asyncio.Future[list[T]]:
        """Queue one user's messages to one chat; resolves to `convert(status, value)` for
        each message, in order."""
        fut: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
        self._push(_ChatPost(target, user, name, texts, fut, convert, kind, tags))
        return fut

    def _push(self, item: _ScriptCall | _ChatPost) -> None:
        self._pending.append(item)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                calls: list[_Call] = []
                try:
                    if self._gate is not None:
                        batch = await self._check_senders(batch)
                    calls = self._calls(batch)
                    await self._send(calls, retry=True)
                except Exception as exc:  # never leave a caller waiting forever
                    log.exception("post batch failed")
                    for call in calls:
                        call.fail(exc)
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
        finally:
            self._running = False

    async def _check_senders(
        self, batch: list[_ScriptCall | _ChatPost]
    ) -> list[_ScriptCall | _ChatPost]:
        """On a cluster: one post_gate call per sender for all their messages in the
        batch; records each text's verdict, resolves posts with nothing accepted, and
        returns what is still to send."""
        assert self._gate is not None
        senders: dict[str, list[_ChatPost]] = {}
        for item in batch:
            if isinstance(item, _ChatPost):
                senders.setdefault(item.user, []).append(item)
        if not senders:
            return batch
        rate, burst = self._gate_args
        commands = [
            (
                "EVALSHA",
                self._gate.sha,
                2,
                *keys.sender_keys(u),
                rate,
                burst,
                sum(len(p.texts) for p in posts),
            )
            for u, posts in senders.items()
        ]
        replies = await self._pipeline.execute(commands)
        again = [i for i, r in enumerate(replies) if scripts_lost(r)]
        if again:  # only those: the others took their tokens already
            await self._reload()
            redone = await self._pipeline.execute([commands[i] for i in again])
            for i, reply in zip(again, redone, strict=True):
                replies[i] = reply
        for posts, reply in zip(senders.values(), replies, strict=True):
            if isinstance(reply, BaseException | hiredis.ReplyError):
                exc = reply_error(reply)
                for post in posts:
                    if not post.future.done():
                        post.future.set_exception(exc)
                continue
            at = 0
            for post in posts:
                n = len(post.texts)
                post.gate = [(reply[at + 2 * k], reply[at + 2 * k + 1]) for k in range(n)]
                at += 2 * n
                if not post.passed() and not post.future.done():
                    post.future.set_result(post.results([]))
        return [item for item in batch if not item.future.done()]

    def _calls(self, batch: list[_ScriptCall | _ChatPost]) -> list[_Call]:
        """One call per script request; chat posts grouped per chat (at most MAX_GROUP
        messages a call) in the order of their first message."""
        calls: list[_Call] = []
        groups: dict[str, _Call] = {}
        for item in batch:
            if isinstance(item, _ScriptCall):
                calls.append(_Call(item.script, item.keys, item.args, single=item.future))
                continue
            target = item.target
            texts = item.passed()
            call = groups.get(target.chat)
            if call is None or call.messages + len(texts) > MAX_GROUP:
                call = _Call(self._post_many, list(target.keys), [*target.args, PLAIN])
                groups[target.chat] = call
                calls.append(call)
            checked_here = item.gate is None  # standalone: post_many checks the sender
            if checked_here:
                call.keys += keys.sender_keys(item.user) * len(texts)
            call.add(item.user, item.name, texts, item.kind, item.tags)
            call.posts.append(item)
            call.messages += len(texts)
        return calls

    async def _send(self, calls: list[_Call], retry: bool) -> None:
        commands = [("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args) for c in calls]
        try:
            replies = await self._pipeline.execute(commands, wait=True)
        except StoreNoReply as exc:  # sent, unanswered: each post may have been stored
            for call in calls:
                call.unconfirmed(exc)
            return
        except StoreUnavailable as exc:
            for call in calls:
                call.fail(exc)
            return
        again = []
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, StoreNoReply):  # a cluster node lost: that part only
                call.unconfirmed(reply)
            elif isinstance(reply, StoreUnavailable):
                call.fail(reply)
            elif scripts_lost(reply) and retry:
                again.append(call)
            elif isinstance(reply, hiredis.ReplyError):
                call.fail(reply_error(reply))
            else:
                call.resolve(reply)
        if again:  # Redis lost its scripts (restart, SCRIPT FLUSH): load them, once
            await self._reload()
            await self._send(again, retry=False)


class Coalescer:
    """Commands asked for during one event-loop turn, by any number of callers, go to
    Redis as one pipeline on the hot-path connection. Each caller gets its own replies, in
    order, error replies included (as `Pipeline.execute` gives them); a batch that fails
    as a whole fails every caller's future."""

    def __init__(self, pipeline: Callable[[], Pipeline]) -> None:
        self._pipeline = pipeline  # asked at each flush: the store may switch pipelines
        self._pending: list[tuple[list[tuple[Any, ...]], asyncio.Future[list[Any]]]] = []
        self._sending: set[asyncio.Task[list[Any]]] = set()

    def run(self, commands: list[tuple[Any, ...]]) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((commands, fut))
        return fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        commands = [c for cmds, _ in batch for c in cmds]
        task = asyncio.ensure_future(self._pipeline().execute(commands))
        self._sending.add(task)
        task.add_done_callback(lambda t: self._resolve(batch, t))

    def _resolve(
        self,
        batch: list[tuple[list[tuple[Any, ...]], asyncio.Future[list[Any]]]],
        task: asyncio.Task[list[Any]],
    ) -> None:
        self._sending.discard(task)
        exc = None if task.cancelled() else task.exception()
        if task.cancelled() or exc is not None:
            failure = exc or StoreUnavailable("the batch was cancelled")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(failure)
            return
        replies, at = task.result(), 0
        for cmds, fut in batch:
            if not fut.done():
                fut.set_result(replies[at : at + len(cmds)])
            at += len(cmds)
