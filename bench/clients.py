"""The `clients` scenario of bench/run.py: the store's home-made Redis client parts against
redis-py's own equivalents, on the three hot paths (issue 21).

    python3 bench/clients.py            # every row, its own redis-server and Redis Cluster
    python3 bench/clients.py --smoke    # seconds: tiny numbers, keeps the script working

Each row runs the same work through the home-made part ("own") and through redis-py 8.x
("redis-py"), interleaved (own, redis-py, own, redis-py, ...) `--reps` times each, and
gives the median of each side: operations per second (wall clock: it includes the Redis
servers' time) and CPU seconds of this process (the client) per 10,000 operations, with the
ratio own/redis-py of both. The command rows have a third side, "redis-py, hiredis
packer": redis-py with its asyncio command packer (a Python loop) swapped for
`hiredis.pack_command`, as store/resp.py packs: how much of the gap that one change closes.
The sides run in this one process, on uvloop as the gateway does, against the same
servers: a throwaway redis-server and a 3-master Redis Cluster (no replicas) on free
loopback ports, stopped at the end.

- ingest: turns of the real post batcher (`store.batcher.Batcher`, the real argument
  layout of `post_many`, the real composed scripts); its pipeline is `RespPipeline` (own) or
  a redis-py `pipeline(transaction=False)` behind the same interface (`RedisPyPipeline`,
  what replacing it would be). On the cluster: `ClusterPipeline` against redis-py's
  `RedisCluster` pipeline, the batcher checking senders with `post_gate` first, as the
  store does there. One operation: one message.
- login storm: N token logins at once, each as `RedisStore.token_login` and a web login
  do: EVALSHA token_login, then in one turn the `{g}` records (ZREM, ZADD), the chat's name
  (HGET), a history page (XREVRANGE COUNT 20), the read position (HGET), every command
  through the loop turn's `Coalescer`. One operation: one login.
- fan-out receive: payloads as post_many publishes them (one message record each, the
  per-message overhead's worst case), published by Lua inside Redis (so no publisher's
  CPU is in this process), received and decoded into the store's events
  (`store.payloads.decode`). Own: `PubSubLink` (SUBSCRIBE) and `ShardedLinks` (SSUBSCRIBE
  per master); redis-py: `PubSub.listen` and `RedisCluster.pubsub()`'s
  `ssubscribe` / `get_sharded_message` (one reader task per master). One operation: one
  message decoded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hiredis  # noqa: E402
import redis as redis_py  # noqa: E402
import redis.asyncio as aredis  # noqa: E402
from redis.asyncio.cluster import ClusterNode, RedisCluster  # noqa: E402
from redis.asyncio.connection import Connection as AsyncConnection  # noqa: E402

from scripts.procs import free_port, stop_process, wait_port  # noqa: E402
from scripts.rediscluster import LocalRedisCluster  # noqa: E402
from scripts.redisserver import redis_server_argv  # noqa: E402
from store import keys  # noqa: E402
from store.batcher import Batcher, ChatTarget, Coalescer  # noqa: E402
from store.cluster import ClusterPipeline, Seeds, SlotMap  # noqa: E402
from store.contract import ChatPosts, StoreEvent  # noqa: E402
from store.payloads import decode, message_record, payload  # noqa: E402
from store.pubsub import PubSubLink, ShardedLinks  # noqa: E402
from store.resp import RespPipeline  # noqa: E402
from store.scripts import SCRIPTS  # noqa: E402

__all__ = ["RedisPyPipeline", "Row", "main", "run_clients"]

TTL_MS = 86_400_000
MAX_STORED = 1000
TEXT = "a message of about the length people type in a chat, sixty-odd chars"


class RedisPyPipeline:
    """The store's `Pipeline` interface (`execute(commands)` -> one reply per command,
    error replies as exception instances) over a redis-py client: the pipeline a store
    without RespPipeline/ClusterPipeline would use."""

    def __init__(self, client: Any, gathered: bool = False) -> None:
        self.client = client
        #: redis-py's cluster pipeline refuses a command (see `cluster_pipeline_refuses`):
        #: send each command as its own call, all at once.
        self.gathered = gathered

    async def execute(self, commands: list[tuple[Any, ...]], wait: bool = False) -> list[Any]:
        if self.gathered:
            return await asyncio.gather(
                *(self.client.execute_command(*c) for c in commands), return_exceptions=True
            )
        pipe = self.client.pipeline(transaction=False)
        for c in commands:
            pipe.execute_command(*c)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    def close(self) -> None:
        pass


@dataclass
class Row:
    path: str
    side: str
    ops: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_10k(self) -> float:
        return self.cpu * 10_000 / self.ops if self.ops else 0.0


async def measured(path: str, side: str, ops: int, work: Callable[[], Awaitable[int]]) -> Row:
    """Run `work` (which returns the operations it checked were done) timed, with this
    process's CPU time; fails when fewer than `ops` were done."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    done = await work()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if done != ops:
        raise RuntimeError(f"{path} {side}: {done} of {ops} operations done")
    return Row(path, side, ops, seconds, cpu)


# -- servers ---------------------------------------------------------------------------------


class Servers:
    """A throwaway redis-server and a 3-master Redis Cluster, on free loopback ports."""

    def __init__(self, workdir: Path, cluster: bool) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cluster = (
            LocalRedisCluster(workdir / "cluster", masters=3, replicas=0) if cluster else None
        )

    def start(self) -> None:
        try:
            args = redis_server_argv(
                self.port,
                self.workdir,
                # the subscriber of the fan-out rows may fall behind for a moment
                "--client-output-buffer-limit", "pubsub 0 0 0",
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise SystemExit(str(exc)) from None
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        if self.cluster is not None:
            self.cluster.start()
            for node in self.cluster.masters():
                node.call("CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self.cluster is not None:
            self.cluster.stop()

    def load_scripts(self) -> None:
        ports = [self.port]
        if self.cluster is not None:
            ports += [m.port for m in self.cluster.masters()]
        for port in ports:
            r = redis_py.Redis(port=port)
            try:
                for script in SCRIPTS.values():
                    r.script_load(script.source)
            finally:
                r.close()

    def sync_client(self, cluster: bool) -> Any:
        if cluster:
            assert self.cluster is not None
            node = redis_py.cluster.ClusterNode
            nodes = [node("127.0.0.1", m.port) for m in self.cluster.masters()]  # type: ignore[no-untyped-call]
            return redis_py.RedisCluster(startup_nodes=nodes, decode_responses=True)
        return redis_py.Redis(port=self.port, decode_responses=True)

    def seeds(self) -> Seeds:
        assert self.cluster is not None
        return Seeds.parse(self.cluster.seed_url)


# -- the two sides' clients ----------------------------------------------------------------


#: The sides of a row: the home-made part, redis-py as installed, and redis-py with its
#: asyncio command packer (Python) swapped for hiredis's (C), the one change that would
#: take the most of its cost away (see `hiredis_packing`).
OWN, REDIS_PY, PACKED = "own", "redis-py", "redis-py, hiredis packer"


def _pack_with_hiredis(self: Any, *args: Any) -> list[bytes]:
    head = args[0]
    if isinstance(head, str | bytes) and (" " in head if isinstance(head, str) else b" " in head):
        args = (*head.split(), *args[1:])  # "CLUSTER SLOTS": two words, as redis-py sends
    packed: bytes = hiredis.pack_command(args)
    return [packed]


@contextlib.contextmanager
def hiredis_packing(on: bool) -> Iterator[None]:
    """While on, redis-py's asyncio connections pack commands with hiredis.pack_command
    (as store/resp.py does) instead of `Connection.pack_command`'s Python loop. A class
    attribute swapped for the run: RedisCluster takes no connection_class of its own."""
    if not on:
        yield
        return
    saved = AsyncConnection.pack_command
    AsyncConnection.pack_command = _pack_with_hiredis  # type: ignore[method-assign]
    try:
        yield
    finally:
        AsyncConnection.pack_command = saved  # type: ignore[method-assign]


class Side:
    """One side's pipeline for the store's hot path, on one Redis (standalone or cluster)."""

    def __init__(self, servers: Servers, cluster: bool, kind: str) -> None:
        self.servers = servers
        self.cluster = cluster
        self.kind = kind
        self.own = kind == OWN
        self.pipeline: Any = None
        self.client: Any = None

    async def open(self) -> None:
        if self.own:
            if self.cluster:
                slots = SlotMap(self.servers.seeds(), 5.0)
                await slots.refresh()
                self.pipeline = ClusterPipeline(slots, 30.0)
            else:
                self.pipeline = RespPipeline(self.servers.url, 30.0)
        else:
            # as the store opens redis-py: RESP2, replies decoded, hiredis parsing
            if self.cluster:
                assert self.servers.cluster is not None
                self.client = RedisCluster(
                    startup_nodes=[ClusterNode("127.0.0.1", m.port)
                                   for m in self.servers.cluster.masters()],
                    protocol=2, decode_responses=True, socket_timeout=30.0,
                )  # fmt: skip
                await self.client.initialize()
                gathered = await cluster_pipeline_refuses(self.client)
                self.pipeline = RedisPyPipeline(self.client, gathered=gathered)
            else:
                self.client = aredis.Redis.from_url(
                    self.servers.url, protocol=2, decode_responses=True, socket_timeout=30.0
                )
                self.pipeline = RedisPyPipeline(self.client)
        probe: list[tuple[Any, ...]] = [("GET", "x")] if self.cluster else [("PING",)]
        await self.pipeline.execute(probe)

    async def close(self) -> None:
        self.pipeline.close()
        if self.client is not None:
            await self.client.aclose()


#: Whether redis-py's cluster pipeline refused EVALSHA (found once, reported in the rows).
REFUSED: dict[str, str] = {}


async def cluster_pipeline_refuses(client: Any) -> bool:
    """Whether redis-py's cluster pipeline refuses a script call sent through
    `execute_command` (its `evalsha` method is blocked: PIPELINE_BLOCKED_COMMANDS)."""
    sha = SCRIPTS["give_back"].sha
    pipe = client.pipeline(transaction=False)
    try:
        pipe.execute_command("EVALSHA", sha, 1, "bench:{x}:probe")
        await pipe.execute(raise_on_error=True)
    except Exception as exc:
        REFUSED["cluster pipeline EVALSHA"] = f"{type(exc).__name__}: {exc}"
        return True
    try:
        client.pipeline(transaction=False).evalsha(sha, 1, "bench:{x}:probe")
    except Exception as exc:
        REFUSED["cluster pipeline .evalsha()"] = f"{type(exc).__name__}: {exc}"
    return False


# -- ingest ----------------------------------------------------------------------------------


def chat_names(n: int, tag: str) -> list[str]:
    return [f"{tag}room{i}" for i in range(n)]


def prepare_ingest(servers: Servers, cluster: bool, chats: list[str], senders: int) -> None:
    r = servers.sync_client(cluster)
    try:
        for chat in chats:
            r.delete(keys.stream(chat))
            r.sadd(keys.members(chat), *[f"{chat}u{k}" for k in range(senders)])
            r.hset(keys.chat(chat), "name", chat)
    finally:
        r.close()


def target(chat: str, cluster: bool) -> ChatTarget:
    """As RedisStore.post_chat builds it (rate 0: the benchmark gateways' CHAT_RATE)."""
    return ChatTarget(
        chat,
        (keys.stream(chat), keys.members(chat)),
        (
            chat,
            TTL_MS,
            0,
            10,
            keys.chat_conv(chat),
            keys.chat_channel(chat),
            MAX_STORED,
            "SPUBLISH" if cluster else "PUBLISH",
        ),
    )


def _ok(status: str, value: Any) -> bool:
    return status == "ok"


async def ingest(side: Side, chats: list[str], senders: int, turns: int) -> int:
    """`turns` loop turns, each one message from every sender of every chat; returns the
    messages stored."""

    async def reload() -> None:
        raise RuntimeError("NOSCRIPT: scripts are loaded before the run")

    batcher = Batcher(side.pipeline, SCRIPTS["post_many"], reload)
    if side.cluster:
        batcher.use(side.pipeline, SCRIPTS["post_gate"], 0, 10)
    targets = [target(c, side.cluster) for c in chats]
    users = [[(f"{c}u{k}", f"{c}u{k}") for k in range(senders)] for c in chats]
    stored = 0
    for _ in range(turns):
        futures = [
            batcher.chat(t, user, name, [TEXT], _ok)
            for t, members in zip(targets, users, strict=True)
            for user, name in members
        ]
        for results in await asyncio.gather(*futures):
            stored += sum(results)
    return stored


# -- login storm -----------------------------------------------------------------------------

TOKEN = "f" * 64
ADDRESS = "127.0.0.1"


def prepare_logins(servers: Servers, cluster: bool, users: int, chat: str) -> None:
    r = servers.sync_client(cluster)
    try:
        far = int(time.time() * 1000) + 86_400_000
        r.hset(keys.chat(chat), "name", chat)
        r.delete(keys.stream(chat))
        for i in range(40):
            r.xadd(keys.stream(chat), {"n": f"u{i}", "t": TEXT})
        pipe = r.pipeline(transaction=False)
        for i in range(users):
            u = f"lu{i}"
            pipe.hset(keys.user(u), "name", u)
            pipe.hset(keys.tokens(u), TOKEN, far)
            pipe.sadd(keys.user_chats(u), chat)
            if i % 500 == 499:
                pipe.execute()
        pipe.execute()
    finally:
        r.close()


def token_login_command(user: str) -> tuple[Any, ...]:
    """As RedisStore.token_login builds it (gate's, token's, then enter.lua's keys)."""
    ks = [
        keys.login_fails(user, ADDRESS),
        keys.nick_fails(user),
        keys.known_addresses(user),
        keys.tokens(user),
        keys.user(user),
        keys.user_addresses(user),
        keys.user_chats(user),
        keys.user_peers(user),
        keys.cursors(user),
        keys.ban(user),
    ]
    args = [ADDRESS, 300, 10, 50, 86_400_000, TOKEN, 10, 100, 86_400]
    return ("EVALSHA", SCRIPTS["token_login"].sha, len(ks), *ks, *args)


async def login_storm(side: Side, users: int, chat: str) -> int:
    """`users` token logins at once; returns the logins that got their state and page."""
    turn = Coalescer(lambda: side.pipeline)
    conv = keys.chat_conv(chat)

    async def login(u: str) -> int:
        ((verdict, name, chats, *_),) = await turn.run([token_login_command(u)])
        if verdict != "ok" or name != u:
            return 0
        replies = await asyncio.gather(
            turn.run(
                [
                    ("ZREM", keys.address_fails(ADDRESS), u),
                    ("ZADD", keys.seen(), int(time.time() * 1000), u),
                ]
            ),
            turn.run([("HGET", keys.chat(c), "name") for c in chats]),
            turn.run([("XREVRANGE", keys.stream(chat), "+", "-", "COUNT", 20)]),
            turn.run([("HGET", keys.cursors(u), conv)]),
        )
        names, page = replies[1], replies[2][0]
        return int(names == [chat] and len(page) == 20)

    return sum(await asyncio.gather(*(login(f"lu{i}") for i in range(users))))


# -- fan-out receive -------------------------------------------------------------------------


class Counter:
    """Messages decoded so far; wakes the publisher when the subscriber caught up."""

    def __init__(self) -> None:
        self.messages = 0
        self.want = 0
        self.caught_up = asyncio.Event()

    def events(self, events: list[StoreEvent]) -> None:
        for e in events:
            if isinstance(e, ChatPosts):
                self.messages += len(e.messages)
        if self.messages >= self.want:
            self.caught_up.set()

    async def until(self, n: int, timeout: float = 60.0) -> None:
        self.want = n
        if self.messages < n:
            self.caught_up.clear()
            await asyncio.wait_for(self.caught_up.wait(), timeout)


Stop = Callable[[], Awaitable[None]]
PUBLISH_LUA = "for i = 1, tonumber(ARGV[1]) do redis.call('{cmd}', KEYS[1], ARGV[2]) end"


async def subscribe(side: Side, chats: list[str], counter: Counter) -> Stop:
    """Subscribe `side`'s receiver to the chats' channels, every message decoded into
    `counter`; returns what stops it."""
    channels = [keys.chat_channel(c) for c in chats]
    if side.own:

        async def gap(_: float) -> None:
            return None

        if side.cluster:
            slots = SlotMap(side.servers.seeds(), 5.0)
            links = ShardedLinks(slots, counter.events, gap, lambda _: None)
            await links.start()
            await links.add(chats=chats)
            return links.close
        link = PubSubLink(side.servers.url, counter.events, gap, lambda _: None)
        await link.start()
        await link.add(chats=chats)
        return link.close
    client: Any
    if side.cluster:
        assert side.servers.cluster is not None
        client = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", m.port)
                           for m in side.servers.cluster.masters()],
            protocol=2,
        )  # fmt: skip
        await client.initialize()
        ps = client.pubsub()
        await ps.ssubscribe(*channels)
        nodes = {client.get_node_from_key(ch).name: client.get_node_from_key(ch) for ch in channels}

        async def read_node(node: Any) -> None:
            while True:
                m = await ps.get_sharded_message(
                    ignore_subscribe_messages=True, timeout=None, target_node=node
                )
                if m is not None and m["type"] in ("smessage", b"smessage"):
                    counter.events(decode(m["channel"], m["data"]))

        readers = [asyncio.create_task(read_node(n)) for n in nodes.values()]
    else:
        client = aredis.Redis.from_url(side.servers.url, protocol=2)
        ps = client.pubsub(ignore_subscribe_messages=True)
        await ps.subscribe(*channels)

        async def read() -> None:  # listen(): some 5% less CPU than a get_message loop
            async for m in ps.listen():
                if m["type"] in ("message", b"message"):
                    counter.events(decode(m["channel"], m["data"]))

        readers = [asyncio.create_task(read())]

    async def stop() -> None:
        for t in readers:
            t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await ps.aclose()
        await client.aclose()

    return stop


async def fanout(
    side: Side, chats: list[str], total: int, chunk: int, publisher: Any, counter: Counter
) -> int:
    """`total` payloads of one message each over `chats` (a chunk each at a time, at most
    one chunk ahead of the subscriber); returns the messages decoded."""
    channels = [keys.chat_channel(c) for c in chats]
    script = PUBLISH_LUA.format(cmd="SPUBLISH" if side.cluster else "PUBLISH")

    def data(chat: str) -> str:
        return payload([message_record("1700000000000-0", keys.chat_conv(chat), "sender", chat,
                                       TEXT)])  # fmt: skip

    publish = [(ch, data(c)) for ch, c in zip(channels, chats, strict=True)]
    counter.messages = 0
    sent = 0
    while sent < total:
        n = min(chunk, (total - sent) // len(channels))
        await publisher.execute([("EVAL", script, 1, ch, n, d) for ch, d in publish])
        sent += n * len(channels)
        await counter.until(sent - chunk * len(channels))
    await counter.until(sent)
    return counter.messages


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Sizes:
    ingest_chats: int
    ingest_senders: int
    ingest_turns: int
    logins: int
    fanout_messages: int
    fanout_chunk: int


def sizes(smoke: bool) -> Sizes:
    if smoke:
        return Sizes(4, 10, 10, 100, 3000, 100)
    return Sizes(8, 25, 300, 3000, 150_000, 500)


async def interleaved(
    reps: int, kinds: tuple[str, ...], make: Callable[[str], Awaitable[Row]]
) -> list[Row]:
    """own, redis-py, [redis-py packed,] own, redis-py, ... each `reps` times."""
    rows: list[Row] = []
    for _ in range(reps):
        for kind in kinds:
            with hiredis_packing(kind == PACKED):
                rows.append(await make(kind))
    return rows


async def run_clients(
    smoke: bool,
    reps: int,
    workdir: Path,
    cluster: bool = True,
    emit: Callable[[dict[str, Any]], None] = print,
) -> list[dict[str, Any]]:
    """Every row; `emit` gets each summary row as it is made."""
    s = sizes(smoke)
    servers = Servers(workdir, cluster)
    servers.start()
    out: list[dict[str, Any]] = []
    try:
        servers.load_scripts()
        for on_cluster in [False, True] if cluster else [False]:
            out += await _rows(servers, s, reps, on_cluster, emit)
    finally:
        servers.stop()
    return out


async def _rows(
    servers: Servers,
    s: Sizes,
    reps: int,
    on_cluster: bool,
    emit: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """The three rows (each side's medians) on one Redis, standalone or cluster."""
    where = "cluster" if on_cluster else "standalone"
    chats = chat_names(s.ingest_chats, "i")
    prepare_ingest(servers, on_cluster, chats, s.ingest_senders)
    prepare_logins(servers, on_cluster, s.logins, "lobby")
    per_turn = s.ingest_chats * s.ingest_senders

    async def one_ingest(kind: str) -> Row:
        side = Side(servers, on_cluster, kind)
        await side.open()
        try:
            await ingest(side, chats, s.ingest_senders, 2)  # warm up
            return await measured(
                f"ingest {where}", side_name(side), per_turn * s.ingest_turns,
                lambda: ingest(side, chats, s.ingest_senders, s.ingest_turns),
            )  # fmt: skip
        finally:
            await side.close()

    async def one_login(kind: str) -> Row:
        side = Side(servers, on_cluster, kind)
        await side.open()
        try:
            await login_storm(side, 20, "lobby")  # warm up
            return await measured(
                f"login storm {where}", side_name(side), s.logins,
                lambda: login_storm(side, s.logins, "lobby"),
            )  # fmt: skip
        finally:
            await side.close()

    async def one_fanout(kind: str) -> Row:
        side = Side(servers, on_cluster, kind)
        publisher = Side(servers, on_cluster, OWN)
        await publisher.open()
        fchats = chat_names(3, "f")
        counter = Counter()
        stop = await subscribe(side, fchats, counter)
        try:
            return await measured(
                f"fan-out receive {where}", side_name(side, pubsub=True),
                s.fanout_messages // 3 * 3,
                lambda: fanout(side, fchats, s.fanout_messages, s.fanout_chunk,
                               publisher.pipeline, counter),
            )  # fmt: skip
        finally:
            await stop()
            await publisher.close()

    out: list[dict[str, Any]] = []
    commands = (OWN, REDIS_PY, PACKED)
    for label, unit, kinds, make in (
        (f"ingest {where}", f"messages, {per_turn} a turn in {s.ingest_chats} chats",
         commands, one_ingest),
        (f"login storm {where}", f"token logins, {s.logins} at once", commands, one_login),
        (f"fan-out receive {where}", "messages, 1 per payload, 3 chats", (OWN, REDIS_PY),
         one_fanout),
    ):  # fmt: skip
        rows = await interleaved(reps, kinds, make)
        for row in summarise(label, unit, rows):
            out.append(row)
            emit(row)
    return out


def side_name(side: Side, pubsub: bool = False) -> str:
    if pubsub:
        if side.own:
            return "own ShardedLinks" if side.cluster else "own PubSubLink"
        return "redis-py ClusterPubSub" if side.cluster else "redis-py PubSub"
    if side.own:
        return "own ClusterPipeline" if side.cluster else "own RespPipeline"
    packed = " + hiredis packer" if side.kind == PACKED else ""
    if side.cluster:
        gathered = isinstance(side.pipeline, RedisPyPipeline) and side.pipeline.gathered
        return "redis-py RedisCluster " + ("calls gathered" if gathered else "pipeline") + packed
    return "redis-py pipeline" + packed


def summarise(label: str, unit: str, rows: list[Row]) -> list[dict[str, Any]]:
    """One row per side: medians, and on the own side the ratios own/redis-py."""
    by_side: dict[str, list[Row]] = {}
    for r in rows:
        by_side.setdefault(r.side, []).append(r)
    med = {
        side: (statistics.median(r.rate for r in rs), statistics.median(r.cpu_per_10k for r in rs))
        for side, rs in by_side.items()
    }
    own = next(s for s in med if s.startswith("own"))
    other = next(s for s in med if s.startswith("redis-py") and "hiredis packer" not in s)
    out = []
    for side, (rate, cpu) in med.items():
        row: dict[str, Any] = {
            "scenario": f"clients: {label}",
            "server": side,
            "unit": unit,
            "runs": len(by_side[side]),
            "ops_per_s": round(rate),
            "cpu_s_per_10k": round(cpu, 4),
            "ops_per_s_runs": [round(r.rate) for r in by_side[side]],
            "cpu_s_per_10k_runs": [round(r.cpu_per_10k, 4) for r in by_side[side]],
        }
        if side == own:
            row["rate_own_vs_redispy"] = round(rate / med[other][0], 2)
            row["cpu_own_vs_redispy"] = round(cpu / med[other][1], 2)
        elif "hiredis packer" in side:
            row["rate_own_vs_this"] = round(med[own][0] / rate, 2)
            row["cpu_own_vs_this"] = round(med[own][1] / cpu, 2)
        out.append(row)
    if REFUSED and "cluster" in label and "ingest" in label:
        out[1]["note"] = "; ".join(f"{k} refused ({v.split(':')[0]})" for k, v in REFUSED.items())
        if "cluster pipeline EVALSHA" not in REFUSED:
            out[1]["note"] += "; EVALSHA through execute_command is taken: measured that way"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, seconds")
    parser.add_argument(
        "--reps", type=int, help="runs of each side per row (default 5, with --smoke 1)"
    )
    parser.add_argument("--no-cluster", action="store_true", help="standalone rows only")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    reps = args.reps or (1 if args.smoke else 5)
    try:  # the gateway's event loop
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="chat-clients-") as tmp:
        rows = asyncio.run(
            run_clients(
                args.smoke,
                reps,
                Path(tmp),
                cluster=not args.no_cluster,
                emit=lambda row: print(json.dumps(row), flush=True),
            )
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
