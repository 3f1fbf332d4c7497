"""The `shards` scenario of bench/run.py: ingest and fan-out spread over many chats, on a
standalone Redis and on a 3-master Redis Cluster, with each Redis server's CPU per message.

One chat lives in one slot, so one chat's traffic always lands on one shard; a cluster
divides the work of many chats. Here K chats each get their own members and senders
(chat names are spread over the slots by their hash), two gateways carry them, and each
Redis master's CPU (INFO cpu) and script and publish calls (INFO commandstats) are read
before and after: the per-shard rows show what share of the work each master took and
what one message costs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis as redis_py

from bench.loadgen import CHAT, Result, close_all, connect_many, fanout
from scripts.rediscluster import LocalRedisCluster

if TYPE_CHECKING:
    from bench.run import Bench

__all__ = ["run_shards"]

#: Commands whose calls and time per call the per-shard rows show.
COMMANDS = ("evalsha", "spublish", "publish")


def server_stats(port: int) -> dict[str, float]:
    """CPU seconds (user + sys) and calls and microseconds of COMMANDS so far."""
    r = redis_py.Redis(port=port, decode_responses=True)
    try:
        cpu = r.info("cpu")
        stats = r.info("commandstats")
    finally:
        r.close()
    out = {"cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}
    for name in COMMANDS:
        s = stats.get(f"cmdstat_{name}", {})
        out[f"{name}_calls"] = float(s.get("calls", 0))
        out[f"{name}_usec"] = float(s.get("usec", 0))
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


async def many_chats(
    ports: list[int],
    chats: int,
    members: int,
    senders: int,
    messages: int,
    tag: str,
    mark: Callable[[], None],
    settle: Callable[[float], Awaitable[None]],
) -> Result:
    """`chats` chats of `members` members each (split over the gateways); `senders` of
    each chat send `messages` each; every member counts what arrives. `mark()` is called
    just before the first message and just after the last delivery, so the Redis work
    measured between is the messages' (not the logins' or the connection counting's)."""
    groups: list[tuple[str, list[Any], list[Any]]] = []
    for c in range(chats):
        name = f"{tag}room{c}"
        peers: list[Any] = []
        share = members // len(ports)
        for k, port in enumerate(ports):
            peers += await connect_many(
                "127.0.0.1", port, CHAT, share, prefix=f"{tag}c{c}g{k}u", chat=name, parallel=100
            )
        groups.append((name, peers[:senders], peers))
    await settle(1.5)  # logins' own writes (cursors, presence) settle
    mark()
    results = await asyncio.gather(
        *(fanout(sending, peers, name, messages) for name, sending, peers in groups)
    )
    mark()
    for _, _, peers in groups:
        close_all(peers)
    await settle(0.3)
    seconds = max(r.seconds for r in results)
    return Result(sum(r.expected for r in results), sum(r.delivered for r in results), seconds)


async def run_shards(bench: Bench) -> None:
    """Rows: the same many-chat load on a standalone Redis, on a 3-master cluster (one
    replica each), and on that cluster with --redis-wait-replica; one row per master of
    the cluster with its share of the Redis work (its replica's copy included)."""
    chats, members, senders, messages = (6, 6, 2, 30) if bench.smoke else (48, 10, 2, 1000)
    cluster = LocalRedisCluster(Path(bench.workdir) / "shards-cluster", masters=3, replicas=1)
    cluster.start()
    reference = None
    try:
        for kind, url, ports_of, extra in (
            ("standalone", bench.redis_url, lambda: [bench.redis_port], ()),
            ("cluster", cluster.seed_url, lambda: [m.port for m in cluster.masters()], ()),
            (
                "cluster, WAIT 1",
                cluster.seed_url,
                lambda: [m.port for m in cluster.masters()],
                ("--redis-wait-replica", "1000"),
            ),
        ):
            if kind == "standalone":
                bench.flush_redis()
            else:
                cluster.flushall()
            g1, p1 = bench.gateway("--scrypt-log-n", "4", *extra, redis_url=url)
            g2, p2 = bench.gateway("--scrypt-log-n", "4", *extra, redis_url=url)
            marks: list[dict[int, dict[str, float]]] = []

            def mark(
                ports: Callable[[], list[int]] = ports_of,
                into: list[dict[int, dict[str, float]]] = marks,
            ) -> None:
                into.append({port: server_stats(port) for port in ports()})

            tag = {"standalone": "s", "cluster": "c"}.get(kind, "w")
            r = await many_chats(
                [g1, g2], chats, members, senders, messages, tag, mark, bench.settle
            )
            if reference is None:
                reference = r.rate
            used = {port: delta(marks[0][port], marks[1][port]) for port in marks[0]}
            sent = chats * senders * messages
            total_cpu = sum(u["cpu"] for u in used.values())
            bench.row(
                f"shards {chats} chats x {members}",
                f"gateway, {kind}",
                r,
                accepted_per_s=round(sent / r.seconds) if r.seconds else None,
                vs_standalone=round(r.rate / reference, 2) if reference else None,
                redis_servers=len(used),
                redis_cpu_s=round(total_cpu, 2),
                redis_us_per_message=round(total_cpu * 1e6 / sent, 1),
            )
            if kind == "cluster":
                for port, u in sorted(used.items()):
                    calls = u["evalsha_calls"] or 1
                    bench.row(
                        f"shards {chats} chats x {members}",
                        f"master :{port}",
                        None,
                        cpu_s=round(u["cpu"], 2),
                        share_pct=round(100 * u["cpu"] / total_cpu, 1) if total_cpu else 0,
                        evalsha_calls=int(u["evalsha_calls"]),
                        evalsha_usec_per_call=round(u["evalsha_usec"] / calls, 1),
                        spublish_calls=int(u["spublish_calls"]),
                    )
            bench.procs.stop(p1)
            bench.procs.stop(p2)
    finally:
        cluster.stop()
