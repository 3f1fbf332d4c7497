"""Redis Cluster plumbing: seed URLs, the slot map, and the hot path's routed pipeline.

A gateway may be pointed at any node of a cluster (or at a comma-separated list of seeds);
it asks which nodes serve which of the 16384 slots and sends each command to the master
of its key's slot. A node answers `-MOVED` when a slot has moved for good (resharding, a
failover), `-ASK` while one is being migrated, and `-TRYAGAIN`/`-CLUSTERDOWN` while the
cluster cannot serve it yet: none of those carried the command out, so it is sent again
(after refreshing the map, or with ASKING to the named node). A master that stopped
answering is waited for until a replica takes its slots over, for at most FAILOVER_WAIT.

redis-py's `RedisCluster` does the same for the store's ordinary calls; the post batcher
and the pub/sub links keep their own RESP2 connections (see store/resp.py for why), so
they route through `SlotMap` here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
from redis.crc import key_slot

from store.contract import StoreNoReply, StoreUnavailable
from store.replicas import ReplicaWatch
from store.resp import RespPipeline, not_replicated

__all__ = [
    "FAILOVER_WAIT",
    "ClusterPipeline",
    "Seeds",
    "SlotMap",
    "command_key",
    "slot_of",
]

log = logging.getLogger("chat.cluster")

Addr = tuple[str, int]

#: Seconds a command waits for a failed master's slots to be served again (a replica's
#: promotion takes the cluster's node timeout plus an election, a few seconds).
FAILOVER_WAIT = 15.0
#: First pause and cap between attempts while the cluster cannot serve a slot, seconds.
RETRY_FIRST, RETRY_MAX = 0.05, 0.5
SLOTS = 16384


@dataclass(frozen=True, slots=True)
class Seeds:
    """A Redis URL that may name several nodes: `redis://[user:pw@]h1:p1,h2:p2[/db][?q]`."""

    scheme: str
    userinfo: str
    nodes: tuple[Addr, ...]
    path: str
    query: str

    @classmethod
    def parse(cls, url: str) -> Seeds:
        parts = urlsplit(url)
        if parts.scheme == "unix":  # one server on a socket: its URL is kept whole
            return cls(parts.scheme, "", (("", 0),), url, "")
        userinfo, _, hosts = parts.netloc.rpartition("@")
        nodes: list[Addr] = []
        for item in hosts.split(","):
            item = item.strip()
            if item.startswith("["):  # an IPv6 address: [::1] or [::1]:6380
                host, _, rest = item[1:].partition("]")
                port = rest[1:] if rest.startswith(":") else "6379"
            else:
                host, _, port = item.rpartition(":")
                if not host:  # no port given
                    host, port = port, "6379"
            nodes.append((host, int(port)))
        return cls(parts.scheme, userinfo, tuple(nodes), parts.path, parts.query)

    @property
    def several(self) -> bool:
        return len(self.nodes) > 1

    def url(self, addr: Addr) -> str:
        """The URL of one node, with this URL's credentials, TLS and options."""
        if self.scheme == "unix":
            return self.path
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        netloc = f"{self.userinfo}@{host}:{addr[1]}" if self.userinfo else f"{host}:{addr[1]}"
        path = "" if self.path in ("", "/", "/0") else self.path  # a cluster has db 0 only
        return urlunsplit((self.scheme, netloc, path, self.query, ""))


def slot_of(key: str | bytes) -> int:
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def command_key(command: Sequence[Any]) -> Any:
    """The key a command is routed by: EVALSHA/EVAL's first key, else its first argument."""
    name = str(command[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        return command[3] if int(command[2]) > 0 else ""
    return command[1] if len(command) > 1 else ""


class SlotMap:
    """Which master serves each slot, as the cluster last said (CLUSTER SLOTS)."""

    def __init__(self, seeds: Seeds, timeout: float) -> None:
        self.seeds = seeds
        self.timeout = timeout
        self.owner: list[Addr | None] = [None] * SLOTS
        self.known: set[Addr] = set(seeds.nodes)
        self._refreshing: asyncio.Future[None] | None = None
        self.version = 0  # bumped on every refresh that changed something

    def node(self, slot: int) -> Addr | None:
        return self.owner[slot]

    def describe(self, node: str) -> str:
        """The slots `node` ("host:port") serves, as ranges: "0-5460" or "none"."""
        host, _, port = node.rpartition(":")
        addr = (host, int(port))
        ranges: list[str] = []
        start = None
        for slot, owner in enumerate([*self.owner, None]):
            if owner == addr and start is None:
                start = slot
            elif owner != addr and start is not None:
                ranges.append(f"{start}-{slot - 1}" if slot - 1 > start else str(start))
                start = None
        return ",".join(ranges) or "none"

    def masters(self) -> set[Addr]:
        return {a for a in self.owner if a is not None}

    async def refresh(self) -> None:
        """Ask any reachable node for the slot map; concurrent callers share one asking."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        fut = self._refreshing = asyncio.get_running_loop().create_future()
        try:
            await self._refresh()
            fut.set_result(None)
        except BaseException as exc:
            # Others waiting on this refresh get an error they handle, never this task's
            # cancellation (a post batch waiting on it would be left unresolved).
            shared = exc if isinstance(exc, Exception) else StoreUnavailable("refresh stopped")
            fut.set_exception(shared)
            fut.exception()  # retrieved: waiters see it through shield
            raise
        finally:
            self._refreshing = None

    async def _refresh(self) -> None:
        nodes = list(self.known)
        random.shuffle(nodes)
        nodes.sort(key=lambda a: a in self.seeds.nodes)  # learned nodes first, seeds last
        last: Exception | None = None
        for addr in nodes:
            pipe = RespPipeline(self.seeds.url(addr), self.timeout)
            try:
                (reply,) = await pipe.execute([("CLUSTER", "SLOTS")])
            except StoreUnavailable as exc:
                last = exc
                continue
            finally:
                pipe.close()
            if isinstance(reply, hiredis.ReplyError) or not reply:
                last = StoreUnavailable(f"CLUSTER SLOTS at {addr}: {reply}")
                continue
            owner: list[Addr | None] = [None] * SLOTS
            for start, end, master, *replicas in reply:
                host = master[0] or addr[0]
                a = (str(host), int(master[1]))
                self.known.add(a)
                for r in replicas:
                    self.known.add((str(r[0] or addr[0]), int(r[1])))
                for s in range(int(start), int(end) + 1):
                    owner[s] = a
            if owner != self.owner:
                self.owner = owner
                self.version += 1
            return
        raise StoreUnavailable(f"no cluster node answered CLUSTER SLOTS: {last}")


class ClusterPipeline:
    """`RespPipeline`'s interface on a cluster: each command goes to its slot's master,
    the nodes' batches in parallel, replies back in order.

    Unlike `RespPipeline.execute`, a failure of one node does not fail the batch: the
    commands sent there and left unanswered come back as `StoreNoReply` instances in
    their places (Redis may have carried them out), and commands that could not be sent
    within FAILOVER_WAIT as `StoreUnavailable` instances. With `wait_replica_ms`, each
    node's batch ends with `WAIT 1 <ms>`; a batch no replica acknowledged in time comes
    back as `StoreNoReply` (stored on the master, but a failover could still lose it)."""

    def __init__(self, slots: SlotMap, timeout: float, wait_replica_ms: int = 0) -> None:
        self.slots = slots
        self.timeout = timeout
        self.wait_replica_ms = wait_replica_ms
        self._nodes: dict[Addr, RespPipeline] = {}
        #: Stops the waits on a master with no replica (store/replicas.py).
        self.watch = (
            ReplicaWatch(wait_replica_ms, self._ask, self.slots.describe, self._serving)
            if wait_replica_ms
            else None
        )

    async def _ask(self, node: str, command: tuple[Any, ...]) -> Any:
        (reply,) = await self._node(_addr(node)).execute([command])
        return reply

    def _serving(self, node: str) -> bool:
        return _addr(node) in self.slots.masters()

    def _node(self, addr: Addr) -> RespPipeline:
        pipe = self._nodes.get(addr)
        if pipe is None:
            pipe = self._nodes[addr] = RespPipeline(self.slots.seeds.url(addr), self.timeout)
        return pipe

    async def execute(self, commands: list[tuple[Any, ...]], wait: bool = False) -> list[Any]:
        """One reply per command, in order (see the class). `wait`: end each node's batch
        with the replica WAIT, if the pipeline has one (posts ask; checks do not)."""
        loop = asyncio.get_running_loop()
        replies: list[Any] = [None] * len(commands)
        slots = [slot_of(command_key(c)) for c in commands]
        todo = list(range(len(commands)))
        asking: dict[int, Addr] = {}
        deadline = loop.time() + FAILOVER_WAIT
        delay = RETRY_FIRST
        while todo:
            groups: dict[Addr, list[int]] = {}
            unserved: list[int] = []
            for i in todo:
                addr = asking.get(i) or self.slots.node(slots[i])
                if addr is None:
                    unserved.append(i)
                else:
                    groups.setdefault(addr, []).append(i)
            results = await asyncio.gather(
                *(self._send(addr, idxs, commands, asking, wait) for addr, idxs in groups.items())
            )
            retry, refresh, progress = unserved, bool(unserved), False
            for (_addr, idxs), result in zip(groups.items(), results, strict=True):
                if isinstance(result, StoreNoReply):
                    for i in idxs:
                        replies[i] = result
                    progress = True
                    continue
                if isinstance(result, StoreUnavailable):  # not sent: the node is down
                    retry += idxs
                    refresh = True
                    for i in idxs:  # an -ASK target that is down: ask the map again
                        asking.pop(i, None)
                    continue
                for i, reply in zip(idxs, result, strict=True):
                    asking.pop(i, None)
                    verdict = _redirect(reply)
                    if isinstance(reply, StoreNoReply):  # carried out, not replicated
                        verdict = None
                    if verdict is None:
                        replies[i] = reply
                        progress = True
                    elif verdict == "moved":
                        refresh = True
                        retry.append(i)
                    elif isinstance(verdict, tuple):
                        asking[i] = verdict
                        retry.append(i)
                        progress = True
                    else:  # tryagain, clusterdown
                        retry.append(i)
            if not retry:
                break
            if loop.time() > deadline:
                gone = StoreUnavailable("the cluster did not serve these slots in time")
                for i in retry:
                    replies[i] = gone
                break
            if refresh:
                try:
                    await self.slots.refresh()
                except StoreUnavailable as exc:
                    log.warning("event=slot_map_refresh_failed error=%s", exc)
            if not progress or refresh:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            todo = sorted(retry)
        return replies

    async def _send(
        self,
        addr: Addr,
        idxs: list[int],
        commands: list[tuple[Any, ...]],
        asking: dict[int, Addr],
        wait: bool,
    ) -> list[Any] | StoreUnavailable:
        batch: list[tuple[Any, ...]] = []
        for i in idxs:
            if i in asking:
                batch.append(("ASKING",))
            batch.append(commands[i])
        node = f"{addr[0]}:{addr[1]}"
        wait = wait and self.watch is not None and self.watch.waits(node)
        if wait:
            batch.append(("WAIT", 1, self.wait_replica_ms))
        try:
            out = await self._node(addr).execute(batch)
        except StoreUnavailable as exc:  # StoreNoReply included
            return exc
        unreplicated = False
        if wait:
            acked = out.pop()
            unreplicated = not isinstance(acked, int) or acked < 1
            if unreplicated and self.watch is not None:  # stored: no replica to wait for?
                unreplicated = not await self.watch.has_no_replica(node)
        replies: list[Any] = []
        at = 0
        for i in idxs:
            if i in asking:
                at += 1  # ASKING's +OK
            replies.append(out[at])
            at += 1
        return not_replicated(replies) if unreplicated else replies

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
        for pipe in self._nodes.values():
            pipe.close()


def _addr(node: str) -> Addr:
    host, _, port = node.rpartition(":")
    return (host, int(port))


def _redirect(reply: Any) -> str | Addr | None:
    """None for a reply that stands; 'moved', 'retry', or the node an -ASK names."""
    if not isinstance(reply, hiredis.ReplyError):
        return None
    text = str(reply)
    if text.startswith("MOVED "):
        return "moved"
    if text.startswith("ASK "):
        host, _, port = text.split(" ")[2].rpartition(":")
        return (host, int(port))
    if text.startswith(("TRYAGAIN", "CLUSTERDOWN")):
        return "retry"
    return None
