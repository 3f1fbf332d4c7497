"""RESP2 for the hot path: the command encoder and a dedicated pipeline connection.

Profiling ingest showed redis-py spending about 40% of the gateway's busy time packing the
arguments of `post_many` calls. The post batcher therefore sends over its own connection:
a whole batch is encoded with one join and the replies are parsed by hiredis. Everything
else keeps using redis-py. `open_redis` is also the pub/sub link's way in: it speaks TLS
for `rediss://` URLs, so every connection of a gateway is encrypted alike.
"""

from __future__ import annotations

import asyncio
import copy
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import hiredis
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ResponseError

from store.contract import StoreNoReply, StoreRefused, StoreUnavailable
from store.replicas import ReplicaWatch

__all__ = [
    "NotReplicated",
    "RespPipeline",
    "auth_command",
    "cannot_serve_now",
    "encode_command",
    "open_redis",
    "refusal",
    "reply_error",
    "scripts_lost",
    "ssl_context",
    "with_ca",
]

#: Error reply prefixes that mean "Redis is up but will not write now": out of memory under
#: `noeviction`, a read-only replica, a failed snapshot, too few replicas.
REFUSALS = ("OOM", "READONLY", "MISCONF", "NOREPLICAS")

P = TypeVar("P", bound=asyncio.Protocol)


class NotReplicated(StoreNoReply):
    """A command Redis carried out (its reply is `reply`) but no replica acknowledged in
    time (`WAIT`): a failover could still lose what it wrote."""

    def __init__(self, reply: Any) -> None:
        super().__init__("no replica acknowledged the write in time")
        self.reply = reply


def not_replicated(replies: list[Any]) -> list[Any]:
    """After a failed WAIT: each reply that is not an error becomes NotReplicated (error
    replies stay as they are: those commands did nothing, and may be resent)."""
    return [
        r if isinstance(r, hiredis.ReplyError | Exception) else NotReplicated(r) for r in replies
    ]


def encode_command(*parts: bytes | str | int | float) -> bytes:
    """One command in RESP, by hiredis in C (a Python loop cost 4x as much: a login storm
    sends tens of thousands of script calls a second). Strings go as UTF-8, numbers as
    their `str`."""
    packed: bytes = hiredis.pack_command(parts)  # type: ignore[arg-type]  # stub: a 1-tuple
    return packed


#: Error replies that mean Redis cannot serve right now (loading its data, a script
#: running too long, no master, a slot moving): the contract's StoreUnavailable.
NOT_NOW = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def cannot_serve_now(text: str) -> bool:
    """Whether an error reply's text says Redis cannot serve now (NOT_NOW): the one test
    of it, for this connection's replies and redis-py's exceptions alike."""
    return text.split(" ", 1)[0] in NOT_NOW


def scripts_lost(reply: Any) -> bool:
    """Whether a reply says Redis no longer has the scripts (a restart, SCRIPT FLUSH): the
    one test of it; whoever meets it reloads them (`Link.reload_scripts`) and retries."""
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")


def reply_error(reply: Any) -> Exception:
    """What a caller raises for an error reply of this connection: a refusal to write or
    a Redis that cannot serve now as the contract's errors, anything else as a
    ResponseError; an exception instance (a cluster node lost) as a copy of its own, so
    that the callers of one batch do not share one traceback."""
    if isinstance(reply, hiredis.ReplyError):
        text = str(reply)
        if cannot_serve_now(text):
            return StoreUnavailable(text)
        return refusal(text) or ResponseError(text)
    return copy.copy(reply) if isinstance(reply, Exception) else StoreUnavailable(str(reply))


def refusal(text: str) -> StoreRefused | None:
    """The contract's error for an error reply that is a refusal to write, else None.
    A script's error carries the reply inside its text ("... OOM command not allowed")."""
    head = text.split(" ", 1)[0]
    if head in REFUSALS or any(f" {r} " in f" {text} " for r in REFUSALS):
        return StoreRefused(text)
    return None


def with_ca(url: str, ca_file: str) -> str:
    """A `rediss://` URL that trusts `ca_file` (unless the URL names a CA itself)."""
    if not ca_file or not url.startswith("rediss://") or "ssl_ca_certs=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}ssl_ca_certs={ca_file}"


def ssl_context(params: dict[str, Any]) -> ssl.SSLContext | None:
    """The TLS context a parsed `rediss://` URL asks for (None for plain redis://), with
    the same meaning of its ssl_* parameters as redis-py gives them."""
    if params.get("connection_class") is not SSLConnection:
        return None
    ctx = ssl.create_default_context(cafile=params.get("ssl_ca_certs"))
    reqs = str(params.get("ssl_cert_reqs", "required")).lower()
    check = params.get("ssl_check_hostname", True)
    ctx.check_hostname = reqs != "none" and check not in (False, "false", "0")
    ctx.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(
        reqs, ssl.CERT_REQUIRED
    )
    if params.get("ssl_certfile"):
        ctx.load_cert_chain(params["ssl_certfile"], params.get("ssl_keyfile"))
    return ctx


async def open_redis(params: dict[str, Any], factory: Callable[[], P], timeout: float) -> P:
    """Connect a protocol to the Redis of a parsed URL (unix socket, TCP, or TLS)."""
    loop = asyncio.get_running_loop()
    if "path" in params:
        connecting = loop.create_unix_connection(factory, params["path"])
    else:
        host = params.get("host", "localhost")
        tls = ssl_context(params)
        connecting = loop.create_connection(
            factory,
            host,
            params.get("port", 6379),
            ssl=tls,
            server_hostname=host if tls is not None else None,
        )
    async with asyncio.timeout(timeout):  # not wait_for (RespPipeline._send says why)
        _, proto = await connecting
    return proto


def auth_command(params: dict[str, Any]) -> tuple[str, ...] | None:
    """The AUTH a parsed URL asks for, if any (with the ACL user when one is given)."""
    if not params.get("password"):
        return None
    if params.get("username"):
        return ("AUTH", params["username"], params["password"])
    return ("AUTH", params["password"])


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8")
        self.transport: asyncio.Transport | None = None
        # Each entry: [replies still expected, replies so far, future].
        self.pending: deque[list[Any]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        while pending:
            reply = self.reader.gets()
            if reply is False:
                return
            head = pending[0]
            head[1].append(reply)
            if len(head[1]) == head[0]:
                pending.popleft()
                if not head[2].done():
                    head[2].set_result(head[1])

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.pending:  # written, unanswered: Redis may have carried them out
            fut = self.pending.popleft()[2]
            if not fut.done():
                fut.set_exception(StoreNoReply(f"connection lost awaiting a reply: {exc}"))


class RespPipeline:
    """Sends batches of commands on one connection; any number of batches in flight."""

    def __init__(self, url: str, timeout: float = 10.0, wait_replica_ms: int = 0) -> None:
        self._params = parse_url(url)  # type: ignore[no-untyped-call]
        self._timeout = timeout
        #: When set, each batch ends with WAIT 1 <ms>: its replies come back only once a
        #: replica has the writes (or the time is up: then the batch counts as unanswered).
        self._wait_replica_ms = wait_replica_ms
        #: Stops the waits while this Redis has no replica (store/replicas.py).
        self.watch = (
            ReplicaWatch(wait_replica_ms, lambda _, command: self._ask(command))
            if wait_replica_ms
            else None
        )
        self._node = f"{self._params.get('host', self._params.get('path'))}:" + str(
            self._params.get("port", "")
        )
        self._proto: _Protocol | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.transport is not None:
            return proto
        async with self._lock:
            if self._proto is not None and self._proto.transport is not None:
                return self._proto
            try:
                proto = await open_redis(self._params, _Protocol, 2)
            except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                raise StoreUnavailable(str(exc)) from exc
            setup: list[tuple[Any, ...]] = []
            auth = auth_command(self._params)
            if auth:
                setup.append(auth)
            if self._params.get("db"):
                setup.append(("SELECT", self._params["db"]))
            self._proto = proto
            if setup:
                for reply in await self._send(proto, setup):
                    if isinstance(reply, hiredis.ReplyError):
                        proto.transport.close()  # type: ignore[union-attr]
                        raise StoreUnavailable(f"redis refused set-up: {reply}")
            return proto

    async def execute(self, commands: list[tuple[Any, ...]], wait: bool = False) -> list[Any]:
        """One reply per command, in order; error replies come back as hiredis.ReplyError.

        Raises `StoreUnavailable` when nothing was sent (no connection), and its subclass
        `StoreNoReply` when the commands were sent but no reply came within the timeout:
        Redis may still carry them out (a stalled server runs them when it wakes). With
        `wait` and a replica wait set, when no replica took the batch in time each reply
        that is not an error comes back as a `NotReplicated` instance."""
        if not (wait and self.watch is not None and self.watch.waits(self._node)):
            return await self._send(await self._connection(), commands)
        replies = await self._send(
            await self._connection(), [*commands, ("WAIT", 1, self._wait_replica_ms)]
        )
        acked = replies.pop()
        if not isinstance(acked, int) or acked < 1:
            if await self.watch.has_no_replica(self._node):
                return replies  # stored on the master, which has no replica to wait for
            return not_replicated(replies)
        return replies

    async def _ask(self, command: tuple[Any, ...]) -> Any:
        (reply,) = await self._send(await self._connection(), [command])
        return reply

    async def _send(self, proto: _Protocol, commands: list[tuple[Any, ...]]) -> list[Any]:
        if proto.transport is None:
            raise StoreUnavailable("connection lost")
        # Encoded before it is queued: a command that cannot be encoded fails this batch
        # alone, and leaves no entry that would take the replies of the batches after it.
        data = b"".join(encode_command(*c) for c in commands)
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        proto.pending.append([len(commands), [], fut])
        proto.transport.write(data)
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result
            # when a cancel and the reply come in the same loop turn, so the caller's
            # task goes on as if never cancelled (a presence loop outlived its gateway's
            # shutdown so, with the process never exiting)
            async with asyncio.timeout(self._timeout):
                return await fut
        except TimeoutError as exc:
            if proto.transport is not None:
                proto.transport.close()  # replies would be out of step now
            raise StoreNoReply("redis did not answer in time") from exc

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
